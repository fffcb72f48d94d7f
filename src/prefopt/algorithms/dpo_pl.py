"""DPO-PL: DPO under the Plackett-Luce model, over a whole ranking of responses.

Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward
Model", NeurIPS 2023, appendix A.3, https://arxiv.org/abs/2305.18290.

A list of K responses ranked ``τ(1) ≻ τ(2) ≻ ... ≻ τ(K)`` (best first), with implicit rewards
``r_k = β·(log π(y_k|x) − log π_ref(y_k|x))``, has Plackett-Luce likelihood
``Π_k exp(r_τ(k)) / Σ_{j ≥ k} exp(r_τ(j))``; the loss is its negative logarithm::

    loss(list) = −Σ_{k=1}^{K−1} [ r_τ(k) − log Σ_{j=k}^{K} exp(r_τ(j)) ]

averaged over the lists of the batch. **Ties** (equal scores or ranks) follow Breslow's rule
for the denominators: a response's denominator holds every response not better than it, tied
ones included. Unlike plain Breslow, a response better than none (the last, or each of a
tied last group) adds no term, so tied responses are never pushed apart. With K = 2 the loss is
``−log σ(β·m)``, plain DPO, exactly; on pair data every pair is such a list of two.

Parameter: ``beta`` (β) the inverse temperature, 0.01–0.5 (0.1 common). Shapes: responses
(S,), lists given by offsets (L + 1,); ``loss`` is a scalar, the mean over lists
(:mod:`prefopt.algorithms.whole_lists`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import prefopt
from prefopt.algorithms.whole_lists import WholeListLoss, pair_lists
from prefopt.api import AlgorithmSpec, LossContext

__all__ = ["DPOPLConfig", "DPOPLLoss", "pair_lists", "plackett_luce_nll"]


@dataclass
class DPOPLConfig:
    beta: float = field(default=0.1, metadata={"help": "Inverse temperature β (0.01–0.5)."})

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")


def plackett_luce_nll(rewards: Any, quality: Any, offsets: Any) -> Any:
    """``(L,)``: each list's negative Plackett-Luce log-likelihood of its ranking (best first
    by ``quality``, ties by Breslow's rule) under ``rewards`` (S,)."""
    import torch

    losses = []
    bounds = offsets.tolist()
    for start, end in zip(bounds, bounds[1:], strict=False):
        r, q = rewards[start:end], quality[start:end]
        not_better = q.unsqueeze(0) <= q.unsqueeze(1)  # row k: responses not better than k
        beaten = (q.unsqueeze(0) < q.unsqueeze(1)).any(dim=1)  # k is better than someone
        masked = r.unsqueeze(0).masked_fill(~not_better, float("-inf"))
        terms = r - torch.logsumexp(masked, dim=1)
        losses.append(-(terms * beaten).sum())
    return torch.stack(losses)


class DPOPLLoss(WholeListLoss):
    """The Plackett-Luce loss over each list's ranking (see the module docstring)."""

    def per_list(self, rewards: Any, quality: Any, offsets: Any) -> Any:
        return plackett_luce_nll(rewards, quality, offsets)


def make_loss(config: DPOPLConfig, ctx: LossContext | None = None) -> DPOPLLoss:
    return DPOPLLoss(config)


SPEC = AlgorithmSpec(
    name="dpo-pl",
    summary="DPO over whole rankings (Plackett-Luce); lists of ranked responses or pairs.",
    config_class=DPOPLConfig,
    make_loss=make_loss,
)


@prefopt.hookimpl
def prefopt_algorithms() -> list[AlgorithmSpec]:
    return [SPEC]
