"""Hinge loss on the DPO margin, as in SLiC-HF and RSO.

Zhao et al., "SLiC-HF: Sequence Likelihood Calibration with Human Feedback", 2023,
https://arxiv.org/abs/2305.10425; Liu et al., "Statistical Rejection Sampling Improves
Preference Optimization" (RSO), ICLR 2024, https://arxiv.org/abs/2309.06657 (the hinge
variant of their loss).

Per pair, with log-probs summed over completion tokens::

    m    = (log π(y_c|x) − log π(y_r|x)) − (log π_ref(y_c|x) − log π_ref(y_r|x))
    loss = max(0, δ − β·m)

Pairs whose scaled margin already exceeds δ contribute nothing (zero loss and zero gradient).

Parameters: ``beta`` (β) scales the margin, typically 0.01–1 (0.1 is common); ``margin`` (δ)
the hinge point, 1 by default (only δ/β moves the optimum, β also scales the gradient).
Implicit rewards: ``β·(log π(y) − log π_ref(y))``. Shapes: inputs and ``per_pair`` are (B,);
``loss`` is a scalar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefopt.api import AlgorithmSpec, LossContext, LossOutput, PreferenceBatch

from prefopt_losses._common import check_positive, log_ratios, output


@dataclass
class HingeConfig:
    beta: float = field(default=0.1, metadata={"help": "Scale β of the margin (0.01–1)."})
    margin: float = field(
        default=1.0, metadata={"help": "Hinge point δ: pairs with β·m ≥ δ give no loss."}
    )

    def __post_init__(self) -> None:
        check_positive("beta", self.beta)
        check_positive("margin", self.margin)


def hinge_loss(margin: Any, beta: float, delta: float = 1.0) -> Any:
    """``max(0, δ − β·m)`` elementwise."""
    import torch

    return torch.relu(delta - beta * margin)


class HingeLoss:
    def __init__(self, config: HingeConfig) -> None:
        self.config = config

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        chosen, rejected = log_ratios(batch)
        beta = self.config.beta
        per_pair = hinge_loss(chosen - rejected, beta, self.config.margin)
        return output(per_pair, beta * chosen, beta * rejected)


def make_loss(config: HingeConfig, ctx: LossContext | None = None) -> HingeLoss:
    return HingeLoss(config)


SPEC = AlgorithmSpec(
    name="hinge",
    summary="Hinge loss max(0, δ − β·m) on the DPO margin (SLiC-HF, RSO).",
    config_class=HingeConfig,
    make_loss=make_loss,
)
