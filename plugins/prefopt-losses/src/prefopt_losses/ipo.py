"""IPO: Identity Preference Optimisation, a squared loss that regresses the margin.

Azar et al., "A General Theoretical Paradigm to Understand Learning from Human Preferences",
AISTATS 2024, https://arxiv.org/abs/2310.12036 (Eq. 17).

Per pair, with ``ℓ(y) = log π(y|x) − log π_ref(y|x)`` divided by the number of completion
tokens ``|y|`` when ``length_normalize`` is on (the default, as in the authors' experiments)::

    h    = ℓ(y_c)/|y_c| − ℓ(y_r)/|y_r|
    loss = (h − 1/(2τ))²

Unlike DPO's sigmoid, the loss does not vanish once the margin is large: it pulls ``h`` to
the target ``1/(2τ)`` and no further, which is what keeps IPO from overfitting
deterministic preferences.

Parameters: ``beta`` is the paper's τ, the regularisation strength, typically 0.01–1 (0.1
puts the target at 5 nats per token of margin; larger τ, smaller target, stronger pull toward
the reference). ``length_normalize`` off uses summed log-probs (the target then does not scale
with length). Implicit rewards: ``τ·ℓ(y)`` (normalised like ``h``). Shapes: inputs and
``per_pair`` are (B,); ``loss`` is a scalar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefopt.api import AlgorithmSpec, LossContext, LossOutput, PreferenceBatch

from prefopt_losses._common import check_positive, log_ratios, output


@dataclass
class IPOConfig:
    beta: float = field(
        default=0.1,
        metadata={"help": "IPO's τ: the target margin is 1/(2τ) (0.01–1)."},
    )
    length_normalize: bool = field(
        default=True,
        metadata={"help": "Average log-probs over completion tokens before the margin."},
    )

    def __post_init__(self) -> None:
        check_positive("beta", self.beta)


def ipo_loss(margin: Any, beta: float) -> Any:
    """``(h − 1/(2τ))²`` elementwise."""
    return (margin - 1.0 / (2.0 * beta)) ** 2


class IPOLoss:
    def __init__(self, config: IPOConfig) -> None:
        self.config = config

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        chosen, rejected = log_ratios(batch, self.config.length_normalize)
        beta = self.config.beta
        return output(ipo_loss(chosen - rejected, beta), beta * chosen, beta * rejected)


def make_loss(config: IPOConfig, ctx: LossContext | None = None) -> IPOLoss:
    return IPOLoss(config)


SPEC = AlgorithmSpec(
    name="ipo",
    summary="IPO: squared loss pulling the per-token margin to 1/(2τ) (Azar et al. 2023).",
    config_class=IPOConfig,
    make_loss=make_loss,
)
