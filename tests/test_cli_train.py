"""`prefopt train` end to end on the tiny model, and bad usage answered with exit code 2."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import yaml

# The commands run in this process (main(), exit codes and output captured): what a fresh
# interpreter adds is tested where it matters (test_cli_import_loads_no_torch, test_first_run).
from prefopt.testing.cli_runner import run_cli_in_process as run_cli

RUN_FLAGS = [
    "--max-steps",
    "3",
    "--set",
    "training.per_device_train_batch_size=8",
    "--set",
    "training.logging_steps=1",
    "--set",
    "training.bf16=false",
]


def test_train_dpo_writes_outputs_and_starts_at_ln2(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        "train", "dpo", "--model", str(tiny_model), "--train-file", str(pairs_file),
        "--output-dir", str(out), *RUN_FLAGS,
    )  # fmt: skip
    assert code == 0, stderr
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "prefopt_config.yaml",
        "metrics.jsonl",
    ):
        assert (out / name).is_file(), name
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "loss" in line]
    assert [line["step"] for line in steps] == [1, 2, 3]
    assert abs(steps[0]["loss"] - math.log(2)) < 1e-3
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert key in steps[0]
    assert "logps/chosen" in steps[0] and "logps/rejected" in steps[0]
    saved = yaml.safe_load((out / "prefopt_config.yaml").read_text())
    assert saved["algorithm_name"] == "dpo"
    assert saved["model"]["name_or_path"] == str(tiny_model)
    assert saved["training"]["per_device_train_batch_size"] == 8
    assert saved["algorithm"] == {"beta": 0.1, "label_smoothing": 0.0, "rpo_alpha": 0.0}
    assert str(out) in stdout  # the closing summary names the output folder


def test_conversational_data_and_full_finetuning(
    tiny_model: Path, chat_pairs_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "full"
    code, _, stderr = run_cli(
        "train", "dpo", "--model", str(tiny_model), "--train-file", str(chat_pairs_file),
        "--output-dir", str(out), "--max-steps", "2", "--set", "lora=null",
        "--set", "training.per_device_train_batch_size=4", "--set", "training.logging_steps=1",
        "--beta", "0.2",
    )  # fmt: skip
    assert code == 0, stderr
    assert (out / "model.safetensors").is_file()  # full model, no adapter
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert abs(first["loss"] - math.log(2)) < 1e-3  # frozen copy == policy at step 1
    assert yaml.safe_load((out / "prefopt_config.yaml").read_text())["algorithm"]["beta"] == 0.2


def test_print_config_shows_resolved_values(tiny_model: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("training:\n  learning_rate: 1e-4\nalgorithm:\n  beta: 0.3\n")
    code, stdout, stderr = run_cli(
        "train", "dpo", "--config", str(config), "--model", str(tiny_model),
        "--beta", "0.25", "--set", "lora.r=4", "--print-config",
    )  # fmt: skip
    assert code == 0, stderr
    resolved = yaml.safe_load(stdout)
    assert resolved["algorithm"]["beta"] == 0.25
    assert resolved["training"]["learning_rate"] == 1e-4
    assert resolved["lora"]["r"] == 4
    assert resolved["training"]["run_name"] == f"DPO_{tiny_model.name}"


def test_unknown_algorithm_lists_known_ones() -> None:
    code, _, stderr = run_cli("train", "dpoo", "--model", "x")
    assert code == 2
    assert "unknown algorithm 'dpoo'" in stderr and "Did you mean 'dpo'?" in stderr
    assert "Known algorithms:" in stderr and "dpo" in stderr
    assert "Traceback" not in stderr


def test_missing_train_file_is_named(tiny_model: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    code, _, stderr = run_cli(
        "train", "dpo", "--model", str(tiny_model), "--train-file", str(missing),
        "--output-dir", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 2
    assert str(missing) in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "o").exists()


def test_unknown_config_key_is_named(tiny_model: Path, pairs_file: Path) -> None:
    code, _, stderr = run_cli(
        "train", "dpo", "--model", str(tiny_model), "--train-file", str(pairs_file),
        "--set", "training.learning_rat=1e-5",
    )  # fmt: skip
    assert code == 2
    assert "unknown config key 'training.learning_rate'" not in stderr
    assert "training.learning_rat" in stderr and "Did you mean 'learning_rate'?" in stderr


def test_missing_model_path(pairs_file: Path, tmp_path: Path) -> None:
    code, _, stderr = run_cli(
        "train", "dpo", "--model", str(tmp_path / "no-model"), "--train-file", str(pairs_file),
    )  # fmt: skip
    assert code == 2
    assert "model path does not exist" in stderr
    assert "Traceback" not in stderr


def test_bad_record_names_file_line_and_field(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(
        '{"prompt": "q", "chosen": "a", "rejected": "b"}\n'
        '{"prompt": "q", "chosen": 3, "rejected": "b"}\n'
    )
    code, _, stderr = run_cli(
        "train", "dpo", "--model", str(tiny_model), "--train-file", str(data),
        "--output-dir", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 2
    assert f"{data}:2: chosen" in stderr


def test_version_and_plugins_list() -> None:
    from prefopt import __version__

    code, stdout, _ = run_cli("--version")
    assert code == 0 and stdout.strip() == f"prefopt {__version__}"
    code, stdout, _ = run_cli("plugins", "list")
    assert code == 0
    assert "dpo" in stdout and "prefopt" in stdout and __version__ in stdout


def test_cli_import_loads_no_torch() -> None:
    probe = (
        "import sys, prefopt.cli.main; "
        "names = ('torch', 'transformers', 'trl', 'peft', 'datasets'); "
        "heavy = [m for m in names if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    importtime = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import prefopt.cli"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "torch" not in importtime.stderr
