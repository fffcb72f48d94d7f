"""The package as prefopt sees it: a valid plugin, cheap to import, every loss trainable."""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefopt.registry import PluginInfo, PluginRegistry, api_problem, spec_problem

from prefopt_losses import plugin

NAMES = [
    "ipo",
    "hinge",
    "robust",
    "simpo",
    "nca-pair",
    "apo-zero",
    "sppo-hard",
    "bco-pair",
    "exo-pair",
]


def test_plugin_registers_nine_valid_algorithms() -> None:
    warnings: list[str] = []
    registry = PluginRegistry(warn=warnings.append)
    registry.register(plugin, PluginInfo("prefopt-losses", "prefopt-losses", "0.1.0"))
    assert sorted(registry.algorithms) == sorted(NAMES)
    assert warnings == []
    assert api_problem(plugin.PREFOPT_PLUGIN_API) is None
    assert all(spec_problem(spec) is None for spec in plugin.SPECS)


@pytest.mark.parametrize("spec", plugin.SPECS, ids=lambda s: s.name)
def test_every_loss_is_documented(spec) -> None:
    module = importlib.import_module(spec.config_class.__module__)
    doc = module.__doc__ or ""
    assert "https://arxiv.org/abs/" in doc and "loss" in doc and "Parameters:" in doc
    for f in dataclasses.fields(spec.config_class):
        assert f.metadata.get("help"), f"{spec.name}.{f.name} has no help text"
        assert f"``{f.name}``" in doc, f"{spec.name}: parameter {f.name} not in the docstring"


def test_listing_the_plugin_does_not_import_torch() -> None:
    code = "import sys, prefopt_losses.plugin; print('torch' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# First-step losses with LoRA (B = 0, so policy == reference: every log-ratio is 0) at the
# default hyperparameters, computed by hand. The tolerance leaves room for bf16 autocast, under
# which the reference and policy passes may differ in the last bits; a wrong formula or
# parameter is off by far more.
AT_REFERENCE = {
    "ipo": (1 / (2 * 0.1)) ** 2,  # (0 − 1/(2τ))²
    "hinge": 1.0,  # max(0, 1 − 0)
    "robust": math.log(2),  # ((1 − ε) − ε)·log 2 / (1 − 2ε)
    "nca-pair": 2 * math.log(2),
    "apo-zero": 1.0,  # (1 − ½) + ½
    "sppo-hard": 2 * (1 / (2 * 0.1)) ** 2,
    "bco-pair": 2 * math.log(2),  # δ = 0 since all rewards are 0
    "exo-pair": 0.5 * (math.log(0.5) - math.log(0.999)) + 0.5 * (math.log(0.5) - math.log(1e-3)),
}


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_trains_one_step_of_the_tiny_model(name, tiny_model, tmp_path) -> None:
    from prefopt.testing import train_one_step

    spec = next(s for s in plugin.SPECS if s.name == name)
    metrics = train_one_step(spec, tiny_model, tmp_path)
    assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"])
    assert metrics["grad_norm"] > 0
    if name in AT_REFERENCE:
        assert metrics["loss"] == pytest.approx(AT_REFERENCE[name], rel=1e-3)
        assert metrics["rewards/margins"] == pytest.approx(0.0, abs=1e-3)
    else:  # simpo: no reference, rewards are β·(mean token log-prob) < 0
        assert metrics["rewards/chosen"] < 0 and metrics["rewards/rejected"] < 0
        gap = metrics["rewards/chosen"] - metrics["rewards/rejected"]
        assert abs(gap) < 1.0  # a random model hardly separates them


def test_bco_pair_state_is_saved_with_checkpoints(tiny_model, tmp_path) -> None:
    import json

    from prefopt.testing import train_one_step

    spec = next(s for s in plugin.SPECS if s.name == "bco-pair")
    sets = ["training.save_strategy=steps", "training.save_steps=1"]
    train_one_step(spec, tiny_model, tmp_path, pairs=2, steps=2, sets=sets)
    states = {
        step: json.loads(
            (tmp_path / "run" / f"checkpoint-{step}" / "prefopt_loss_state.json").read_text()
        )
        for step in (1, 2)
    }
    # one training call per step, 2 pairs -> 4 rewards each; step 1 starts at the reference
    assert states[1]["count"] == 4 and states[1]["mean"] == pytest.approx(0.0, abs=1e-3)
    assert states[2]["count"] == 8 and states[2]["mean"] != states[1]["mean"]
