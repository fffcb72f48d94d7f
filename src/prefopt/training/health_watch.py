"""The health checks attached to a run: :class:`HealthWatch` feeds every logged step to a
:class:`~prefopt.training.health.HealthMonitor`, prints each finding once as it first holds,
and writes it to ``metrics.jsonl`` as an event line (``{"step": N, "event": "health", ...}``).
A resumed run replays the file's kept lines first, so a finding made before the checkpoint is
neither lost nor printed again."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from prefopt.config import HealthConfig
from prefopt.training.callbacks import MetricsJsonlCallback
from prefopt.training.health import Finding, HealthMonitor


class HealthWatch(TrainerCallback):
    """Runs the health rules on the main process (the logged metrics are global already).

    Put it after the :class:`MetricsJsonlCallback` it writes to, so that a step's line is in
    the file before the findings it caused, and a resumed file is trimmed before it is replayed.
    """

    def __init__(
        self,
        config: HealthConfig,
        metrics: MetricsJsonlCallback,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.say = say
        self.monitor = HealthMonitor(config)

    @property
    def findings(self) -> list[Finding]:
        return list(self.monitor.findings)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.monitor = HealthMonitor(self.config, state.max_steps)
        if state.global_step > 0 and self.metrics.path.is_file():
            lines = self.metrics.path.read_text(encoding="utf-8").splitlines()
            self.monitor.replay([json.loads(line) for line in lines if line.strip()])

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs or not self.config.enabled:
            return
        for finding in self.monitor.observe(state.global_step, dict(logs)):
            self.metrics.write_event(finding.event())
            if self.say is not None:
                self.say(f"health: {finding.line()}")
