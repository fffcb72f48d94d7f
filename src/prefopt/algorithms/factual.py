"""Factual-DPO: DPO with a factuality margin.

Each pair carries hallucination flags ``h_w`` (chosen) and ``h_l`` (rejected), 1 when that
answer contains a factual error. With ``Δh = h_l − h_w`` the pair's logit is shifted by a
margin ``Δ`` whenever the rejected answer is the hallucinated one, so the policy must prefer
the factual answer by at least ``Δ`` nats (in log-ratio units) before the loss lets go.
Per pair, with log-probs summed over completion tokens::

    m    = (log π(y_w|x) − log π(y_l|x)) − (log π_ref(y_w|x) − log π_ref(y_l|x))
    z    = m − Δ · Δh
    loss = −(1 − ε) · log σ(β·z) − ε · log σ(−β·z)

With ``Δ = 0`` this is exactly DPO (and cDPO for ε > 0). The data must be in the factual
orientation (``h_w ≤ h_l``: a hallucinated answer is never the chosen one); ``prefopt data
flip`` swaps the pairs that are not.

Parameters: ``beta`` (β) inverse temperature, 0.01–0.5 (0.1 common); ``delta`` (Δ ≥ 0) the
factuality margin, typically swept over 0–100 (larger values weigh the factual pairs more,
e.g. 2–10 moderate, 50–100 strong); ``label_smoothing`` (ε) 0 ≤ ε < 0.5.

Metrics: the implicit rewards ``β·(log π − log π_ref)`` exclude the Δ shift;
``factual/delta_h_fraction`` is the share of pairs with Δh = 1 and
``factual/margin_below_delta`` the share of those whose margin m is still below Δ.
Shapes: every input and ``per_pair`` is (B,); ``loss`` is a scalar.

RPO (``rpo_alpha`` = α > 0): ``loss = mean_i(loss_i) + α · nll`` with ``nll`` the per-token
NLL of the batch's chosen completions, exactly as for DPO (see :mod:`prefopt.algorithms.dpo`;
Pang et al., https://arxiv.org/abs/2404.19733; TRL's ``rpo_alpha`` convention). Default 0.

Paper: Chaduvula, Radwan, Farooq, Ioannou, Raza, "Reducing Hallucinations in LLMs via
Factuality-Aware Preference Learning" (F-DPO), 2026, https://arxiv.org/abs/2601.03027.
DPO: Rafailov et al., NeurIPS 2023, https://arxiv.org/abs/2305.18290.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import prefopt
from prefopt.algorithms.common import format_number, gather_detached, sigmoid_preference_loss
from prefopt.algorithms.dpo import RPO_ALPHA_HELP, add_rpo_term, check_rpo_alpha
from prefopt.api import SINGLE_PROCESS, AlgorithmSpec, LossContext, LossOutput, PreferenceBatch
from prefopt.errors import UsageError

H_COLUMNS = ("h_w", "h_l")


@dataclass
class FactualConfig:
    beta: float = field(default=0.1, metadata={"help": "Inverse temperature β (0.01–0.5)."})
    delta: float = field(
        default=0.0,
        metadata={"help": "Factuality margin Δ ≥ 0 added for pairs with h_l − h_w = 1 (0–100)."},
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "cDPO label smoothing ε, the assumed share of flipped labels (0–0.5)."},
    )
    rpo_alpha: float = field(default=0.0, metadata={"help": RPO_ALPHA_HELP})

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.delta < 0:
            raise ValueError(f"delta must be >= 0, got {self.delta}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        check_rpo_alpha(self.rpo_alpha)


class FactualDPOLoss:
    """Sigmoid DPO loss on the margin shifted by ``Δ·(h_l − h_w)``."""

    def __init__(self, config: FactualConfig, ctx: LossContext | None = None) -> None:
        self.config = config
        self.ctx = ctx or SINGLE_PROCESS

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        import torch

        beta, delta = self.config.beta, self.config.delta
        margin = batch.logits_margin()
        delta_h = (batch.extras["h_l"] - batch.extras["h_w"]).to(margin.dtype)
        per_pair = sigmoid_preference_loss(
            beta * (margin - delta * delta_h), self.config.label_smoothing
        )
        output = LossOutput(
            loss=per_pair.mean(),
            per_pair=per_pair,
            weights=torch.ones_like(per_pair),
            metrics=self._metrics(margin, delta_h),
            chosen_rewards=beta * batch.chosen_log_ratio().detach(),
            rejected_rewards=beta * batch.rejected_log_ratio().detach(),
        )
        return add_rpo_term(output, batch, self.config.rpo_alpha)

    def _metrics(self, margin: Any, delta_h: Any) -> dict[str, float]:
        margin = gather_detached(self.ctx, margin)
        factual = gather_detached(self.ctx, delta_h) > 0.5
        metrics = {"factual/delta_h_fraction": float(factual.float().mean())}
        if bool(factual.any()):  # undefined for a batch without Δh = 1 pairs: not logged
            below = margin[factual] < self.config.delta
            metrics["factual/margin_below_delta"] = float(below.float().mean())
        return metrics


def make_loss(config: FactualConfig, ctx: LossContext | None = None) -> FactualDPOLoss:
    return FactualDPOLoss(config, ctx)


def run_name(config: FactualConfig, model_short: str) -> str:
    return f"FactualDPO_{model_short}_delta{format_number(config.delta)}"


def validate_records(rows: list[tuple[int, dict[str, Any]]], path: str) -> None:
    """Refuse flags that are not 0/1 (``file:line: h_l: ...``, the check ``data flip`` and
    ``data validate`` use) and data in the wrong orientation: any pair with ``h_w > h_l``."""
    from prefopt.data.flip import h_value

    wrong = [
        line
        for line, row in rows
        if h_value(row, "h_w", path, line) > h_value(row, "h_l", path, line)
    ]
    if wrong:
        shown = ", ".join(str(line) for line in wrong[:5]) + (", ..." if len(wrong) > 5 else "")
        raise UsageError(
            f"{path}: {len(wrong)} of {len(rows)} pairs have h_w > h_l (lines {shown}); "
            "Factual-DPO needs the hallucinated answer on the rejected side: "
            f"run `prefopt data flip {path}` and train on the flipped file it writes"
        )


SPEC = AlgorithmSpec(
    name="factual",
    summary="Factual-DPO: DPO with a margin Δ for pairs whose rejected answer hallucinates.",
    config_class=FactualConfig,
    make_loss=make_loss,
    extra_columns=H_COLUMNS,
    run_name=run_name,
    validate_records=validate_records,
)


@prefopt.hookimpl
def prefopt_algorithms() -> list[AlgorithmSpec]:
    return [SPEC]
