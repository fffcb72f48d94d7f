"""SPPO (hard labels): self-play preference optimisation as two squared regressions.

Wu et al., "Self-Play Preference Optimization for Language Model Alignment", 2024,
https://arxiv.org/abs/2405.00675 (the loss of Algorithm 1 with hard win probabilities).

SPPO regresses each answer's log-ratio onto ``η·(P(y ≻ π_t) − ½)``. With hard labels (the
chosen answer wins, P = 1; the rejected loses, P = 0) and ``η = 1/β``, per pair, with
``ℓ(y) = log π(y|x) − log π_ref(y|x)`` summed over completion tokens::

    loss = (ℓ(y_c) − 1/(2β))² + (ℓ(y_r) + 1/(2β))²

The chosen log-ratio is pulled up to +1/(2β), the rejected one down to −1/(2β); like IPO the
pull stops at the target rather than pushing the margin without bound.

Parameters: ``beta`` (β = 1/η) 0.01–1; 0.1 puts the targets at ±5 nats, smaller β means
larger targets and a looser tie to the reference. Implicit rewards: ``β·ℓ(y)``.
Shapes: inputs and ``per_pair`` are (B,); ``loss`` is a scalar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefopt.api import AlgorithmSpec, LossContext, LossOutput, PreferenceBatch

from prefopt_losses._common import check_positive, log_ratios, output


@dataclass
class SPPOHardConfig:
    beta: float = field(
        default=0.1,
        metadata={"help": "β = 1/η: log-ratio targets are ±1/(2β) (0.01–1)."},
    )

    def __post_init__(self) -> None:
        check_positive("beta", self.beta)


def sppo_hard_loss(chosen_log_ratio: Any, rejected_log_ratio: Any, beta: float) -> Any:
    """``(ℓ_c − 1/(2β))² + (ℓ_r + 1/(2β))²`` elementwise."""
    target = 0.5 / beta
    return (chosen_log_ratio - target) ** 2 + (rejected_log_ratio + target) ** 2


class SPPOHardLoss:
    def __init__(self, config: SPPOHardConfig) -> None:
        self.config = config

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        chosen, rejected = log_ratios(batch)
        beta = self.config.beta
        return output(sppo_hard_loss(chosen, rejected, beta), beta * chosen, beta * rejected)


def make_loss(config: SPPOHardConfig, ctx: LossContext | None = None) -> SPPOHardLoss:
    return SPPOHardLoss(config)


SPEC = AlgorithmSpec(
    name="sppo-hard",
    summary="SPPO with hard labels: regress log-ratios to ±1/(2β) (Wu et al. 2024).",
    config_class=SPPOHardConfig,
    make_loss=make_loss,
)
