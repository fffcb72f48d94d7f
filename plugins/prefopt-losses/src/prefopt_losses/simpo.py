"""SimPO: reference-free preference optimisation with length-normalised rewards.

Meng, Xia and Chen, "SimPO: Simple Preference Optimization with a Reference-Free Reward",
NeurIPS 2024, https://arxiv.org/abs/2405.14734.

Per pair, with ``|y|`` the number of completion tokens (EOS included)::

    r_c  = β/|y_c| · log π(y_c|x)
    r_r  = β/|y_r| · log π(y_r|x)
    loss = −log σ(r_c − r_r − γ),   γ = gamma_beta_ratio · β

No reference model: the spec sets ``needs_reference=False``, so prefopt skips the reference
forward pass (and never loads a frozen copy); the batch's reference fields are ``None``.
Averaging over tokens removes DPO's bias toward long answers; the target margin γ keeps
pushing pairs apart until their reward gap exceeds it.

Parameters: ``beta`` (β) 2.0–10 (the paper uses 2.0–2.5 for most models, larger for
Gemma-2); ``gamma_beta_ratio`` (γ/β) 0.3–1.0, 0.5 a good start. SimPO is sensitive to the
learning rate (the paper tunes it in 3e-7–1e-6 for 7–8B models). Implicit rewards: ``r_c``,
``r_r``. Shapes: inputs and ``per_pair`` are (B,); ``loss`` is a scalar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefopt.api import AlgorithmSpec, LossContext, LossOutput, PreferenceBatch

from prefopt_losses._common import check_interval, check_positive, output


@dataclass
class SimPOConfig:
    beta: float = field(default=2.0, metadata={"help": "Reward scale β (2.0–10)."})
    gamma_beta_ratio: float = field(
        default=0.5,
        metadata={"help": "Target reward margin as a multiple of β, γ/β (0.3–1.0)."},
    )

    def __post_init__(self) -> None:
        check_positive("beta", self.beta)
        check_interval(
            "gamma_beta_ratio", self.gamma_beta_ratio, 0.0, 100.0, low_open=False, high_open=False
        )


def simpo_loss(chosen_rewards: Any, rejected_rewards: Any, gamma: float) -> Any:
    """``−log σ(r_c − r_r − γ)`` elementwise."""
    import torch.nn.functional as F

    return -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)


class SimPOLoss:
    def __init__(self, config: SimPOConfig) -> None:
        self.config = config

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        beta = self.config.beta
        # Policy log-probs only: a reference, even if one were computed, plays no part.
        chosen = batch.policy_chosen_logps
        rejected = batch.policy_rejected_logps
        r_c = beta * chosen / batch.chosen_lengths.clamp(min=1).to(chosen.dtype)
        r_r = beta * rejected / batch.rejected_lengths.clamp(min=1).to(rejected.dtype)
        gamma = self.config.gamma_beta_ratio * beta
        return output(simpo_loss(r_c, r_r, gamma), r_c, r_r)


def make_loss(config: SimPOConfig, ctx: LossContext | None = None) -> SimPOLoss:
    return SimPOLoss(config)


SPEC = AlgorithmSpec(
    name="simpo",
    summary="SimPO: reference-free, length-normalised rewards with a target margin γ.",
    config_class=SimPOConfig,
    make_loss=make_loss,
    needs_reference=False,
)
