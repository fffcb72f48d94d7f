"""Robust DPO: an unbiased DPO loss under a known rate of flipped preference labels.

Chowdhury et al., "Provably Robust DPO: Aligning Language Models with Noisy Feedback",
ICML 2024, https://arxiv.org/abs/2403.00409 (the unbiased loss built from the DPO loss).

Per pair, with the DPO margin ``m`` (log-probs summed over completion tokens) and
``ℓ(z) = −log σ(z)``::

    loss = ((1 − ε)·ℓ(β·m) − ε·ℓ(−β·m)) / (1 − 2ε)

Its expectation over labels flipped with probability ε equals the clean DPO loss, so the
gradient is unbiased under that noise. Unlike cDPO's label smoothing the flipped term is
*subtracted*: the loss is unbounded below for ε > 0 and negative values are normal.
ε = 0 gives plain DPO.

Parameters: ``beta`` (β) 0.01–0.5 (0.1 common); ``label_smoothing`` (ε) the assumed share of
flipped labels, 0 ≤ ε < 0.5, typically 0.1–0.4 (the paper's range). Implicit rewards:
``β·(log π(y) − log π_ref(y))``. Shapes: inputs and ``per_pair`` are (B,); ``loss`` is a scalar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefopt.api import AlgorithmSpec, LossContext, LossOutput, PreferenceBatch

from prefopt_losses._common import check_interval, check_positive, log_ratios, output


@dataclass
class RobustConfig:
    beta: float = field(default=0.1, metadata={"help": "Inverse temperature β (0.01–0.5)."})
    label_smoothing: float = field(
        default=0.1,
        metadata={"help": "Assumed share ε of flipped labels, 0 ≤ ε < 0.5 (0.1–0.4)."},
    )

    def __post_init__(self) -> None:
        check_positive("beta", self.beta)
        check_interval(
            "label_smoothing", self.label_smoothing, 0.0, 0.5, low_open=False, high_open=True
        )


def robust_loss(margin: Any, beta: float, epsilon: float) -> Any:
    """``((1 − ε)·(−log σ(β·m)) − ε·(−log σ(−β·m))) / (1 − 2ε)`` elementwise."""
    import torch.nn.functional as F

    clean = -F.logsigmoid(beta * margin)
    flipped = -F.logsigmoid(-beta * margin)
    return ((1 - epsilon) * clean - epsilon * flipped) / (1 - 2 * epsilon)


class RobustLoss:
    def __init__(self, config: RobustConfig) -> None:
        self.config = config

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        chosen, rejected = log_ratios(batch)
        beta = self.config.beta
        per_pair = robust_loss(chosen - rejected, beta, self.config.label_smoothing)
        return output(per_pair, beta * chosen, beta * rejected)


def make_loss(config: RobustConfig, ctx: LossContext | None = None) -> RobustLoss:
    return RobustLoss(config)


SPEC = AlgorithmSpec(
    name="robust",
    summary="Robust DPO: unbiased DPO loss under label noise of rate ε (Chowdhury et al. 2024).",
    config_class=RobustConfig,
    make_loss=make_loss,
)
