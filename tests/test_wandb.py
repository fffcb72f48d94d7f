"""`training.report_to: [wandb]` offline: the run's files hold the metrics, the run name and the
config, and no secret reaches any file of the run (API key in the environment, a secret-looking
config value on the command line)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from prefopt.testing import run_cli, write_distribution

FAKE_API_KEY = "wandb-fake-key-0123456789abcdef0123456789abcdef"
FAKE_JUDGE_KEY = "sk-judge-secret-9f8e7d6c5b4a"
# An algorithm plugin with a credential among its hyperparameters (say, for an LLM judge).
JUDGED_PLUGIN = """
from dataclasses import dataclass, field

import prefopt
from prefopt.algorithms.dpo import DPOConfig, make_loss as dpo_loss
from prefopt.api import AlgorithmSpec


@dataclass
class JudgedConfig:
    beta: float = field(default=0.1, metadata={"help": "Inverse temperature."})
    judge_api_key: str = field(default="", metadata={"help": "API key of the judge."})


def make_loss(config, ctx=None):
    return dpo_loss(DPOConfig(beta=config.beta), ctx)


def run_name(config, model_short):
    return f"Judged_{model_short}"


@prefopt.hookimpl
def prefopt_algorithms():
    return [AlgorithmSpec("judged", "DPO with a judge key (test).", JudgedConfig, make_loss,
                          run_name=run_name)]
"""


def wandb_records(path: Path) -> Iterator[object]:
    """The protobuf records of a ``.wandb`` file (LevelDB log format: 32 KiB blocks of
    ``crc32 | length | type`` framed chunks after a 7-byte ``:W&B`` header)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, block, pending = 7, 32768, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:  # zero padding to the end of the block
            position += left
            continue
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 2):  # full, first
            pending = chunk
        else:  # middle, last
            pending += chunk
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(pending)
            pending = b""


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("judged-site")
    write_distribution(
        site, "judged", "1.0", {"judged": "judged_plugin"}, {"judged_plugin.py": JUDGED_PLUGIN}
    )
    return {"PYTHONPATH": str(site)}


def test_wandb_offline_run_has_the_metrics_and_no_secret(
    plugin_env: dict[str, str], tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    env = {**plugin_env, "WANDB_MODE": "offline", "WANDB_API_KEY": FAKE_API_KEY}
    code, _, stderr = run_cli(
        "train", "judged", "--model", str(tiny_model), "--train-file", str(pairs_file),
        "--output-dir", str(out), "--max-steps", "2", "--judge-api-key", FAKE_JUDGE_KEY,
        "--set", "training.report_to=[wandb]", "--set", "training.project=my-team/prefopt-tests",
        "--set", "training.per_device_train_batch_size=4", "--set", "training.logging_steps=1",
        "--set", "model.precision=fp32", "-q", env=env,
    )  # fmt: skip
    assert code == 0, stderr

    [run_file] = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    run_id = (out / "wandb_run_id").read_text().strip()
    assert run_file.name == f"run-{run_id}.wandb"
    records = list(wandb_records(run_file))
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == f"Judged_{tiny_model.name}"  # the algorithm's default run name
    assert (run.entity, run.project) == ("my-team", "prefopt-tests")
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["prefopt"]["algorithm_name"] == "judged"
    assert config["prefopt"]["algorithm"] == {"beta": 0.1, "judge_api_key": "<redacted>"}

    history = [
        {
            item.key or "/".join(item.nested_key): json.loads(item.value_json)
            for item in r.history.item
        }
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "loss" in r]
    wandb_steps = [h for h in history if "train/loss" in h]
    assert [h["train/global_step"] for h in wandb_steps] == [1, 2]
    for mine, theirs in zip(steps, wandb_steps, strict=True):
        assert theirs["train/loss"] == pytest.approx(mine["loss"])
        assert theirs["train/rewards/margins"] == pytest.approx(mine["rewards/margins"])

    saved = yaml.safe_load((out / "prefopt_config.yaml").read_text())
    assert saved["algorithm"]["judge_api_key"] == "<redacted>"
    assert saved["training"]["report_to"] == ["wandb"]
    files = [path for path in out.rglob("*") if path.is_file()]
    assert len(files) > 10
    for path in files:
        data = path.read_bytes()
        for secret in (FAKE_API_KEY, FAKE_JUDGE_KEY):
            assert secret.encode() not in data, f"{secret[:8]}... found in {path}"


def test_redaction_by_name_and_by_value() -> None:
    from prefopt.training.redaction import is_secret_name, redact, redact_argv

    for name in ("hub_token", "judge_api_key", "WANDB_API_KEY", "HF_TOKEN", "apiKey", "password"):
        assert is_secret_name(name), name
    for name in ("tokenizer", "max_tokens", "keyboard", "include_num_input_tokens_seen", "monkey"):
        assert not is_secret_name(name), name
    secrets = ["s3cr3t-value-123"]
    config = {
        "model": {"tokenizer": "tok/dir", "name_or_path": "m"},
        "training": {"hub_token": "hf_abc", "include_num_input_tokens_seen": True, "run_name": "x"},
        "algorithm": {"judge_api_key": "", "note": "uses s3cr3t-value-123 inside", "k": ["a"]},
    }
    assert redact(config, secrets) == {
        "model": {"tokenizer": "tok/dir", "name_or_path": "m"},
        "training": {
            "hub_token": "<redacted>",
            "include_num_input_tokens_seen": True,
            "run_name": "x",
        },
        "algorithm": {"judge_api_key": "", "note": "<redacted>", "k": ["a"]},
    }
    argv = ["train", "dpo", "--set", "training.hub_token=hf_abc", "--judge-api-key", "sk-1",
            "--model", "m", "--note=s3cr3t-value-123", "--set", "training.max_steps=3"]  # fmt: skip
    assert redact_argv(argv, secrets) == [
        "train", "dpo", "--set", "training.hub_token=<redacted>", "--judge-api-key", "<redacted>",
        "--model", "m", "<redacted>", "--set", "training.max_steps=3",
    ]  # fmt: skip


def test_hub_token_in_the_config_is_refused() -> None:
    from prefopt.errors import ConfigError
    from prefopt.training.redaction import check_training_secrets

    check_training_secrets({"hub_token": None, "push_to_hub": True})
    with pytest.raises(ConfigError, match="set HF_TOKEN in the environment"):
        check_training_secrets({"hub_token": "hf_abc"})


def test_project_and_entity(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefopt.training.wandb_setup import project_and_entity, reports_to_wandb

    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.setenv("WANDB_ENTITY", "env-team")
    assert project_and_entity("huggingface") == ("prefopt", "env-team")  # TrainingArguments default
    assert project_and_entity("runs") == ("runs", "env-team")
    assert project_and_entity("lab/runs") == ("runs", "lab")
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    assert project_and_entity(None) == ("from-env", "env-team")
    assert reports_to_wandb(["tensorboard", "wandb"]) and not reports_to_wandb([])
