"""Notice when training throughput collapses, and say why it probably did.

On a shared machine another CPU-bound process can halve a run's speed or worse (thread
oversubscription). :class:`ThroughputWatch` keeps the recent step rate (over the last few
steps) against the best recent rate seen so far; when the recent rate falls under
``threshold`` of the best, :meth:`note` returns a short remark for the progress line, with
the load average beside the CPU count when the machine is busy.
"""

from __future__ import annotations

import time
from collections import deque

from prefopt.modeling.threads import available_cpus, current_load

WINDOW = 5  # steps the recent rate is measured over
THRESHOLD = 0.5  # recent/best below this is a collapse


class ThroughputWatch:
    def __init__(
        self, window: int = WINDOW, threshold: float = THRESHOLD, clock: object = None
    ) -> None:
        self.window = window
        self.threshold = threshold
        self._clock = clock or time.perf_counter
        self._marks: deque[tuple[float, int]] = deque(maxlen=window + 1)
        self.best = 0.0

    def step(self, global_step: int) -> None:
        """Record that ``global_step`` just ended."""
        self._marks.append((self._clock(), global_step))  # type: ignore[operator]
        rate = self.recent()
        if rate is not None and len(self._marks) == self._marks.maxlen:
            self.best = max(self.best, rate)

    def recent(self) -> float | None:
        """Steps per second over the window, ``None`` until two steps are recorded."""
        if len(self._marks) < 2:
            return None
        (t0, s0), (t1, s1) = self._marks[0], self._marks[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else None

    def note(self) -> str:
        """``""`` while throughput holds; else e.g. ``slowed to 0.3× (load 3.9 on 2 CPUs)``."""
        rate = self.recent()
        if rate is None or self.best <= 0 or rate >= self.threshold * self.best:
            return ""
        share = rate / self.best
        load, cpus = current_load(), available_cpus()
        why = f" (load {load:.1f} on {cpus} CPUs)" if load > cpus else ""
        return f"slowed to {share:.1f}× of its best{why}"
