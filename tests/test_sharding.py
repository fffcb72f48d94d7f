"""Sharded engines on 2 CPU processes (gloo): FSDP2 trains for real (its checkpoint files prove
the FSDP path ran, not DDP) and logs what one process logs with the same global batch, with
full fine-tuning (frozen-copy reference) and with LoRA; its checkpoints resume exactly.
DeepSpeed runs where it is installed and is refused in one line where it is not."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from prefopt.testing import run_cli

STEPS = 3
GLOBAL_BATCH = 8
SETS = [
    "training.logging_steps=1",
    "training.learning_rate=1e-4",
    "model.precision=fp32",
]
COMPARED = ("loss", "grad_norm", "rewards/margins", "rewards/accuracies", "logps/chosen")
FLAGS = {"dpo": [], "beta-dpo": ["--rho", "0.5", "--alpha", "1.0"]}
EXTRA = {"dpo": (), "beta-dpo": ("beta", "keep_ratio")}
FSDP = "training.fsdp=full_shard auto_wrap"


def steps(output_dir: Path) -> list[dict]:
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if "loss" in record]


def one_process(args: list[str], sets: list[str]) -> list[dict]:
    """The run of ``prefopt ARGS`` in one process (this one), the whole global batch on it."""
    from prefopt.cli.main import main

    sets = [*sets, f"training.per_device_train_batch_size={GLOBAL_BATCH}"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, *(item for value in sets for item in ("--set", value))])
    assert exit_info.value.code in (0, None)
    return steps(Path(args[-1]))


def two_processes(args: list[str], sets: list[str], *extra: str) -> tuple[int, str]:
    code, _, stderr = run_cli(
        *args, *(item for value in sets for item in ("--set", value)), "--num-processes", "2",
        "--set", f"training.per_device_train_batch_size={GLOBAL_BATCH // 2}", *extra,
    )  # fmt: skip
    return code, stderr


def assert_same(one: list[dict], two: list[dict], keys: tuple[str, ...]) -> None:
    assert [r["step"] for r in two] == [r["step"] for r in one]
    for a, b in zip(one, two, strict=True):
        for key in keys:
            assert b[key] == pytest.approx(a[key], abs=1e-4, rel=1e-4), (a["step"], key)


@pytest.mark.parametrize(("algorithm", "lora"), [("dpo", False), ("beta-dpo", True)])
def test_fsdp2_on_two_processes_logs_what_one_process_logs(
    algorithm: str, lora: bool, tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    def args(out: Path) -> list[str]:
        return [
            "train", algorithm, "--model", str(tiny_model), "--train-file", str(pairs_file),
            "--max-steps", str(STEPS), *FLAGS[algorithm], "-q", "--output-dir", str(out),
        ]  # fmt: skip

    # Full fine-tuning: the frozen-copy reference, sharded like the policy (online mode).
    sets = [*SETS, "training.save_steps=2"] + (
        [] if lora else ["lora=null", "reference.mode=online"]
    )
    single = one_process(args(tmp_path / "one"), [*sets, "training.save_strategy=no"])
    out = tmp_path / "fsdp"
    code, stderr = two_processes(args(out), [*sets, FSDP])
    assert code == 0, stderr
    assert "reducer" not in stderr  # DDP's Reducer never ran
    sharded = steps(out)
    assert single[-1]["loss"] != pytest.approx(single[0]["loss"], abs=1e-5)  # training moved
    assert_same(single, sharded, COMPARED + EXTRA[algorithm])

    checkpoint = out / "checkpoint-2"
    # Written by the Trainer's FSDP path only: the gathered weights and the sharded optimizer.
    assert (checkpoint / "pytorch_model_fsdp.bin").is_file()
    assert (checkpoint / "optimizer.bin").is_file()
    saved = "adapter_model.safetensors" if lora else "model.safetensors"
    assert (out / saved).is_file()  # the final save gathers the full weights on rank 0
    if lora:
        return
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(checkpoint, resumed / "checkpoint-2")
    # Resumed with the cached reference: rank 0 fills the cache with the frozen copy, which is
    # then dropped (no reference model during training); the log-probs are the online ones.
    cached = ["reference.mode=cached", f"reference.cache_dir={tmp_path / 'cache'}"]
    code, stderr = two_processes(args(resumed), [*sets, FSDP, *cached], "--resume")
    assert code == 0, stderr
    assert any((tmp_path / "cache").rglob("*")), "the reference cache was not filled"
    assert_same(sharded[2:], steps(resumed), COMPARED)


def test_fsdp2_lora_trains_in_bf16(tiny_model: Path, pairs_file: Path, tmp_path: Path) -> None:
    """bf16 mixed precision with LoRA: FSDP2 fixes gradient dtypes at the first forward, the
    reference pass with the adapter (and its requires_grad) switched off by peft; without the
    trainer's fix the first backward fails on bf16 gradients for the fp32 LoRA weights."""

    def args(out: Path) -> list[str]:
        return [
            "train", "dpo", "--model", str(tiny_model), "--train-file", str(pairs_file),
            "--max-steps", "2", "-q", "--output-dir", str(out),
        ]  # fmt: skip

    sets = ["training.logging_steps=1", "model.precision=bf16", "training.save_strategy=no"]
    code, stderr = two_processes(args(tmp_path / "fsdp"), [*sets, FSDP])
    assert code == 0, stderr
    sharded = steps(tmp_path / "fsdp")
    assert [r["step"] for r in sharded] == [1, 2]
    assert sharded[0]["loss"] == pytest.approx(0.693147, abs=1e-4)  # policy = reference: ln 2
    assert 0 < sharded[1]["grad_norm"] < 10


def test_fsdp_without_processes_to_shard_across_is_refused() -> None:
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from prefopt.errors import UsageError
    from prefopt.training.sharding import enable_fsdp_on_cpu

    def trainer(kind: DistributedType, **plugin: object) -> SimpleNamespace:
        state = SimpleNamespace(distributed_type=kind)
        return SimpleNamespace(
            args=SimpleNamespace(fsdp_plugin_args={"fsdp_version": 2, **plugin}),
            accelerator=SimpleNamespace(state=state),
        )

    with pytest.raises(UsageError, match="^training.fsdp shards a model across processes, an"):
        enable_fsdp_on_cpu(trainer(DistributedType.NO))
    with pytest.raises(UsageError, match="^training.fsdp on CPUs runs FSDP2 only"):
        enable_fsdp_on_cpu(trainer(DistributedType.MULTI_CPU, fsdp_version=1))
    assert enable_fsdp_on_cpu(trainer(DistributedType.FSDP)) is False  # accelerate did it


EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "accelerate"


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_runs_where_installed_and_is_refused_where_not(
    stage: int, tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    args = [
        "train", "dpo", "--model", str(tiny_model), "--train-file", str(pairs_file),
        "--max-steps", str(STEPS), "-q", "--output-dir", str(out),
    ]  # fmt: skip
    sets = [*SETS, "lora=null", "training.save_steps=2"]
    deepspeed = f"training.deepspeed={EXAMPLES / f'ds_zero{stage}.json'}"
    if importlib.util.find_spec("deepspeed") is None:  # refused before any model is loaded
        from prefopt.errors import UsageError
        from prefopt.training.sharding import prepare_engine

        with pytest.raises(UsageError) as refused:
            prepare_engine({"deepspeed": deepspeed.partition("=")[2]})
        assert str(refused.value) == (
            "training.deepspeed needs the deepspeed package, which is not installed: "
            "pip install deepspeed (or use training.fsdp, which needs nothing extra)"
        )
        return
    single = one_process([*args[:-1], str(tmp_path / "one")], [*sets, "training.save_strategy=no"])
    code, stderr = two_processes(args, [*sets, deepspeed])
    assert code == 0, stderr
    assert (out / "checkpoint-2" / "global_step2").is_dir()  # DeepSpeed's own checkpoint
    # At step 1 the policy is the reference: DeepSpeed's copy of the weights scores a few
    # pairs higher by rounding noise (margins ~1e-7), which flips the accuracy, not the rest.
    assert_same(single, steps(out), tuple(key for key in COMPARED if key != "rewards/accuracies"))
