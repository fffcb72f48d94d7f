"""DPO: Direct Preference Optimization with the sigmoid loss, and conservative DPO.

Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward
Model", NeurIPS 2023, https://arxiv.org/abs/2305.18290. Label smoothing (cDPO): Mitchell,
"A note on DPO with noisy preferences", https://ericmitchell.ai/cdpo.pdf.

Per pair, with log-probs summed over completion tokens::

    m    = (log π(y_c|x) − log π(y_r|x)) − (log π_ref(y_c|x) − log π_ref(y_r|x))
    loss = −(1 − ε) · log σ(β·m) − ε · log σ(−β·m)

Parameters: ``beta`` (β) the inverse temperature, typically 0.01–0.5 (0.1 is common);
``label_smoothing`` (ε) the assumed share of flipped labels, 0 ≤ ε < 0.5 (0 = plain DPO).
Implicit rewards: r_c = β·(log π(y_c) − log π_ref(y_c)), likewise r_r. Shapes: every input
and ``per_pair`` is (B,); ``loss`` is a scalar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import prefopt
from prefopt.api import AlgorithmSpec, LossContext, LossOutput, PreferenceBatch


@dataclass
class DPOConfig:
    beta: float = field(default=0.1, metadata={"help": "Inverse temperature β (0.01–0.5)."})
    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "cDPO label smoothing ε, the assumed share of flipped labels (0–0.5)."},
    )

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


def sigmoid_preference_loss(logits: Any, label_smoothing: float = 0.0) -> Any:
    """``−(1 − ε)·log σ(z) − ε·log σ(−z)`` elementwise, for ``z = β·margin``.

    Written with ``−log σ(z) = softplus(−z)``: the same function, but ``F.logsigmoid`` costs
    milliseconds per call on CPU even for a handful of pairs, where softplus takes microseconds.
    """
    import torch.nn.functional as F

    return (1 - label_smoothing) * F.softplus(-logits) + label_smoothing * F.softplus(logits)


class DPOLoss:
    """Sigmoid DPO loss with optional cDPO label smoothing."""

    def __init__(self, config: DPOConfig) -> None:
        self.config = config

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        import torch

        beta = self.config.beta
        per_pair = sigmoid_preference_loss(
            beta * batch.logits_margin(), self.config.label_smoothing
        )
        return LossOutput(
            loss=per_pair.mean(),
            per_pair=per_pair,
            weights=torch.ones_like(per_pair),
            metrics={},
            chosen_rewards=beta * batch.chosen_log_ratio().detach(),
            rejected_rewards=beta * batch.rejected_log_ratio().detach(),
        )


def make_loss(config: DPOConfig, ctx: LossContext | None = None) -> DPOLoss:
    return DPOLoss(config)


def _run_name(config: DPOConfig, model_short: str) -> str:
    return f"DPO_{model_short}"


SPEC = AlgorithmSpec(
    name="dpo",
    summary="Direct Preference Optimization (sigmoid loss, optional cDPO label smoothing).",
    config_class=DPOConfig,
    make_loss=make_loss,
    run_name=_run_name,
)


@prefopt.hookimpl
def prefopt_algorithms() -> list[AlgorithmSpec]:
    return [SPEC]
