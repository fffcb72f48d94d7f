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
(S,), lists given by offsets (L + 1,); ``loss`` is a scalar. ``per_pair`` gives each of the
batch's pairs (``lists.pairs``) its list's loss shared evenly among that list's pairs, for the
logs; the rewards logged are those of the pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import prefopt
from prefopt.api import AlgorithmSpec, LossContext, LossOutput, PreferenceBatch, ResponseLists


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


def pair_lists(batch: PreferenceBatch) -> ResponseLists:
    """Pair data as lists of two (chosen, rejected), for the same loss."""
    import torch

    size = batch.size

    def interleave(chosen: Any, rejected: Any) -> Any:
        return torch.stack([chosen, rejected], 1).flatten()

    quality = torch.tensor([1.0, 0.0], device=batch.policy_chosen_logps.device).repeat(size)
    reference = (
        None
        if batch.reference_chosen_logps is None or batch.reference_rejected_logps is None
        else interleave(batch.reference_chosen_logps, batch.reference_rejected_logps)
    )
    return ResponseLists(
        policy_logps=interleave(batch.policy_chosen_logps, batch.policy_rejected_logps),
        reference_logps=reference,
        lengths=interleave(batch.chosen_lengths, batch.rejected_lengths),
        quality=quality,
        offsets=torch.arange(0, 2 * size + 1, 2, device=quality.device),
        pair_list=torch.arange(size, device=quality.device),
    )


class DPOPLLoss:
    """The Plackett-Luce loss over each list's ranking (see the module docstring)."""

    def __init__(self, config: DPOPLConfig) -> None:
        self.config = config

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        import torch

        lists = batch.lists if batch.lists is not None else pair_lists(batch)
        beta = self.config.beta
        rewards = beta * lists.log_ratios()
        per_list = plackett_luce_nll(rewards, lists.quality, lists.offsets)
        pairs_per_list = torch.bincount(lists.pair_list, minlength=lists.count).clamp(min=1)
        per_pair = (per_list / pairs_per_list)[lists.pair_list]
        return LossOutput(
            loss=per_list.mean(),
            per_pair=per_pair,
            weights=torch.ones_like(per_pair),
            metrics={},
            chosen_rewards=beta * batch.chosen_log_ratio().detach(),
            rejected_rewards=beta * batch.rejected_log_ratio().detach(),
        )


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
