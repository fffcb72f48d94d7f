"""``prefopt merge``: the merged model gives base + adapter's logits, loaded with plain
``AutoModelForCausalLM.from_pretrained``; chains, 4-bit runs, overwrite protection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from prefopt.cli.main import app
from prefopt.testing import synthetic_pairs, write_pairs
from prefopt.testing.cli_runner import run_cli_in_process as run_cli

TRAIN_SETS = [
    "--set", "training.per_device_train_batch_size=8",
    "--set", "training.learning_rate=0.05",
    "--set", "training.logging_steps=1",
    "--set", "lora.r=4",
    "--set", "lora.alpha=8",
]  # fmt: skip


def logits(model: Any) -> torch.Tensor:
    ids = torch.tensor(
        [[1, 40, 41, 42, 50, 60, 70, 80, 90, 2], [1, 100, 101, 102, 103, 104, 105, 106, 107, 108]]
    )
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def load_plain(path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def with_adapters(base_path: Path, *adapters: Path) -> Any:
    """Base + adapters, the last one left unmerged (as PEFT applies it at inference)."""
    from peft import PeftModel

    model = load_plain(base_path)
    for adapter in adapters[:-1]:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return PeftModel.from_pretrained(model, str(adapters[-1])).eval()


@pytest.fixture(scope="module")
def run1(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two DPO steps at a high learning rate through the CLI: a clearly non-zero adapter."""
    folder = tmp_path_factory.mktemp("merge")
    data = write_pairs(folder / "train.jsonl", synthetic_pairs(16, seed=1))
    out = folder / "run1"
    code, _, err = run_cli(
        "train", "dpo", "--model", str(tiny_model), "--train-file", str(data),
        "--output-dir", str(out), "--max-steps", "2", *TRAIN_SETS, "-q",
    )  # fmt: skip
    assert code == 0, err
    return out


def test_merged_logits_equal_base_plus_adapter(
    tiny_model: Path, run1: Path, tmp_path: Path
) -> None:
    out = tmp_path / "merged"
    code, stdout, err = run_cli("merge", str(run1), "-o", str(out))
    assert code == 0, err
    assert "merged model saved to" in stdout
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert (out / "tokenizer.json").is_file() and not (out / "adapter_config.json").exists()

    merged = logits(load_plain(out))
    reference = logits(with_adapters(tiny_model, run1))
    base = logits(load_plain(tiny_model))
    assert (reference - base).abs().max() > 1e-3, "the adapter should not be a no-op"
    assert (merged - reference).abs().max() < 1e-4

    card = (out / "README.md").read_text()
    for expected in (f"base_model: \"{tiny_model}\"", "| algorithm | dpo |", "| beta | 0.1 |",
                     "| learning_rate | 0.05 |", "train.jsonl", "r=4, alpha=8"):  # fmt: skip
        assert expected in card, expected
    record = json.loads((out / "prefopt_merge.json").read_text())
    assert record["base_model"] == str(tiny_model) and record["run"]["algorithm"] == "dpo"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging left"


def test_refuses_to_overwrite_without_force(run1: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    (out / "old-file").write_text("x")
    runner = CliRunner()
    result = runner.invoke(app, ["merge", str(run1), "-o", str(out)])
    assert result.exit_code == 2
    assert "already exists; pass --force" in result.stderr
    assert (out / "old-file").exists()
    result = runner.invoke(app, ["merge", str(run1), "-o", str(out), "--force"])
    assert result.exit_code == 0, result.stderr
    assert not (out / "old-file").exists() and (out / "model.safetensors").is_file()
    result = runner.invoke(app, ["merge", str(run1), "-o", str(run1), "--force"])
    assert result.exit_code == 2 and "one of the merged folders" in result.stderr


def test_sft_then_dpo_chain(tiny_model: Path, run1: Path, tmp_path: Path) -> None:
    """A run trained on top of an adapter folder is merged base → run1 → run2."""
    from prefopt.config_layers import resolve_run_config
    from prefopt.registry import get_algorithm
    from prefopt.training.run import train

    data = write_pairs(tmp_path / "train2.jsonl", synthetic_pairs(16, seed=2))
    spec = get_algorithm("dpo")
    flags = {
        "model.name_or_path": str(run1),
        "data.train": str(data),
        "training.output_dir": str(tmp_path / "run2"),
        "training.max_steps": 2,
    }
    sets = [s for s in TRAIN_SETS if s != "--set"]
    run2 = train(resolve_run_config(spec, None, flags, sets), spec, quiet=True).output_dir

    out = tmp_path / "merged2"
    result = CliRunner().invoke(app, ["merge", str(run2), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "prefopt_merge.json").read_text())
    assert [Path(p).name for p in record["chain"]] == [tiny_model.name, "run1", "run2"]
    expected = logits(with_adapters(tiny_model, run1, run2))
    assert (logits(load_plain(out)) - expected).abs().max() < 1e-4
    skipping_run1 = logits(with_adapters(tiny_model, run2))
    assert (expected - skipping_run1).abs().max() > 1e-3, "run1 must matter in this test"


def test_4bit_run_is_merged_into_full_precision(run1: Path, tmp_path: Path) -> None:
    qlora = tmp_path / "qlora"
    shutil.copytree(run1, qlora)
    config = yaml.safe_load((qlora / "prefopt_config.yaml").read_text())
    config["model"]["load_in_4bit"] = True
    (qlora / "prefopt_config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "merged-bf16"
    result = CliRunner().invoke(app, ["merge", str(qlora), "-o", str(out), "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.stderr
    merged_config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in merged_config
    assert merged_config.get("dtype", merged_config.get("torch_dtype")) == "bfloat16"
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.bfloat16}  # noqa: SIM118
    assert "4-bit (NF4) base; merged into the fp32 base" in (out / "README.md").read_text()


def test_bad_sources(tiny_model: Path, run1: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["merge", str(tiny_model), "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "holds a full model, not an adapter" in result.stderr

    moved = tmp_path / "moved"
    shutil.copytree(run1, moved)
    config = yaml.safe_load((moved / "prefopt_config.yaml").read_text())
    config["model"]["name_or_path"] = str(tmp_path / "gone")
    (moved / "prefopt_config.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["merge", str(moved), "-o", str(tmp_path / "y")])
    assert result.exit_code == 2 and "does not exist; pass --base" in result.stderr
    result = runner.invoke(
        app, ["merge", str(moved), "-o", str(tmp_path / "y"), "--base", str(tiny_model)]
    )
    assert result.exit_code == 0, result.stderr
