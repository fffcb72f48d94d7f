"""NLL: the length-normalised negative log-likelihood of the chosen completion.

The supervised term of RPO (Pang, Yuan, Cho, He, Sukhbaatar, Weston, "Iterative Reasoning
Preference Optimization", NeurIPS 2024, https://arxiv.org/abs/2404.19733), and the SFT term
of mixtures such as MPO (Wang et al., "Enhancing the Reasoning Ability of Multimodal Large
Language Models via Mixed Preference Optimization", 2024, https://arxiv.org/abs/2411.10442).
It only raises the likelihood of the chosen answer; the rejected answer and the reference
play no part (``needs_reference=False``).

With ``s_i = log π(y_c,i | x_i)`` the chosen completion's log-prob summed over its tokens and
``n_i`` its length in tokens (both already in :class:`~prefopt.api.PreferenceBatch`)::

    per_pair_i = −s_i / n_i                        (the pair's mean NLL per token)
    loss       = −Σ_i s_i / Σ_i n_i                (reduction "tokens", the default)
    loss       = mean_i(−s_i / n_i)                (reduction "pairs")

"tokens" is TRL's convention for ``rpo_alpha``: its ``nll_loss`` is the cross-entropy over
every chosen completion token of the micro-batch, so long answers weigh more
(``trl.DPOTrainer.concatenated_forward``; ``DPOConfig.rpo_alpha``: "α parameter from the RPO
paper (v3), which controls the weighting of the NLL term in the loss", recommended 1.0).
"pairs" averages each answer's per-token NLL, so every pair weighs the same.

Under data parallelism the loss is this process's micro-batch value, as in TRL: DDP averages
the processes' losses. Typical values: the per-token cross-entropy of the model on its chosen
answers, ~0.5–3 nats for an instruction-tuned model. Shapes: inputs and ``per_pair`` (B,),
``loss`` a scalar.

Used alone (``prefopt train nll``: supervised fine-tuning on the chosen answers through the
preference data flow), as a part of ``mix``, and as ``--rpo-alpha`` of ``dpo`` and ``factual``
(``loss = dpo_loss + rpo_alpha · nll``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import prefopt
from prefopt.api import AlgorithmSpec, LossContext, LossOutput, PreferenceBatch

REDUCTIONS = ("tokens", "pairs")


@dataclass
class NLLConfig:
    reduction: str = field(
        default="tokens",
        metadata={
            "help": "tokens: NLL summed over all chosen tokens / their count (TRL's rpo_alpha "
            "convention); pairs: mean of each pair's per-token NLL."
        },
    )

    def __post_init__(self) -> None:
        if self.reduction not in REDUCTIONS:
            known = ", ".join(REDUCTIONS)
            raise ValueError(f"reduction must be one of {known}, got {self.reduction!r}")


def chosen_nll(batch: PreferenceBatch, reduction: str = "tokens") -> tuple[Any, Any]:
    """``(loss, per_pair)``: the chosen completions' NLL per token, reduced as ``reduction``
    (``"tokens"`` or ``"pairs"``, see the module docstring). Lengths of 0 count as 1 token, so
    an empty completion (dropped at tokenization, never expected here) cannot divide by 0."""
    logps = batch.policy_chosen_logps
    lengths = batch.chosen_lengths.to(device=logps.device, dtype=logps.dtype).clamp_min(1)
    per_pair = -logps / lengths
    if reduction == "pairs":
        return per_pair.mean(), per_pair
    return -logps.sum() / lengths.sum(), per_pair


class NLLLoss:
    """Length-normalised NLL of the chosen completion (stateless)."""

    def __init__(self, config: NLLConfig) -> None:
        self.config = config

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        import torch

        loss, per_pair = chosen_nll(batch, self.config.reduction)
        return LossOutput(loss=loss, per_pair=per_pair, weights=torch.ones_like(per_pair))


def make_loss(config: NLLConfig, ctx: LossContext | None = None) -> NLLLoss:
    return NLLLoss(config)


def run_name(config: NLLConfig, model_short: str) -> str:
    return f"NLL_{model_short}"


SPEC = AlgorithmSpec(
    name="nll",
    summary="NLL of the chosen answer per token (RPO's / SFT's term); reference-free.",
    config_class=NLLConfig,
    make_loss=make_loss,
    needs_reference=False,
    run_name=run_name,
)


@prefopt.hookimpl
def prefopt_algorithms() -> list[AlgorithmSpec]:
    return [SPEC]
