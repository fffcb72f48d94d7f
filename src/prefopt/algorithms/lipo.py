"""LiPO-λ: pairwise logistic losses over a whole ranking, weighted by LambdaLoss's λ weights.

Liu et al., "LiPO: Listwise Preference Optimization through Learning-to-Rank", 2024,
https://arxiv.org/abs/2402.01878 (LiPO-λ); the weights are LambdaLoss's: Wang et al., "The
LambdaLoss Framework for Ranking Metric Optimization", CIKM 2018.

A list of K responses with labels ψ (higher is better) and implicit rewards
``s_i = β·(log π(y_i|x) − log π_ref(y_i|x))`` has the loss::

    loss(list) = Σ_{ψ_i > ψ_j} Δ_ij · (−log σ(s_i − s_j))
    Δ_ij       = |G_i − G_j| · |1/D(τ(i)) − 1/D(τ(j))|,   G_i = 2^ψ_i − 1,   D(τ) = log2(1 + τ)

averaged over the lists of the batch (the paper's objective: the expectation over lists of
each list's sum over its pairs; no division by the pair count or the ideal DCG). τ(i) is
response i's 1-based position when the list is sorted by ``s``, highest first: the policy's
current ranking. Δ_ij is the size of the change of the list's DCG if i and j swapped places;
it is computed without gradient (positions are piecewise constant in ``s``).

Choices the paper leaves open, or that this project's data forces:

- **Labels.** A batch carries each list's order only (``lists.quality``, ties equal). ψ_i is
  response i's win rate within its list, a tie counting one half::

      ψ_i = (#{j: q_j < q_i} + ½·#{j ≠ i: q_j = q_i}) / (K − 1)      in [0, 1]

  The paper's labels are each response's averaged win probability against the list's other
  responses under a pairwise ranking model; this is that label for a certain judge, and it
  is the same for ``scores`` and ``ranking`` records. A strict ranking gives the response at
  position r ψ = (K − r)/(K − 1). ψ keeps the order exactly (ψ_i > ψ_j iff q_i > q_j), so
  the pairs are those of the ranking; tied responses share ψ, hence G, and form no pair.
  Gains stay within [0, 1] whatever K (levels counted from the worst would give the best of
  L levels G = 2^(L−1) − 1).
- **Log base.** log2, so D(1) = 1 as in DCG. The paper writes ``log``; the natural log would
  multiply every Δ by 1/ln 2 ≈ 1.44, a constant rescaling of the loss and nothing else.
- **Ties in s.** Broken by the label (better first), then by the position in the list: a
  stable order under which the loss does not depend on the order a record lists its
  responses. Ties matter: at step 0 the policy is the reference and every s is 0 (exactly,
  when the reference ran in the same batch; a cached reference leaves rounding noise, which
  then orders the positions); shared (averaged) positions would make every Δ 0 and nothing
  would train. This tie-break gives the ideal order, where Δ is LambdaRank's |ΔDCG| of
  swapping i and j.

**K = 2**, and pair data (each pair a list of two, ``whole_lists.pair_lists``): ψ = (1, 0),
G = (1, 0), and τ is (1, 2) or (2, 1), so whatever the rewards
Δ = |1/log2(2) − 1/log2(3)| = 1 − 1/log2(3) = c ≈ 0.3691 and the loss is ``c·(−log σ(β·m))``:
DPO scaled by the constant c (DPO's gradients times c), ``PAIR_WEIGHT`` here.

Parameter: ``beta`` (β) the inverse temperature, 0.01–0.5 (0.1 common). Shapes: responses
(S,), lists given by offsets (L + 1,); ``loss`` is a scalar, the mean over lists
(:mod:`prefopt.algorithms.whole_lists`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import prefopt
from prefopt.algorithms.whole_lists import WholeListLoss
from prefopt.api import AlgorithmSpec, LossContext

#: Δ of a list of two, 1 − 1/log2(3): LiPO-λ on a pair is this times DPO's loss.
PAIR_WEIGHT = 1.0 - 1.0 / math.log2(3.0)


@dataclass
class LiPOConfig:
    beta: float = field(default=0.1, metadata={"help": "Inverse temperature β (0.01–0.5)."})

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")


def win_rate_labels(quality: Any, dtype: Any = None) -> Any:
    """``(K,)``: each response's label ψ, its win rate against the list's other responses
    (a tie counts one half), from ``quality`` (K,) (higher is better); ``dtype`` defaults to
    torch's default float type."""
    import torch

    better = quality.unsqueeze(1) > quality.unsqueeze(0)
    tied = quality.unsqueeze(1) == quality.unsqueeze(0)
    twice_wins = 2 * better.sum(1) + tied.sum(1) - 1  # a tie counts 1 here, itself 0
    others = max(int(quality.shape[0]) - 1, 1)
    return twice_wins.to(dtype or torch.get_default_dtype()) / (2 * others)


def positions(rewards: Any, quality: Any) -> Any:
    """``(K,)``: each response's 1-based position τ sorted by ``rewards`` (highest first),
    ties broken by ``quality`` (better first), then by the index in the list."""
    import torch

    s_i, s_j = rewards.unsqueeze(1), rewards.unsqueeze(0)
    q_i, q_j = quality.unsqueeze(1), quality.unsqueeze(0)
    index = torch.arange(int(rewards.shape[0]), device=rewards.device)
    earlier = index.unsqueeze(0) < index.unsqueeze(1)  # [i, j]: j comes before i
    ahead = (s_j > s_i) | ((s_j == s_i) & ((q_j > q_i) | ((q_j == q_i) & earlier)))
    return 1 + ahead.sum(1)


def lambda_weights(rewards: Any, quality: Any) -> Any:
    """``(K, K)``: Δ_ij = |G_i − G_j|·|1/D(τ(i)) − 1/D(τ(j))| (no gradient)."""
    import torch

    with torch.no_grad():
        rewards = rewards.detach()
        gains = torch.pow(2.0, win_rate_labels(quality, rewards.dtype)) - 1
        inverse_discount = 1 / torch.log2(1 + positions(rewards, quality).to(rewards.dtype))
        gain_gap = (gains.unsqueeze(1) - gains.unsqueeze(0)).abs()
        return gain_gap * (inverse_discount.unsqueeze(1) - inverse_discount.unsqueeze(0)).abs()


def lipo_lambda_loss(rewards: Any, quality: Any, offsets: Any) -> Any:
    """``(L,)``: each list's LiPO-λ loss (a sum over its pairs) under ``rewards`` (S,)."""
    import torch
    import torch.nn.functional as F

    losses = []
    bounds = offsets.tolist()
    for start, end in zip(bounds, bounds[1:], strict=False):
        s, q = rewards[start:end], quality[start:end]
        better = q.unsqueeze(1) > q.unsqueeze(0)  # [i, j]: i is better than j
        weights = lambda_weights(s, q) * better
        pair_losses = F.softplus(s.unsqueeze(0) - s.unsqueeze(1))  # −log σ(s_i − s_j)
        losses.append((weights * pair_losses).sum())
    return torch.stack(losses)


class LiPOLoss(WholeListLoss):
    """The LiPO-λ loss over each list's ranking (see the module docstring)."""

    def per_list(self, rewards: Any, quality: Any, offsets: Any) -> Any:
        return lipo_lambda_loss(rewards, quality, offsets)


def make_loss(config: LiPOConfig, ctx: LossContext | None = None) -> LiPOLoss:
    return LiPOLoss(config)


SPEC = AlgorithmSpec(
    name="lipo",
    summary="LiPO-λ: pairwise losses over whole rankings with LambdaLoss (ΔDCG) weights.",
    config_class=LiPOConfig,
    make_loss=make_loss,
)


@prefopt.hookimpl
def prefopt_algorithms() -> list[AlgorithmSpec]:
    return [SPEC]
