"""How well a model's implicit rewards order lists of ranked responses.

For each list, the rewards ``r`` (β·(log π − log π_ref), or β·log π without a reference) are
compared with the true quality ``q`` (scores, or negated ranks; equal values are ties):

- **ranking accuracy**: over every ordered pair (``q_i > q_j``; tied responses form none), the
  share with ``r_i > r_j``; pooled over all lists;
- **Kendall τ** (τ-b, which accounts for ties): per list, (concordant − discordant) /
  √((n₀ − ties in q)(n₀ − ties in r)) over its n₀ = N(N − 1)/2 response pairs; the mean over the
  lists where it is defined (a list tied throughout has none);
- **top-1 accuracy**: the share of lists whose highest-reward response is one of the best
  (any of the tied best); when several responses share the highest reward, each counts for
  its share; lists all tied in quality are left out;
- **by position** (``ranking_accuracy[position=k]``): the ranking accuracy of the ordered
  pairs whose better response holds true position k (1 = best; a tied response takes the best
  position of its tie group).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any


def _ordered_pairs(quality: Sequence[float]) -> list[tuple[int, int]]:
    return [
        (i, j) for i in range(len(quality)) for j in range(len(quality)) if quality[i] > quality[j]
    ]


def position(quality: Sequence[float], index: int) -> int:
    """1 + the number of responses strictly better than ``index``."""
    return 1 + sum(value > quality[index] for value in quality)


def kendall_tau_b(rewards: Sequence[float], quality: Sequence[float]) -> float | None:
    """Kendall's τ-b between ``rewards`` and ``quality``; ``None`` when either is constant."""
    concordant = discordant = tied_r = tied_q = pairs = 0
    for i in range(len(rewards)):
        for j in range(i + 1, len(rewards)):
            pairs += 1
            dq, dr = quality[i] - quality[j], rewards[i] - rewards[j]
            if dq == 0:
                tied_q += 1
            if dr == 0:
                tied_r += 1
            if dq * dr > 0:
                concordant += 1
            elif dq * dr < 0:
                discordant += 1
    denominator = math.sqrt((pairs - tied_q) * (pairs - tied_r))
    return None if denominator == 0 else (concordant - discordant) / denominator


def ranking_metrics(
    rewards: Sequence[Sequence[float]], qualities: Sequence[Sequence[float]]
) -> dict[str, Any]:
    """The metrics of the module docstring over lists of ``rewards`` and true ``qualities``."""
    right = total = ranked = 0
    top1 = 0.0
    taus: list[float] = []
    by_position: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for r, q in zip(rewards, qualities, strict=True):
        for i, j in _ordered_pairs(q):
            hit = int(r[i] > r[j])
            right += hit
            total += 1
            counts = by_position[position(q, i)]
            counts[0] += hit
            counts[1] += 1
        if max(q) != min(q):  # a list all tied has no best to find
            top = [index for index in range(len(r)) if r[index] == max(r)]
            top1 += sum(q[index] == max(q) for index in top) / len(top)
            ranked += 1
        tau = kendall_tau_b(r, q)
        if tau is not None:
            taus.append(tau)
    results: dict[str, Any] = {
        "lists": len(rewards),
        "ordered_pairs": total,
        "ranking_accuracy": right / total if total else None,
        "kendall_tau": sum(taus) / len(taus) if taus else None,
        "top1_accuracy": top1 / ranked if ranked else None,
    }
    for k, (hits, count) in sorted(by_position.items()):
        results[f"ranking_accuracy[position={k}]"] = hits / count
    return results
