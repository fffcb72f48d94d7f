"""The ``cached`` reference pass on two CPU processes (gloo): every process scores its own
share after the engine has prepared the model, the entry equals one process's bit for bit, and
training on it equals training with the online reference. Under DeepSpeed ZeRO-3 (where it
installs) full fine-tuning holds no frozen copy and the LM head takes the model's own path.
QLoRA with a sharding engine is refused before anything loads."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from prefopt.testing import run_cli

PAIRS = 64
EVAL_BATCH = 8  # the pass's batch size: 8 batches of 8 pairs, 4 for each process
SETS = [
    "training.logging_steps=1",
    "training.learning_rate=1e-4",
    "model.precision=fp32",
    f"training.per_device_eval_batch_size={EVAL_BATCH}",
    "training.save_strategy=no",
]
FSDP = "training.fsdp=full_shard auto_wrap"
ZERO3 = Path(__file__).resolve().parent.parent / "examples" / "accelerate" / "ds_zero3.json"


def train(model: Path, data: Path, out: Path, sets: list[str], processes: int) -> str:
    per_process = 8 // processes
    args = [
        "train", "dpo", "--model", str(model), "--train-file", str(data), "--max-steps", "2",
        "-q", "--output-dir", str(out),
        "--set", f"training.per_device_train_batch_size={per_process}",
    ]  # fmt: skip
    args += [item for value in [*SETS, *sets] for item in ("--set", value)]
    if processes > 1:
        args += ["--num-processes", str(processes)]
    code, _, stderr = run_cli(*args)
    assert code == 0, f"{out.name}: {stderr}"
    return stderr


def entry(cache: Path) -> tuple[np.ndarray, dict]:
    [path] = list((cache / "reference").glob("*.npz"))
    with np.load(path) as data:
        return np.array(data["logps"]), json.loads(bytes(data["meta"]).decode())


def losses(out: Path) -> list[float]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if "loss" in line]


@pytest.mark.parametrize(
    "engine", ["ddp-lora", "fsdp2-full"], ids=["ddp-lora", "fsdp2-full-fine-tuning"]
)
def test_each_process_scores_its_share_and_the_entry_equals_one_processs(
    engine: str, tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    sets = [] if engine == "ddp-lora" else ["lora=null", FSDP]
    one = ["reference.mode=cached", f"reference.cache_dir={tmp_path / 'one'}"]
    train(tiny_model, pairs_file, tmp_path / "run-one", [*one, *sets[:1]], processes=1)
    two = ["reference.mode=cached", f"reference.cache_dir={tmp_path / 'two'}"]
    train(tiny_model, pairs_file, tmp_path / "run-two", [*two, *sets], processes=2)

    single, single_meta = entry(tmp_path / "one")
    shared, shared_meta = entry(tmp_path / "two")
    assert shared.shape == (PAIRS, 2)
    assert np.array_equal(shared, single)  # bit for bit in fp32
    assert single_meta["scored_by"] == [PAIRS]
    assert shared_meta["scored_by"] == [PAIRS // 2, PAIRS // 2]  # no process idled

    online = tmp_path / "run-online"
    train(tiny_model, pairs_file, online, ["reference.mode=online", *sets], processes=2)
    assert losses(tmp_path / "run-two") == pytest.approx(losses(online), abs=1e-6)


needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="DeepSpeed is not installed (pip install deepspeed); CI leaves it out",
)


@needs_deepspeed
def test_zero3_full_fine_tuning_scores_the_reference_with_the_policy_before_step_one(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    zero3 = [f"training.deepspeed={ZERO3}", "lora=null"]
    cache = f"reference.cache_dir={tmp_path / 'cache'}"
    train(tiny_model, pairs_file, tmp_path / "one", ["lora=null", cache], processes=1)
    single = losses(tmp_path / "one")  # auto: the frozen copy online, filling nothing yet
    train(tiny_model, pairs_file, tmp_path / "zero3", [*zero3, cache], processes=2)
    assert losses(tmp_path / "zero3")[0] == pytest.approx(np.log(2), abs=1e-6)
    assert losses(tmp_path / "zero3") == pytest.approx(single, abs=1e-5)
    values, meta = entry(tmp_path / "cache")
    assert meta["scored_by"] == [PAIRS // 2, PAIRS // 2] and np.isfinite(values).all()

    code, _, stderr = run_cli(
        "train", "dpo", "--model", str(tiny_model), "--train-file", str(pairs_file),
        "--output-dir", str(tmp_path / "online"), "--num-processes", "2",
        *(item for value in [*SETS, *zero3, "reference.mode=online"] for item in ("--set", value)),
    )  # fmt: skip
    assert code == 2 and "reference.mode=online needs a frozen copy" in stderr


@needs_deepspeed
def test_zero3_lora_takes_the_models_own_lm_head(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    sets = [f"training.deepspeed={ZERO3}", f"reference.cache_dir={tmp_path / 'cache'}"]
    args = [
        "train", "dpo", "--model", str(tiny_model), "--train-file", str(pairs_file),
        "--max-steps", "2", "--output-dir", str(tmp_path / "zero3"), "--num-processes", "2",
        "--set", "training.per_device_train_batch_size=4",
    ]  # fmt: skip
    code, _, stderr = run_cli(
        *args, *(item for value in [*SETS, *sets] for item in ("--set", value))
    )
    assert code == 0, stderr
    assert stderr.count("DeepSpeed ZeRO-3 partitions the LM head") == 1
    assert losses(tmp_path / "zero3")[0] == pytest.approx(np.log(2), abs=1e-6)


@pytest.mark.parametrize("engine", ["training.fsdp=full_shard auto_wrap", "training.deepspeed=x"])
def test_qlora_with_a_sharding_engine_is_refused_in_one_line(engine: str) -> None:
    from prefopt.config_checks import check_values
    from prefopt.errors import ConfigError

    key, _, value = engine.partition("=")
    training = {key.removeprefix("training."): value}
    with pytest.raises(ConfigError) as refused:
        check_values({"model": {"load_in_4bit": True}, "training": training})
    message = str(refused.value)
    assert message.startswith(f"model.load_in_4bit with {key}: ") and "\n" not in message
    assert "--num-processes" in message
    check_values({"model": {"load_in_4bit": True}, "training": {}})  # QLoRA alone: fine
