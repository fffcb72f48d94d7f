"""Trainer callbacks and progress: ``metrics.jsonl`` on disk, a rich (or plain) display of training
and evaluation, and :class:`TaskProgress` for counted steps such as tokenization."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from transformers import TrainerCallback

T = TypeVar("T")
clock = time.perf_counter  # the progress displays' clock (tests replace it)

METRICS_FILE = "metrics.jsonl"


class MetricsJsonlCallback(TrainerCallback):
    """Appends every logged step to ``<output_dir>/metrics.jsonl`` (one JSON object a line).

    Step lines are ``{"step": N, "loss": ..., ...}``; the Trainer's closing totals (runtime,
    samples per second, mean training loss) go in one last line ``{"summary": {...}}``, so
    no step appears twice. A line logged after the summary (the closing evaluation) goes in
    before it, so the summary stays the file's one last line.

    A fresh run starts the file anew; a resumed run keeps the lines up to the checkpoint's step
    and appends after them, so the file always describes one consistent history.
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / METRICS_FILE
        self._summary_written = False  # the file's last line is the Trainer's summary

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        if state.global_step > 0 and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line) if line.strip() else {}
                if "step" in record and record["step"] <= state.global_step:
                    kept.append(line)  # an earlier run's summary line is dropped
        self.path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        self._summary_written = False

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        values = {k: _plain(v) for k, v in logs.items()}
        if "train_runtime" in values:  # the Trainer's closing totals, not another step
            record: dict[str, Any] = {"summary": {"global_step": state.global_step, **values}}
        else:
            record = {"step": state.global_step, **values}
            lines = self._lines_ending_in_summary() if self._summary_written else []
            if lines:  # logged after the totals (the closing evaluation): in before them
                lines.insert(-1, json.dumps(record))
                self._replace(lines)
                return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self._summary_written = "summary" in record

    def write_event(self, record: dict[str, Any]) -> None:
        """Add an event line (a health finding): appended, or in before the closing summary
        when the summary is written already."""
        lines = self._lines_ending_in_summary() if self._summary_written else []
        if lines:
            lines.insert(-1, json.dumps(record))
            self._replace(lines)
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def _lines_ending_in_summary(self) -> list[str]:
        """The file's lines when its last one is the summary line, else ``[]``."""
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        last = json.loads(lines[-1]) if lines and lines[-1].strip() else {}
        return lines if "summary" in last else []

    def _replace(self, lines: list[str]) -> None:
        from prefopt.data.prep_cache import atomic_write_bytes

        atomic_write_bytes(self.path, "".join(f"{line}\n" for line in lines).encode("utf-8"))

    def add_to_summary(self, extra: dict[str, Any]) -> None:
        """Merge ``extra`` (e.g. the run's ``timing``) into the closing ``summary`` line, or
        append a summary line if the Trainer wrote none; the file is replaced atomically."""
        if not is_main_process() or not self.path.is_file():
            return
        lines = self._lines_ending_in_summary()
        if lines:
            lines[-1] = json.dumps({"summary": {**json.loads(lines[-1])["summary"], **extra}})
        else:
            lines = self.path.read_text(encoding="utf-8").splitlines()
            lines.append(json.dumps({"summary": extra}))
        self._replace(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


_PLAIN_KEYS = (
    "loss",
    "rewards/accuracies",
    "rewards/margins",
    "learning_rate",
    "eval_loss",
    "eval_rewards/accuracies",
)


def live_console(console: Any) -> bool:
    """Whether ``console`` is an interactive terminal (a live bar), not a pipe or a file."""
    return bool(console.is_terminal) and not bool(getattr(console, "is_dumb_terminal", False))


def is_main_process() -> bool:
    """Rank 0 of a data-parallel run, or a single process: the one that shows progress."""
    return os.environ.get("RANK", "0") in ("", "0")


def format_duration(seconds: float) -> str:
    """``75.2 -> "1:15"``, ``3725 -> "1:02:05"``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TaskProgress:
    """Progress of one counted task (tokenization, a reference pass): a rich bar on a terminal,
    one summary line otherwise, nothing when disabled.

    Use as a context manager; :meth:`track` wraps an iterable and counts what is consumed.
    """

    def __init__(
        self,
        description: str,
        unit: str = "pairs",
        enabled: bool = True,
        console: Any = None,
        live: bool | None = None,
    ) -> None:
        self.description = description
        self.unit = unit
        self.enabled = enabled and is_main_process()
        self.count = 0
        self.note = ""
        self._console = console
        self._live = live
        self._progress: Any = None
        self._task: Any = None
        self._start = 0.0

    def __enter__(self) -> TaskProgress:
        self._start = clock()
        if not self.enabled:
            return self
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False, soft_wrap=True)
        live = live_console(self._console) if self._live is None else self._live
        if live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}", markup=False, style="bold"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeElapsedColumn(),
                console=self._console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=None)
        return self

    def track(self, items: Iterable[Any]) -> Iterator[Any]:
        """Yield ``items``, counting each one (the total is ``len(items)`` when it has one)."""
        if self._progress is not None and hasattr(items, "__len__"):
            self._progress.update(self._task, total=len(items))  # type: ignore[arg-type]
        for item in items:
            yield item
            self.advance()

    def counting(self, items: list[T]) -> list[T]:
        """``items`` as a list that advances this progress as it is iterated (for APIs that
        take a list but consume it item by item, such as tokenization)."""
        if self._progress is not None:
            self._progress.update(self._task, total=len(items))
        return _CountingList(items, self)

    def advance(self, amount: int = 1) -> None:
        self.count += amount
        if self._progress is not None:
            self._progress.update(self._task, advance=amount)

    def __exit__(self, *exc_info: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self.enabled and exc_info[0] is None:
            elapsed = clock() - self._start
            note = f" ({self.note})" if self.note else ""
            self._console.print(
                f"{self.description}: {self.count} {self.unit} in {elapsed:.1f} s{note}",
                markup=False,
            )


class _CountingList(list[T]):
    def __init__(self, items: Iterable[T], progress: TaskProgress) -> None:
        super().__init__(items)
        self._counter = progress

    def __iter__(self) -> Iterator[T]:
        for item in super().__iter__():
            yield item
            self._counter.advance()


class ProgressDisplay(TrainerCallback):
    """Training progress: a rich bar (step, loss, pairs/s, ETA) on a terminal, else plain lines;
    evaluation gets its own bar (batches) or line.

    ``pairs_per_step`` is the global number of pairs per optimizer step (of ``unit``: lists
    or conversations when the data holds them). Only the main process shows anything.
    :meth:`close` stops the live display (call it if training raises).
    """

    def __init__(
        self,
        pairs_per_step: int,
        console: Any = None,
        live: bool | None = None,
        unit: str = "pairs",
    ) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.live = live_console(self.console) if live is None else live
        self.pairs_per_step = pairs_per_step
        self.unit = unit
        self._progress: Any = None
        self._task: Any = None
        self._eval_task: Any = None
        self._start = 0.0
        self._start_step = 0
        self._last_loss: float | None = None
        from prefopt.training.throughput import ThroughputWatch

        self._watch = ThroughputWatch()

    def _ensure_progress(self) -> Any:
        if self._progress is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}", markup=False, style="bold"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} {task.fields[unit]}", markup=False),
                TextColumn("{task.fields[status]}", markup=False),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
        return self._progress

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._start, self._start_step = clock(), state.global_step
        if self.live:
            self._task = self._ensure_progress().add_task(
                "train", total=state.max_steps, completed=state.global_step, status="", unit="steps"
            )

    def _speed(self, state: Any) -> tuple[float, str]:
        """``unit`` per second since training (re)started, and the estimated time left."""
        elapsed = max(clock() - self._start, 1e-9)
        done = state.global_step - self._start_step
        rate = done * self.pairs_per_step / elapsed
        if done <= 0 or not state.max_steps:
            return rate, "?"
        return rate, format_duration(elapsed / done * max(state.max_steps - state.global_step, 0))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._watch.step(state.global_step)
        self._refresh_bar(state)

    def _refresh_bar(self, state: Any) -> None:
        """The live bar's step and status (last logged loss, pairs/s, throughput note)."""
        if self._progress is not None and self._task is not None:
            loss = "" if self._last_loss is None else f"loss {self._last_loss:.4f}  "
            note = self._watch.note()
            rate = self._speed(state)[0]
            status = f"{loss}{rate:.1f} {self.unit}/s" + (f"  {note}" if note else "")
            self._progress.update(self._task, completed=state.global_step, status=status)

    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.live or not state.is_world_process_zero:
            return
        if self._eval_task is None:
            loader = kwargs.get("eval_dataloader")
            total = len(loader) if loader is not None and hasattr(loader, "__len__") else None
            self._eval_task = self._ensure_progress().add_task(
                "eval", total=total, status="", unit="batches"
            )
        self._progress.update(self._eval_task, advance=1)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._eval_task is not None and self._progress is not None:
            self._progress.remove_task(self._eval_task)
        self._eval_task = None
        if self._task is None:  # evaluation after training: nothing else to show
            self.close()

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            self._last_loss = float(logs["loss"])
            # The Trainer logs a step after its on_step_end: show that step's loss now, or the
            # bar would end on the loss logged before the last one.
            self._refresh_bar(state)
        evaluation = any(key.startswith("eval_") for key in logs)
        if self._progress is None or evaluation:  # the live bar shows training steps itself
            shown = {k: logs[k] for k in _PLAIN_KEYS if isinstance(logs.get(k), (int, float))}
            text = "  ".join(f"{k}={v:.4g}" for k, v in shown.items())
            if text:
                timing = ""
                if "loss" in logs:
                    rate, eta = self._speed(state)
                    timing = f"  {self.unit}/s={rate:.1f}  eta={eta}"
                    note = self._watch.note()
                    timing += f"  {note}" if note else ""
                line = f"step {state.global_step}/{state.max_steps}  {text}{timing}"
                console = self._progress.console if self._progress is not None else self.console
                console.print(line, markup=False)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live display (idempotent)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self._task = None
        self._eval_task = None
