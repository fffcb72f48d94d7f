"""NCA (pairwise): noise-contrastive alignment that also anchors the absolute rewards.

Chen et al., "Noise Contrastive Alignment of Language Models with Explicit Rewards",
NeurIPS 2024, https://arxiv.org/abs/2402.05369 (NCA for pairwise preference data).

Per pair, with implicit rewards ``r = β·(log π(y|x) − log π_ref(y|x))`` (log-probs summed
over completion tokens)::

    loss = −log σ(r_c) − ½·log σ(−r_c) − ½·log σ(−r_r)

DPO only sees ``r_c − r_r`` and can lower both likelihoods; NCA optimises each reward on its
own scale, so the chosen answer's likelihood is kept from falling (minimum at r_c = log 2 for
the chosen terms, while r_r is pushed down).

Parameters: ``beta`` (β) 0.01–0.5 (0.1 common). Implicit rewards: ``r_c``, ``r_r``.
Shapes: inputs and ``per_pair`` are (B,); ``loss`` is a scalar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefopt.api import AlgorithmSpec, LossContext, LossOutput, PreferenceBatch

from prefopt_losses._common import check_positive, log_ratios, output


@dataclass
class NCAPairConfig:
    beta: float = field(default=0.1, metadata={"help": "Reward scale β (0.01–0.5)."})

    def __post_init__(self) -> None:
        check_positive("beta", self.beta)


def nca_pair_loss(chosen_rewards: Any, rejected_rewards: Any) -> Any:
    """``−log σ(r_c) − ½·log σ(−r_c) − ½·log σ(−r_r)`` elementwise."""
    import torch.nn.functional as F

    return (
        -F.logsigmoid(chosen_rewards)
        - 0.5 * F.logsigmoid(-chosen_rewards)
        - 0.5 * F.logsigmoid(-rejected_rewards)
    )


class NCAPairLoss:
    def __init__(self, config: NCAPairConfig) -> None:
        self.config = config

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        chosen, rejected = log_ratios(batch)
        r_c, r_r = self.config.beta * chosen, self.config.beta * rejected
        return output(nca_pair_loss(r_c, r_r), r_c, r_r)


def make_loss(config: NCAPairConfig, ctx: LossContext | None = None) -> NCAPairLoss:
    return NCAPairLoss(config)


SPEC = AlgorithmSpec(
    name="nca-pair",
    summary="NCA (pairwise): rewards optimised on an absolute scale (Chen et al. 2024).",
    config_class=NCAPairConfig,
    make_loss=make_loss,
)
