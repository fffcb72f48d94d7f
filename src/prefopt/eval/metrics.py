"""Evaluation metrics as pure functions of per-pair numbers (no model, no torch needed).

Notation per pair ``i`` (log-probs summed over completion tokens, EOS included):
``πc, πr`` policy log-probs of the chosen and rejected answer, ``rc, rr`` the reference's,
``lc, lr`` the completion lengths in tokens, ``β`` the DPO inverse temperature and
``Δh = h_l − h_w`` (1: only the rejected answer is hallucinated; −1: only the chosen one;
0: both or neither).

- margin ``m = (πc − πr) − (rc − rr)`` (without a reference, ``rc = rr = 0``)
- implicit rewards ``Rc = β(πc − rc)``, ``Rr = β(πr − rr)``; reward margin ``β·m``
- preference accuracy: share of pairs with ``m > 0`` (the implicit reward prefers chosen)
- log-prob accuracy: share with ``πc > πr`` (the policy itself prefers chosen; per token
  ``πc/lc > πr/lr`` when length-normalised)
- hallucination-preference rate: among pairs with ``Δh = 1``, the share with ``πr > πc`` (per
  token when length-normalised): how often the model's own likelihood favours the
  hallucinated answer.

Judge metrics (factuality scores ``s ∈ [0, 10]`` per answer): mean factuality, hallucination
rate (share with ``s < 5``) and the win rate of B over A on answers to the same prompt,
``wins / (wins + losses)`` with ties excluded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

HALLUCINATION_THRESHOLD = 5.0


@dataclass
class PairScores:
    """Per-pair numbers of one evaluation; all lists have the same length."""

    policy_chosen: list[float]
    policy_rejected: list[float]
    reference_chosen: list[float] | None
    reference_rejected: list[float] | None
    chosen_lengths: list[int]
    rejected_lengths: list[int]
    h_w: list[int] | None = None
    h_l: list[int] | None = None

    def __post_init__(self) -> None:
        self.policy_chosen = _floats(self.policy_chosen)
        self.policy_rejected = _floats(self.policy_rejected)
        if self.reference_chosen is not None:
            self.reference_chosen = _floats(self.reference_chosen)
        if self.reference_rejected is not None:
            self.reference_rejected = _floats(self.reference_rejected)
        n = len(self.policy_chosen)
        for name in (
            "policy_rejected", "reference_chosen", "reference_rejected",
            "chosen_lengths", "rejected_lengths", "h_w", "h_l",
        ):  # fmt: skip
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} values, expected {n}")

    def __len__(self) -> int:
        return len(self.policy_chosen)

    @property
    def has_reference(self) -> bool:
        return self.reference_chosen is not None and self.reference_rejected is not None

    def delta_h(self) -> list[int] | None:
        if self.h_w is None or self.h_l is None:
            return None
        return [int(hl) - int(hw) for hw, hl in zip(self.h_w, self.h_l, strict=True)]


def _floats(values: Any) -> list[float]:
    if hasattr(values, "tolist"):
        values = values.tolist()
    return [float(v) for v in values]


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def chosen_log_ratios(scores: PairScores) -> list[float]:
    """``πc − rc`` per pair (``πc`` without a reference)."""
    if scores.reference_chosen is None:
        return list(scores.policy_chosen)
    return [p - r for p, r in zip(scores.policy_chosen, scores.reference_chosen, strict=True)]


def rejected_log_ratios(scores: PairScores) -> list[float]:
    """``πr − rr`` per pair (``πr`` without a reference)."""
    if scores.reference_rejected is None:
        return list(scores.policy_rejected)
    return [p - r for p, r in zip(scores.policy_rejected, scores.reference_rejected, strict=True)]


def margins(scores: PairScores) -> list[float]:
    """``m = (πc − πr) − (rc − rr)`` per pair."""
    return [
        c - r for c, r in zip(chosen_log_ratios(scores), rejected_log_ratios(scores), strict=True)
    ]


def _compared(scores: PairScores, length_normalize: bool) -> tuple[list[float], list[float]]:
    """Policy log-probs of chosen and rejected, per token when ``length_normalize``."""
    chosen, rejected = scores.policy_chosen, scores.policy_rejected
    if not length_normalize:
        return chosen, rejected
    return (
        [v / max(n, 1) for v, n in zip(chosen, scores.chosen_lengths, strict=True)],
        [v / max(n, 1) for v, n in zip(rejected, scores.rejected_lengths, strict=True)],
    )


def policy_prefers_chosen(scores: PairScores, length_normalize: bool = False) -> list[bool]:
    """Whether the policy's own log-prob (per token if ``length_normalize``) favours chosen."""
    chosen, rejected = _compared(scores, length_normalize)
    return [c > r for c, r in zip(chosen, rejected, strict=True)]


def policy_prefers_rejected(scores: PairScores, length_normalize: bool = False) -> list[bool]:
    """Whether the policy's log-prob strictly favours the rejected answer (ties: no)."""
    chosen, rejected = _compared(scores, length_normalize)
    return [r > c for c, r in zip(chosen, rejected, strict=True)]


def hallucination_preference_rate(
    scores: PairScores, length_normalize: bool = False
) -> tuple[float | None, int]:
    """``(rate, pairs)``: among ``Δh = 1`` pairs, the share whose rejected (hallucinated)
    answer has the higher policy log-prob; ``(None, 0)`` without such pairs or flags."""
    delta_h = scores.delta_h()
    if delta_h is None:
        return None, 0
    prefers = policy_prefers_rejected(scores, length_normalize)
    chosen = [p for p, d in zip(prefers, delta_h, strict=True) if d == 1]
    if not chosen:
        return None, 0
    return sum(chosen) / len(chosen), len(chosen)


def summarize(scores: PairScores, beta: float, length_normalize: bool = False) -> dict[str, Any]:
    """The headline metrics of one evaluation (see the module docstring for definitions)."""
    m = margins(scores)
    chosen_ratio, rejected_ratio = chosen_log_ratios(scores), rejected_log_ratios(scores)
    prefers = policy_prefers_chosen(scores, length_normalize)
    result: dict[str, Any] = {
        "pairs": len(scores),
        "accuracy": mean([1.0 if v > 0 else 0.0 for v in m]),
        "margin": mean(m),
        "reward_margin": mean([beta * v for v in m]),
        "reward_chosen": mean([beta * v for v in chosen_ratio]),
        "reward_rejected": mean([beta * v for v in rejected_ratio]),
        "logps_chosen": mean(scores.policy_chosen),
        "logps_rejected": mean(scores.policy_rejected),
        "logp_accuracy": mean([1.0 if p else 0.0 for p in prefers]),
    }
    if scores.has_reference:
        assert scores.reference_chosen is not None and scores.reference_rejected is not None
        result["ref_logps_chosen"] = mean(scores.reference_chosen)
        result["ref_logps_rejected"] = mean(scores.reference_rejected)
    if scores.delta_h() is not None:
        rate, count = hallucination_preference_rate(scores, length_normalize)
        result["hallucination_preference_rate"] = rate
        result["hallucination_pairs"] = count
    return result


def split_by_delta_h(
    scores: PairScores, beta: float, length_normalize: bool = False
) -> dict[str, Any]:
    """Accuracy, margins and log-prob preference per ``Δh`` group (``"-1"``, ``"0"``, ``"1"``)."""
    delta_h = scores.delta_h()
    if delta_h is None:
        return {}
    return split_by(delta_h, scores, beta, length_normalize)


def split_by(
    groups: Sequence[int], scores: PairScores, beta: float, length_normalize: bool = False
) -> dict[str, Any]:
    """The metrics of :func:`split_by_delta_h` per value of ``groups`` (one per pair, e.g. Δh
    or a conversation's turn number), in increasing order."""
    m = margins(scores)
    prefers = policy_prefers_chosen(scores, length_normalize)
    out: dict[str, Any] = {}
    for value in sorted(set(groups)):
        index = [i for i, group in enumerate(groups) if group == value]
        group_m = [m[i] for i in index]
        out[str(value)] = {
            "pairs": len(index),
            "accuracy": mean([1.0 if v > 0 else 0.0 for v in group_m]),
            "margin": mean(group_m),
            "reward_margin": mean([beta * v for v in group_m]),
            "logp_accuracy": mean([1.0 if prefers[i] else 0.0 for i in index]),
        }
    return out


# -- judge metrics -------------------------------------------------------------------------
def judge_summary(
    scores: Sequence[float], threshold: float = HALLUCINATION_THRESHOLD
) -> dict[str, Any]:
    """Mean factuality and hallucination rate (share of scores below ``threshold``)."""
    values = [float(s) for s in scores]
    return {
        "answers": len(values),
        "mean_factuality": mean(values),
        "hallucination_rate": mean([1.0 if v < threshold else 0.0 for v in values]),
    }


def win_rate(candidate: dict[str, float], baseline: dict[str, float]) -> dict[str, Any]:
    """Win rate of ``candidate`` over ``baseline`` on their common keys, ties excluded."""
    common = [key for key in candidate if key in baseline]
    wins = sum(1 for key in common if candidate[key] > baseline[key])
    losses = sum(1 for key in common if candidate[key] < baseline[key])
    ties = len(common) - wins - losses
    decided = wins + losses
    return {
        "paired": len(common),
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "win_rate": wins / decided if decided else None,
    }
