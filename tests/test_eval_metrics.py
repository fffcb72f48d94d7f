"""Evaluation metrics on hand-made numbers, checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prefopt.eval.metrics import (
    PairScores,
    hallucination_preference_rate,
    judge_summary,
    margins,
    split_by_delta_h,
    summarize,
    win_rate,
)

# Five pairs. Margins m = (pc - pr) - (rc - rr):
#   0: (-10 - -12) - (-11 - -11) =  2      Δh = 1  (h_w=0, h_l=1)
#   1: (-8  - -6 ) - (-9  - -6 ) =  1      Δh = 1
#   2: (-5  - -4 ) - (-5  - -5 ) = -1      Δh = 0  (0, 0)
#   3: (-20 - -10) - (-20 - -12) = -2      Δh = 1
#   4: (-3  - -3 ) - (-4  - -4 ) =  0      Δh = -1 (1, 0)
PC = [-10.0, -8.0, -5.0, -20.0, -3.0]
PR = [-12.0, -6.0, -4.0, -10.0, -3.0]
RC = [-11.0, -9.0, -5.0, -20.0, -4.0]
RR = [-11.0, -6.0, -5.0, -12.0, -4.0]
LC = [5, 2, 5, 10, 3]
LR = [4, 6, 2, 2, 3]
HW = [0, 0, 0, 0, 1]
HL = [1, 1, 0, 1, 0]


def scores(**overrides: object) -> PairScores:
    values: dict[str, object] = dict(
        policy_chosen=PC,
        policy_rejected=PR,
        reference_chosen=RC,
        reference_rejected=RR,
        chosen_lengths=LC,
        rejected_lengths=LR,
        h_w=HW,
        h_l=HL,
    )
    values.update(overrides)
    return PairScores(**values)  # type: ignore[arg-type]


def test_margins_match_the_definition() -> None:
    expected = (np.array(PC) - np.array(PR)) - (np.array(RC) - np.array(RR))
    assert margins(scores()) == pytest.approx(expected.tolist())
    assert margins(scores()) == [2.0, 1.0, -1.0, -2.0, 0.0]


def test_summary_by_hand() -> None:
    beta = 0.5
    result = summarize(scores(), beta)
    assert result["pairs"] == 5
    assert result["accuracy"] == pytest.approx(2 / 5)  # m > 0 strictly: pairs 0 and 1
    assert result["margin"] == pytest.approx(0.0)
    assert result["reward_margin"] == pytest.approx(0.0)
    # β·(pc − rc) = 0.5·[1, 1, 0, 0, 1] → mean 0.3; β·(pr − rr) = 0.5·[-1, 0, 1, 2, 1] → 0.3
    assert result["reward_chosen"] == pytest.approx(0.3)
    assert result["reward_rejected"] == pytest.approx(0.3)
    assert result["logps_chosen"] == pytest.approx(np.mean(PC))
    assert result["logps_rejected"] == pytest.approx(np.mean(PR))
    assert result["ref_logps_chosen"] == pytest.approx(np.mean(RC))
    # policy prefers chosen (pc > pr): pair 0 only
    assert result["logp_accuracy"] == pytest.approx(1 / 5)
    # Δh = 1 pairs: 0, 1, 3; pr > pc in pairs 1 and 3
    assert result["hallucination_preference_rate"] == pytest.approx(2 / 3)
    assert result["hallucination_pairs"] == 3


def test_length_normalised_hallucination_preference() -> None:
    # per token: pair 0: -2 vs -3 (chosen), pair 1: -4 vs -1 (rejected), pair 3: -2 vs -5
    rate, count = hallucination_preference_rate(scores(), length_normalize=True)
    assert (rate, count) == (pytest.approx(1 / 3), 3)
    summary = summarize(scores(), 0.1, length_normalize=True)
    # per token chosen > rejected: pairs 0 (-2 > -3), 2 (-1 > -2) and 3 (-2 > -5); 4 ties
    assert summary["logp_accuracy"] == pytest.approx(3 / 5)


def test_split_by_delta_h() -> None:
    groups = split_by_delta_h(scores(), beta=0.1)
    assert sorted(groups) == ["-1", "0", "1"]
    assert groups["1"]["pairs"] == 3
    assert groups["1"]["accuracy"] == pytest.approx(2 / 3)
    assert groups["1"]["margin"] == pytest.approx((2 + 1 - 2) / 3)
    assert groups["1"]["reward_margin"] == pytest.approx(0.1 * (1 / 3))
    assert groups["0"] == {
        "pairs": 1,
        "accuracy": 0.0,
        "margin": -1.0,
        "reward_margin": pytest.approx(-0.1),
        "logp_accuracy": 0.0,
    }
    assert groups["-1"]["accuracy"] == 0.0  # margin exactly 0 is not a win


def test_without_reference_the_margin_is_the_policy_log_ratio() -> None:
    free = scores(reference_chosen=None, reference_rejected=None)
    assert margins(free) == [2.0, -2.0, -1.0, -10.0, 0.0]
    result = summarize(free, beta=1.0)
    assert "ref_logps_chosen" not in result
    assert result["reward_chosen"] == pytest.approx(np.mean(PC))


def test_without_flags_no_hallucination_metrics() -> None:
    plain = scores(h_w=None, h_l=None)
    assert "hallucination_preference_rate" not in summarize(plain, 0.1)
    assert split_by_delta_h(plain, 0.1) == {}
    assert hallucination_preference_rate(plain) == (None, 0)


def test_no_delta_h_one_pairs_gives_none() -> None:
    rate, count = hallucination_preference_rate(scores(h_w=[0] * 5, h_l=[0] * 5))
    assert rate is None and count == 0


def test_tensors_are_accepted_and_lengths_checked() -> None:
    s = scores(policy_chosen=torch.tensor(PC), policy_rejected=torch.tensor(PR))
    assert margins(s) == [2.0, 1.0, -1.0, -2.0, 0.0]
    with pytest.raises(ValueError, match="h_l has 4 values"):
        scores(h_l=[1, 1, 0, 1])


def test_judge_summary_and_win_rate() -> None:
    summary = judge_summary([9, 4.5, 5, 0, 10])
    assert summary["answers"] == 5
    assert summary["mean_factuality"] == pytest.approx(28.5 / 5)
    assert summary["hallucination_rate"] == pytest.approx(2 / 5)  # 4.5 and 0 are below 5
    b = {"a": 8.0, "b": 5.0, "c": 2.0, "d": 7.0, "x": 1.0}
    a = {"a": 6.0, "b": 5.0, "c": 3.0, "d": 1.0, "y": 9.0}
    result = win_rate(b, a)
    assert result == {"paired": 4, "wins": 2, "losses": 1, "ties": 1, "win_rate": 2 / 3}
    assert win_rate({"a": 1.0}, {"a": 1.0})["win_rate"] is None
    assert math.isclose(win_rate({"a": 2.0}, {"a": 1.0})["win_rate"], 1.0)
