"""Small pieces shared by the losses: parameter checks, log-ratio helpers, the output.

Nothing here imports torch at module level, so listing plugins stays fast.
"""

from __future__ import annotations

import math
from typing import Any

from prefopt.api import LossOutput, PreferenceBatch


def check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def check_interval(
    name: str, value: float, low: float, high: float, *, low_open: bool, high_open: bool
) -> None:
    """``value`` must lie in the interval from ``low`` to ``high`` (open or closed ends)."""
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (isinstance(value, (int, float)) and above and below):
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be in {left}{low}, {high}{right}, got {value!r}")


def log_ratios(batch: PreferenceBatch, length_normalize: bool = False) -> tuple[Any, Any]:
    """``(π_c − ref_c, π_r − ref_r)`` per pair, optionally divided by the completion lengths.

    Without a reference (``None`` fields) the policy log-probs themselves are returned.
    """
    chosen, rejected = batch.chosen_log_ratio(), batch.rejected_log_ratio()
    if length_normalize:
        chosen = chosen / batch.chosen_lengths.clamp(min=1).to(chosen.dtype)
        rejected = rejected / batch.rejected_lengths.clamp(min=1).to(rejected.dtype)
    return chosen, rejected


def output(
    per_pair: Any,
    chosen_rewards: Any,
    rejected_rewards: Any,
    metrics: dict[str, Any] | None = None,
) -> LossOutput:
    """The mean of ``per_pair`` as the loss, unit weights, detached implicit rewards."""
    import torch

    return LossOutput(
        loss=per_pair.mean(),
        per_pair=per_pair,
        weights=torch.ones_like(per_pair),
        metrics=metrics or {},
        chosen_rewards=chosen_rewards.detach(),
        rejected_rewards=rejected_rewards.detach(),
    )
