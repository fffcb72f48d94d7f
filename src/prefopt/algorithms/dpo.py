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

RPO (``rpo_alpha`` = α > 0): Pang et al., "Iterative Reasoning Preference Optimization",
NeurIPS 2024, https://arxiv.org/abs/2404.19733, adds the NLL of the chosen answer::

    loss = mean_i(DPO loss_i) + α · nll,    nll = −Σ_i log π(y_c,i|x_i) / Σ_i |y_c,i|

with ``nll`` the per-token NLL of the batch's chosen completions
(:func:`prefopt.algorithms.nll.chosen_nll`, reduction "tokens"): TRL's ``rpo_alpha``
convention (``loss = dpo_losses + rpo_alpha · nll_loss``, its ``nll_loss`` the cross-entropy
over the chosen completion tokens). ``per_pair`` then adds α times each pair's own per-token
NLL. The paper uses α = 1; 0 (the default) is plain DPO, computed exactly as without RPO.
Metric ``nll_loss`` when α > 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import prefopt
from prefopt.algorithms.nll import chosen_nll
from prefopt.api import AlgorithmSpec, LossContext, LossOutput, PreferenceBatch

RPO_ALPHA_HELP = (
    "RPO: weight α of the chosen answer's per-token NLL added to the loss (0 = off; the "
    "RPO paper uses 1)."
)


def check_rpo_alpha(rpo_alpha: float) -> None:
    if not math.isfinite(rpo_alpha) or rpo_alpha < 0:
        raise ValueError(f"rpo_alpha must be a finite number >= 0, got {rpo_alpha}")


def add_rpo_term(output: LossOutput, batch: PreferenceBatch, rpo_alpha: float) -> LossOutput:
    """``output`` with ``rpo_alpha · nll`` added to its loss and per-pair losses (see the
    module docstring); unchanged when ``rpo_alpha`` is 0."""
    if not rpo_alpha:
        return output
    nll, nll_per_pair = chosen_nll(batch, "tokens")
    output.loss = output.loss + rpo_alpha * nll
    output.per_pair = output.per_pair + rpo_alpha * nll_per_pair
    output.metrics["nll_loss"] = nll.detach()
    return output


@dataclass
class DPOConfig:
    beta: float = field(default=0.1, metadata={"help": "Inverse temperature β (0.01–0.5)."})
    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "cDPO label smoothing ε, the assumed share of flipped labels (0–0.5)."},
    )
    rpo_alpha: float = field(default=0.0, metadata={"help": RPO_ALPHA_HELP})

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        check_rpo_alpha(self.rpo_alpha)


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
        output = LossOutput(
            loss=per_pair.mean(),
            per_pair=per_pair,
            weights=torch.ones_like(per_pair),
            metrics={},
            chosen_rewards=beta * batch.chosen_log_ratio().detach(),
            rejected_rewards=beta * batch.rejected_log_ratio().detach(),
        )
        return add_rpo_term(output, batch, self.config.rpo_alpha)


def make_loss(config: DPOConfig, ctx: LossContext | None = None) -> DPOLoss:
    return DPOLoss(config)


def _run_name(config: DPOConfig, model_short: str) -> str:
    return f"DPO_{model_short}"


SPEC = AlgorithmSpec(
    name="dpo",
    summary="Direct Preference Optimization (sigmoid loss, optional cDPO label smoothing, RPO).",
    config_class=DPOConfig,
    make_loss=make_loss,
    run_name=_run_name,
)


@prefopt.hookimpl
def prefopt_algorithms() -> list[AlgorithmSpec]:
    return [SPEC]
