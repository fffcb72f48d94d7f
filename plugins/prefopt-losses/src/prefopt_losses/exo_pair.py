"""EXO (pairwise): exact optimisation of the KL-regularised objective, reverse-KL form.

Ji et al., "Towards Efficient Exact Optimization of Language Model Alignment", ICML 2024,
https://arxiv.org/abs/2402.00856 (Eq. 16, two answers per prompt).

The policy's implicit preference ``p_θ = σ(β·m)`` (``m`` the DPO margin, log-probs summed over
completion tokens) is fitted to the smoothed label distribution ``(1 − ε, ε)`` by minimising
``KL(p_θ ‖ p_label)`` — the mode-seeking direction, where DPO minimises the reverse. Per pair::

    loss = σ(β·m)·(log σ(β·m) − log(1 − ε)) + σ(−β·m)·(log σ(−β·m) − log ε)

The loss is ≥ 0 and is zero at ``β·m = log((1 − ε)/ε)``: ε > 0 is required (ε → 0 sends the
optimum to infinity).

Parameters: ``beta`` (β) 0.01–0.5 (0.1 common); ``epsilon`` (ε) 0 < ε < 0.5, the paper
recommends 1e-3. Implicit rewards: ``β·(log π(y) − log π_ref(y))``. Shapes: inputs and
``per_pair`` are (B,); ``loss`` is a scalar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prefopt.api import AlgorithmSpec, LossContext, LossOutput, PreferenceBatch

from prefopt_losses._common import check_interval, check_positive, log_ratios, output


@dataclass
class EXOPairConfig:
    beta: float = field(default=0.1, metadata={"help": "Inverse temperature β (0.01–0.5)."})
    epsilon: float = field(
        default=1e-3,
        metadata={"help": "Label smoothing ε of the target, 0 < ε < 0.5 (paper: 1e-3)."},
    )

    def __post_init__(self) -> None:
        check_positive("beta", self.beta)
        check_interval("epsilon", self.epsilon, 0.0, 0.5, low_open=True, high_open=True)


def exo_pair_loss(margin: Any, beta: float, epsilon: float) -> Any:
    """``KL((σ(βm), σ(−βm)) ‖ (1 − ε, ε))`` elementwise."""
    import torch
    import torch.nn.functional as F

    z = beta * margin
    return torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-epsilon)) + torch.sigmoid(-z) * (
        F.logsigmoid(-z) - math.log(epsilon)
    )


class EXOPairLoss:
    def __init__(self, config: EXOPairConfig) -> None:
        self.config = config

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        chosen, rejected = log_ratios(batch)
        beta = self.config.beta
        per_pair = exo_pair_loss(chosen - rejected, beta, self.config.epsilon)
        return output(per_pair, beta * chosen, beta * rejected)


def make_loss(config: EXOPairConfig, ctx: LossContext | None = None) -> EXOPairLoss:
    return EXOPairLoss(config)


SPEC = AlgorithmSpec(
    name="exo-pair",
    summary="EXO (pairwise): fit σ(β·m) to (1 − ε, ε) under reverse KL (Ji et al. 2024).",
    config_class=EXOPairConfig,
    make_loss=make_loss,
)
