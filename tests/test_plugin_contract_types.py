"""The plugin contract is typed: mypy checks a plugin against it (prefopt ships ``py.typed``),
as CI does for the loss pack in plugins/ (``mypy plugins/prefopt-losses/src``)."""

from __future__ import annotations

from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = """
from dataclasses import dataclass
from typing import Any

import prefopt
from prefopt.api import AlgorithmSpec, LossContext, LossOutput, PreferenceBatch, StatefulLoss


@dataclass
class HingeConfig:
    beta: float = 0.1


@dataclass
class OtherConfig:
    gamma: float = 1.0


class Hinge:
    def __init__(self, config: HingeConfig) -> None:
        self.config = config
        self.seen = 0

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        import torch

        per_pair = torch.relu(1 - self.config.beta * batch.logits_margin())
        return LossOutput(per_pair.mean(), per_pair, torch.ones_like(per_pair))

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])


def make_loss(config: HingeConfig, ctx: LossContext | None = None) -> Hinge:
    return Hinge(config)


def run_name(config: HingeConfig, model_short: str) -> str:
    return f"Hinge_{model_short}_beta{config.beta}"


stateful: StatefulLoss = make_loss(HingeConfig())
SPEC = AlgorithmSpec("hinge", "Hinge.", HingeConfig, make_loss, run_name=run_name)


@prefopt.hookimpl
def prefopt_algorithms() -> list[AlgorithmSpec[Any]]:
    return [SPEC]
"""


def mypy(tmp_path: Path, source: str) -> tuple[str, int]:
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(source, encoding="utf-8")
    stdout, stderr, status = mypy_api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), str(plugin)]
    )
    return stdout + stderr, status


def test_a_plugin_that_keeps_the_contract_type_checks(tmp_path: Path) -> None:
    report, status = mypy(tmp_path, PLUGIN)
    assert status == 0, report


def test_mypy_names_a_plugin_that_breaks_the_contract(tmp_path: Path) -> None:
    # make_loss written for another config class than the spec's
    other_config = PLUGIN.replace(
        "def make_loss(config: HingeConfig,", "def make_loss(config: OtherConfig,"
    ).replace("return Hinge(config)", "return Hinge(HingeConfig())")
    report, status = mypy(tmp_path, other_config)
    assert status == 1, report
    assert 'Argument 4 to "AlgorithmSpec" has incompatible type' in report
    assert 'expected "Callable[[HingeConfig, LossContext], Loss]"' in report

    # a make_loss whose result is no Loss (no __call__(batch) -> LossOutput)
    no_loss = PLUGIN.replace(") -> Hinge:\n    return Hinge(config)", ") -> int:\n    return 3")
    no_loss = no_loss.replace("stateful: StatefulLoss = make_loss(HingeConfig())\n", "")
    report, status = mypy(tmp_path, no_loss)
    assert status == 1, report
    assert '"Callable[[HingeConfig, LossContext | None], int]"' in report
