"""Helpers shared by the built-in losses: number formatting for run names (from
:mod:`prefopt.config_values`, which sweeps share), the sigmoid
preference loss, global-batch gathering and quantiles.

Nothing here imports torch at module top, so importing an algorithm module (and listing
plugins) stays instant.
"""

from __future__ import annotations

from typing import Any

from prefopt.algorithms.dpo import sigmoid_preference_loss
from prefopt.config_values import format_number

__all__ = [
    "format_number",
    "gather_detached",
    "grad_enabled",
    "quantile",
    "sigmoid_preference_loss",
]


def gather_detached(ctx: Any, tensor: Any) -> Any:
    """``tensor`` detached and gathered across data-parallel processes (rank order)."""
    return ctx.all_gather(tensor.detach().contiguous())


def grad_enabled() -> bool:
    """Whether the loss is being computed for a training step.

    The Trainer evaluates under ``torch.no_grad()``; stateful losses use this to leave their
    running statistics untouched during evaluation.
    """
    import torch

    return torch.is_grad_enabled()


def quantile(values: Any, q: float) -> float:
    """The ``q``-quantile of a 1-d tensor with linear interpolation (numpy's default), in
    float64 so that it does not depend on the training dtype."""
    import torch

    flat = values.detach().reshape(-1).to(dtype=torch.float64, device="cpu")
    return float(torch.quantile(flat, q))
