"""The non-finite guard: a NaN or infinite loss or gradient stops the run at that step.

Two checks, both before the optimizer step, so the weights, the optimizer and every
checkpoint on disk still hold the last good step:

- :func:`check_loss` runs on every training micro-batch (``PreferenceTrainer.compute_loss``),
  before the backward pass;
- :class:`NonFiniteGuard` (a ``TrainerCallback``) looks at the gradients in
  ``on_pre_optimizer_step``, after accumulation and clipping. It stays out of the way of fp16
  loss scaling (whose overflowing steps the scaler skips on purpose) and of DeepSpeed (whose
  engine owns the gradients).

Under data parallelism the verdict is agreed on by all processes (one all-reduce of a flag),
so every process stops at the same step instead of leaving the others waiting in a
collective. The run ends with :class:`NonFiniteError`, a :class:`~prefopt.errors.UsageError`:
the CLI prints it as one line and exits with code 2 (the settings or the data need a change).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from prefopt.errors import UsageError


class NonFiniteError(UsageError):
    """Training produced a NaN or infinite loss or gradient at ``step`` (1-based)."""

    def __init__(self, step: int, what: str, checkpoint: str | Path | None = None) -> None:
        self.step = step
        self.what = what
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        if self.checkpoint is not None:
            after = (
                f"the last good checkpoint is {self.checkpoint}: lower "
                "training.learning_rate or check the data, then continue with --resume"
            )
        else:
            after = (
                "no checkpoint was saved before it: lower training.learning_rate or check the data"
            )
        super().__init__(
            f"step {step}: {what}; training stopped before the optimizer step and nothing of "
            f"step {step} was saved; {after}"
        )

    def with_checkpoint(self, checkpoint: str | Path | None) -> NonFiniteError:
        """The same error, naming the newest checkpoint that survived."""
        return NonFiniteError(self.step, self.what, checkpoint)


def _any_process(flag: bool, device: Any) -> bool:
    """``flag`` or-ed over all data-parallel processes (just ``flag`` on one process)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def _describe(value: Any) -> str:
    number = float(value)
    return "nan" if number != number else ("inf" if number > 0 else "-inf")


def check_loss(loss: Any, step: int) -> None:
    """Raise :class:`NonFiniteError` if the training loss of ``step`` is NaN or infinite on any
    process; call it before the backward pass."""
    import torch

    detached = loss.detach()
    bad = not bool(torch.isfinite(detached).all())
    if _any_process(bad, detached.device):
        what = (
            f"the loss is {_describe(detached.float().sum())}"
            if bad
            else "the loss is not finite on another process"
        )
        raise NonFiniteError(step, what)


def first_non_finite_gradient(model: Any) -> str | None:
    """The name of the first parameter whose gradient holds a NaN or infinity, else ``None``."""
    import torch

    named = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    if not named:
        return None
    # FSDP2 gradients are DTensors: look at this process's shard (the verdict is shared later)
    local = [grad.to_local() if hasattr(grad, "to_local") else grad for _, grad in named]
    flags = torch.stack([torch.isfinite(grad).all().to(local[0].device) for grad in local])
    if bool(flags.all()):  # one synchronisation on the happy path
        return None
    for (name, _), ok in zip(named, flags.tolist(), strict=True):
        if not ok:
            return name
    return None  # pragma: no cover - unreachable


class NonFiniteGuard(TrainerCallback):
    """Stops training before an optimizer step on non-finite gradients."""

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs.get("model")
        deepspeed = getattr(args, "deepspeed", None) or getattr(args, "deepspeed_plugin", None)
        if model is None or getattr(args, "fp16", False) or deepspeed:
            return
        name = first_non_finite_gradient(model)
        device = next((p.device for p in model.parameters()), "cpu")
        if _any_process(name is not None, device):
            what = (
                f"the gradient of {name} is not finite"
                if name is not None
                else "a gradient is not finite on another process"
            )
            raise NonFiniteError(state.global_step + 1, what)
