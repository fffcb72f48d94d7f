"""APO-zero: anchored preference optimisation that raises the chosen, lowers the rejected.

D'Oosterlinck et al., "Anchored Preference Optimization and Contrastive Revisions: Addressing
Underspecification in Alignment", 2024, https://arxiv.org/abs/2408.06266 (Eq. 7).

Per pair, with implicit rewards ``r = β·(log π(y|x) − log π_ref(y|x))`` (log-probs summed
over completion tokens)::

    loss = (1 − σ(r_c)) + σ(r_r)

Each answer is anchored to the reference separately: the chosen likelihood must go up and the
rejected one down, which suits data whose chosen answers are better than what the model
writes now (APO-down, the opposite case, is not in this pack). The loss lies in (0, 2); it is
1 at the start (policy = reference).

Parameters: ``beta`` (β) 0.01–0.5 (0.1 common). Implicit rewards: ``r_c``, ``r_r``.
Shapes: inputs and ``per_pair`` are (B,); ``loss`` is a scalar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefopt.api import AlgorithmSpec, LossContext, LossOutput, PreferenceBatch

from prefopt_losses._common import check_positive, log_ratios, output


@dataclass
class APOZeroConfig:
    beta: float = field(default=0.1, metadata={"help": "Reward scale β (0.01–0.5)."})

    def __post_init__(self) -> None:
        check_positive("beta", self.beta)


def apo_zero_loss(chosen_rewards: Any, rejected_rewards: Any) -> Any:
    """``(1 − σ(r_c)) + σ(r_r)`` elementwise."""
    import torch

    return (1 - torch.sigmoid(chosen_rewards)) + torch.sigmoid(rejected_rewards)


class APOZeroLoss:
    def __init__(self, config: APOZeroConfig) -> None:
        self.config = config

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        chosen, rejected = log_ratios(batch)
        r_c, r_r = self.config.beta * chosen, self.config.beta * rejected
        return output(apo_zero_loss(r_c, r_r), r_c, r_r)


def make_loss(config: APOZeroConfig, ctx: LossContext | None = None) -> APOZeroLoss:
    return APOZeroLoss(config)


SPEC = AlgorithmSpec(
    name="apo-zero",
    summary="APO-zero: raise the chosen and lower the rejected likelihood, each anchored.",
    config_class=APOZeroConfig,
    make_loss=make_loss,
)
