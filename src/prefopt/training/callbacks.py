"""Trainer callbacks: ``metrics.jsonl`` on disk and a rich (or plain) progress display."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

METRICS_FILE = "metrics.jsonl"


class MetricsJsonlCallback(TrainerCallback):
    """Appends every logged step to ``<output_dir>/metrics.jsonl`` (one JSON object a line).

    A fresh run starts the file anew; a resumed run keeps the lines up to the checkpoint's step
    and appends after them, so the file always describes one consistent history.
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / METRICS_FILE

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        if state.global_step > 0 and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip() and json.loads(line).get("step", 0) <= state.global_step:
                    kept.append(line)
        self.path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, **{k: _plain(v) for k, v in logs.items()}}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


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


class ProgressDisplay(TrainerCallback):
    """Training progress: a rich bar (step, loss, pairs/s, ETA) on a terminal, else plain lines.

    ``pairs_per_step`` is the global number of pairs per optimizer step.
    """

    def __init__(self, pairs_per_step: int, console: Any = None, live: bool | None = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.live = sys.stderr.isatty() if live is None else live
        self.pairs_per_step = pairs_per_step
        self._progress: Any = None
        self._task: Any = None
        self._start = 0.0
        self._start_step = 0
        self._last_loss: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._start, self._start_step = time.perf_counter(), state.global_step
        if self.live:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]train[/]"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} steps"),
                TextColumn("{task.fields[status]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train", total=state.max_steps, completed=state.global_step, status=""
            )

    def _rate(self, state: Any) -> float:
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        return (state.global_step - self._start_step) * self.pairs_per_step / elapsed

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._progress is not None:
            loss = "" if self._last_loss is None else f"loss {self._last_loss:.4f}  "
            status = f"{loss}{self._rate(state):.1f} pairs/s"
            self._progress.update(self._task, completed=state.global_step, status=status)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            self._last_loss = float(logs["loss"])
        if self._progress is None:
            shown = {k: logs[k] for k in _PLAIN_KEYS if isinstance(logs.get(k), (int, float))}
            text = "  ".join(f"{k}={v:.4g}" for k, v in shown.items())
            if text:
                rate = f"  pairs/s={self._rate(state):.1f}" if "loss" in logs else ""
                self.console.print(f"step {state.global_step}/{state.max_steps}  {text}{rate}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
