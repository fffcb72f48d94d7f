"""The non-finite guard: a NaN loss or gradient stops the run at that step with a one-line
message, nothing of that step is saved, and the last good checkpoint resumes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from prefopt.testing import run_cli, write_distribution

# A third-party-style plugin: DPO whose loss is NaN at one training call (1-based).
NAN_PLUGIN = """
from dataclasses import dataclass, field

import prefopt
from prefopt.algorithms.dpo import DPOConfig, make_loss as dpo_loss
from prefopt.api import AlgorithmSpec


@dataclass
class NanAtConfig:
    nan_step: int = field(default=0, metadata={"help": "Training call with a NaN loss (0: none)"})


def make_loss(config, ctx=None):
    inner = dpo_loss(DPOConfig(), ctx)
    calls = [0]

    def loss(batch):
        import torch

        output = inner(batch)
        if torch.is_grad_enabled():
            calls[0] += 1
            if calls[0] == config.nan_step:
                output.loss = output.loss * float("nan")
        return output

    return loss


@prefopt.hookimpl
def prefopt_algorithms():
    return [AlgorithmSpec("nan-at", "DPO with a NaN loss at one step.", NanAtConfig, make_loss)]
"""
RUN_SETS = [
    "--set", "training.per_device_train_batch_size=4", "--set", "training.logging_steps=1",
    "--set", "training.save_steps=2", "--set", "model.precision=fp32",
]  # fmt: skip


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("nan-site")
    write_distribution(
        site, "nan-at", "1.0", {"nan-at": "nanat_plugin"}, {"nanat_plugin.py": NAN_PLUGIN}
    )
    return {"PYTHONPATH": str(site)}


def test_nan_loss_stops_the_run_and_the_last_checkpoint_resumes(
    plugin_env: dict[str, str], tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    base = [
        "train", "nan-at", "--model", str(tiny_model), "--train-file", str(pairs_file),
        "--output-dir", str(out), "--max-steps", "6", *RUN_SETS, "-q",
    ]  # fmt: skip
    code, stdout, stderr = run_cli(*base, "--nan-step", "4", env=plugin_env)
    assert code == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr
    assert "step 1/6" not in stderr  # --quiet: no progress lines
    assert errors[0].startswith("error: step 4: the loss is nan; training stopped")
    assert f"the last good checkpoint is {out / 'checkpoint-2'}" in errors[0]
    assert "--resume" in errors[0]
    # Step 4 would have saved checkpoint-4: nothing after the bad step reached the disk.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (out / "adapter_model.safetensors").exists()
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3]

    # The surviving checkpoint is usable: resume (with the fault gone) to the end, here in
    # this process with the plugin's own spec.
    from prefopt.cli.common import quiet_libraries
    from prefopt.config_layers import resolve_run_config
    from prefopt.training.run import train

    namespace: dict[str, Any] = {}
    exec(NAN_PLUGIN, namespace)
    [spec] = namespace["prefopt_algorithms"]()
    flags = {
        "model.name_or_path": str(tiny_model),
        "data.train": str(pairs_file),
        "training.output_dir": str(out),
        "training.max_steps": 6,
        "algorithm.nan_step": 0,
    }
    quiet_libraries()
    result = train(
        resolve_run_config(spec, None, flags, RUN_SETS[1::2]), spec, resume=True, quiet=True
    )
    assert result.steps == 6
    assert (out / "adapter_model.safetensors").is_file()
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert all(r["loss"] == r["loss"] and r["grad_norm"] == r["grad_norm"] for r in steps)


@dataclass
class GradientNanConfig:
    nan_step: int = field(default=2, metadata={"help": "Training call with NaN gradients."})


def _gradient_nan_loss(config: GradientNanConfig, ctx: Any = None) -> Any:
    """DPO whose loss value stays finite at ``nan_step`` but whose gradient is NaN there
    (the masked-``sqrt`` trick: ``where`` passes 0 · NaN = NaN back)."""
    from prefopt.algorithms.dpo import DPOConfig
    from prefopt.algorithms.dpo import make_loss as dpo_loss

    inner = dpo_loss(DPOConfig(), ctx)
    calls = [0]

    def loss(batch: Any) -> Any:
        import torch

        output = inner(batch)
        if torch.is_grad_enabled():
            calls[0] += 1
            if calls[0] == config.nan_step:
                margin = batch.logits_margin()
                never = torch.zeros_like(margin, dtype=torch.bool)
                poison = torch.where(never, torch.sqrt(-margin.abs() - 1), torch.zeros_like(margin))
                output.loss = output.loss + poison.sum()
        return output

    return loss


def test_nan_gradient_with_a_finite_loss_is_caught_before_the_optimizer_step(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    from prefopt.api import AlgorithmSpec
    from prefopt.cli.common import quiet_libraries
    from prefopt.config_layers import resolve_run_config
    from prefopt.training.guards import NonFiniteError
    from prefopt.training.run import train

    spec = AlgorithmSpec("gradient-nan", "test", GradientNanConfig, _gradient_nan_loss)
    out = tmp_path / "run"
    config = resolve_run_config(
        spec,
        None,
        {"model.name_or_path": str(tiny_model), "data.train": str(pairs_file),
         "training.output_dir": str(out), "training.max_steps": 4},
        ["training.per_device_train_batch_size=4", "training.logging_steps=1",
         "training.save_steps=1", "model.precision=fp32"],
    )  # fmt: skip
    quiet_libraries()
    with pytest.raises(NonFiniteError) as caught:
        train(config, spec, quiet=True)
    error = caught.value
    assert error.step == 2 and error.checkpoint == out / "checkpoint-1"
    message = str(error)
    assert message.startswith("step 2: the gradient of ") and "lora_" in message
    assert "is not finite" in message and "\n" not in message
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1]  # step 2 was never logged


def test_check_loss_on_plain_tensors() -> None:
    import torch

    from prefopt.training.guards import NonFiniteError, check_loss

    check_loss(torch.tensor(0.69), step=1)
    check_loss(torch.tensor(1e30), step=1)  # large but finite is fine
    for value, word in ((float("nan"), "nan"), (float("inf"), "inf"), (-float("inf"), "-inf")):
        with pytest.raises(NonFiniteError) as caught:
            check_loss(torch.tensor(value, requires_grad=True) * 1.0, step=7)
        assert caught.value.step == 7
        assert str(caught.value).startswith(f"step 7: the loss is {word}; ")
        assert "no checkpoint was saved before it" in str(caught.value)


def test_gradient_guard_reads_gradients_and_leaves_fp16_scaling_alone() -> None:
    import torch

    from prefopt.training.guards import NonFiniteError, NonFiniteGuard

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model(torch.ones(1, 2)).sum().backward()
    guard = NonFiniteGuard()
    state = SimpleNamespace(global_step=9)
    args = SimpleNamespace(fp16=False, deepspeed=None)
    guard.on_pre_optimizer_step(args, state, None, model=model)  # finite: nothing happens
    model[1].weight.grad[0, 1] = float("inf")
    with pytest.raises(NonFiniteError, match=r"^step 10: the gradient of 1\.weight is not finite"):
        guard.on_pre_optimizer_step(args, state, None, model=model)
    # fp16 loss scaling skips overflowing steps by design: the guard does not interfere.
    guard.on_pre_optimizer_step(
        SimpleNamespace(fp16=True, deepspeed=None), state, None, model=model
    )
