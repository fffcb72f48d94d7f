"""The example configs stay valid: they resolve against the current config schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefopt.config_layers import resolve_run_config
from prefopt.registry import get_algorithm

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("name", ["dpo_qwen.yaml", "dpo_tiny.yaml"])
def test_example_config_resolves(name: str) -> None:
    config = resolve_run_config(get_algorithm("dpo"), EXAMPLES / name)
    assert config.model.name_or_path
    assert config.data.train
    assert config.algorithm.beta > 0
    assert config.training["output_dir"].startswith("runs/")
