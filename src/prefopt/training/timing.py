"""Where a run's wall time goes: startup (interpreter, imports, config), tokenization, model
loading, the reference pass, the training loop and saving.

Users time the whole command, not the training loop. :class:`RunTimer` measures each phase of
:func:`prefopt.training.run.train`; its summary ends every ``prefopt train`` (one line) and the
closing ``{"summary": ...}`` line of ``metrics.jsonl`` (``timing``, seconds per phase).
"""

from __future__ import annotations

import os
import time

#: Phases in the order a run goes through them (a run may skip some: no reference, no eval).
PHASES = ("startup", "tokenize", "model", "reference", "train", "evaluate", "save")


def process_age() -> float | None:
    """Seconds since this process started (interpreter start, imports included), or ``None``
    where the start time cannot be read."""
    try:
        import psutil

        return max(0.0, time.time() - psutil.Process(os.getpid()).create_time())
    except Exception:  # psutil missing or refused: the summary starts at train() instead
        return None


#: Whether a run of this process has booked the process's start-up already (see RunTimer).
_startup_booked = False


class RunTimer:
    """Wall time per phase, lap by lap: :meth:`lap` books the time since the previous lap (or
    since the timer was made) to a phase. ``startup`` is the process's age when the process's
    first timer is made: the jobs of a sweep after the first run in the same process, and
    their start-up was the previous job (it was booked to them before)."""

    def __init__(self) -> None:
        global _startup_booked
        self._made = self._last = time.perf_counter()
        startup = None if _startup_booked else process_age()
        _startup_booked = True
        self._startup = startup or 0.0
        self.seconds: dict[str, float] = {"startup": startup} if startup is not None else {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now

    def rebook(self, seconds: float, source: str, target: str) -> None:
        """Move ``seconds`` booked to phase ``source`` to phase ``target`` (the reference pass
        that runs inside the Trainer's ``train()`` is the reference's time, not training's)."""
        if seconds <= 0:
            return
        moved = min(seconds, self.seconds.get(source, 0.0))
        self.seconds[source] = self.seconds.get(source, 0.0) - moved
        self.seconds[target] = self.seconds.get(target, 0.0) + moved

    def total(self) -> float:
        return self._startup + time.perf_counter() - self._made

    def summary(self) -> dict[str, float]:
        """Seconds per phase (in :data:`PHASES` order, then any other), ``other`` for what no
        phase covered, and ``total``; rounded to milliseconds."""
        ordered = [name for name in PHASES if name in self.seconds]
        ordered += [name for name in self.seconds if name not in PHASES]
        result = {name: round(self.seconds[name], 3) for name in ordered}
        total = self.total()
        result["other"] = round(max(0.0, total - sum(self.seconds.values())), 3)
        result["total"] = round(total, 3)
        return result


def format_timing(summary: dict[str, float]) -> str:
    """``startup 3.1 s · tokenize 0.4 s · ... · total 37.5 s`` (phases under 0.05 s left out)."""
    parts = [
        f"{name} {seconds:.1f} s"
        for name, seconds in summary.items()
        if name == "total" or seconds >= 0.05
    ]
    return " · ".join(parts)
