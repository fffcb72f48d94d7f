"""rank1: the DPO loss with a rank-1 LoRA preset; every preset value can be overridden by
YAML, flags or --set, and the trained adapter really is rank 1 on the four modules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from prefopt.config_layers import resolve_run_config
from prefopt.registry import get_algorithm

SPEC = get_algorithm("rank1")
MODULES = ["o_proj", "v_proj", "up_proj", "down_proj"]


def test_preset_values() -> None:
    config = resolve_run_config(SPEC, flags={"model.name_or_path": "org/Tiny-1B"})
    assert config.lora is not None
    assert (config.lora.r, config.lora.alpha, config.lora.target_modules) == (1, 1.0, MODULES)
    assert config.algorithm.beta == 0.1 and config.algorithm.label_smoothing == 0.0
    training = config.training
    assert training["learning_rate"] == 5e-7
    assert training["max_steps"] == 100
    assert training["per_device_train_batch_size"] == 2
    assert training["gradient_accumulation_steps"] == 4
    assert training["run_name"] == "Rank1DPO_Tiny-1B"


def test_yaml_flags_and_set_override_the_preset(tmp_path: Path) -> None:
    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        "lora: {r: 4, target_modules: [q_proj, v_proj]}\n"
        "training: {learning_rate: 1.0e-6, gradient_accumulation_steps: 1}\n"
        "algorithm: {beta: 0.3}\n"
    )
    config = resolve_run_config(
        SPEC,
        config_file,
        flags={"training.max_steps": 7, "algorithm.beta": 0.5},
        sets=["lora.alpha=8", "training.per_device_train_batch_size=16"],
    )
    assert config.lora is not None
    assert (config.lora.r, config.lora.alpha, config.lora.target_modules) == (
        4,
        8.0,
        ["q_proj", "v_proj"],
    )
    assert config.training["learning_rate"] == 1e-6
    assert config.training["gradient_accumulation_steps"] == 1
    assert config.training["max_steps"] == 7
    assert config.training["per_device_train_batch_size"] == 16
    assert config.algorithm.beta == 0.5  # flag beats YAML beats preset


def test_loss_is_dpo() -> None:
    from prefopt.api import PreferenceBatch

    t = torch.tensor
    batch = PreferenceBatch(
        t([-3.0, -1.0]), t([-2.0, -4.0]), t([-2.5, -1.5]), t([-2.0, -3.0]), t([2, 2]), t([2, 2])
    )
    out = SPEC.build_loss(SPEC.config_class(beta=0.1))(batch)
    margins = [(-3.0 + 2.0) - (-2.5 + 2.0), (-1.0 + 4.0) - (-1.5 + 3.0)]
    expected = [math.log1p(math.exp(-0.1 * m)) for m in margins]
    assert out.per_pair.tolist() == pytest.approx(expected, rel=1e-6)


def test_cli_rank1_adapter_is_rank_one_on_four_modules(
    tiny_model: Path, pairs_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefopt.cli.main import main

    out = tmp_path / "out"
    args = ["train", "rank1", "-q", "--model", str(tiny_model), "--train-file", str(pairs_file),
            "--output-dir", str(out), "--max-steps", "1", "--set",
            "training.logging_steps=1"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 1 and adapter["lora_alpha"] == 1
    assert sorted(adapter["target_modules"]) == sorted(MODULES)
    saved = yaml.safe_load((out / "prefopt_config.yaml").read_text())
    assert saved["training"]["learning_rate"] == 5e-7
    assert saved["training"]["gradient_accumulation_steps"] == 4
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(
        math.log(2), abs=2e-4
    )  # fresh adapter: m = 0 up to fp32 noise
    from safetensors.torch import load_file

    weights = load_file(str(out / "adapter_model.safetensors"))
    ranks = {tuple(v.shape)[0] for k, v in weights.items() if "lora_A" in k}
    assert ranks == {1}
    assert {k.split(".")[-3] for k in weights if "lora_A" in k} == set(MODULES)

    # a flag overrides the preset on the command line too
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["train", "rank1", "--model", str(tiny_model), "--print-config",
              "--set", "lora.r=2", "--max-steps", "9"])  # fmt: skip
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["lora"]["r"] == 2 and printed["lora"]["alpha"] == 1.0
    assert printed["training"]["max_steps"] == 9
