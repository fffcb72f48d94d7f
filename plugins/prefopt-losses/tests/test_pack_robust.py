import math

import pytest
from prefopt.testing import make_batch

from prefopt_losses.robust import RobustConfig, make_loss


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


MARGINS = [-3.0, 0.0, 2.0, 40.0]


def batch_with_margins(margins: list[float]):
    return make_batch([m - 5.0 for m in margins], [-5.0] * len(margins), [0.0] * 4, [0.0] * 4)


def test_robust_matches_hand_computed_values() -> None:
    beta, eps = 0.5, 0.2
    out = make_loss(RobustConfig(beta=beta, label_smoothing=eps))(batch_with_margins(MARGINS))
    expected = [
        ((1 - eps) * -log_sigmoid(beta * m) - eps * -log_sigmoid(-beta * m)) / (1 - 2 * eps)
        for m in MARGINS
    ]
    assert out.per_pair.tolist() == pytest.approx(expected, rel=1e-12)
    # At m = 0 both terms are log 2: ((1−ε) − ε)·log 2 / (1 − 2ε) = log 2.
    assert float(out.per_pair[1]) == pytest.approx(math.log(2))
    # Large margins make the subtracted flipped term dominate: negative loss is expected.
    assert float(out.per_pair[3]) < 0


def test_robust_is_unbiased_under_label_flips() -> None:
    # E over a flip with probability ε of the robust loss = the clean DPO loss.
    beta, eps = 0.3, 0.25
    loss = make_loss(RobustConfig(beta=beta, label_smoothing=eps))
    kept = loss(batch_with_margins(MARGINS)).per_pair
    flipped = loss(batch_with_margins([-m for m in MARGINS])).per_pair
    expectation = ((1 - eps) * kept + eps * flipped).tolist()
    assert expectation == pytest.approx([-log_sigmoid(beta * m) for m in MARGINS], rel=1e-9)


def test_robust_with_zero_smoothing_is_dpo() -> None:
    out = make_loss(RobustConfig(beta=0.1, label_smoothing=0.0))(batch_with_margins(MARGINS))
    assert out.per_pair.tolist() == pytest.approx([-log_sigmoid(0.1 * m) for m in MARGINS])


@pytest.mark.parametrize("eps", [0.5, -0.1, 0.7])
def test_robust_rejects_smoothing_outside_range(eps: float) -> None:
    with pytest.raises(ValueError, match="label_smoothing"):
        RobustConfig(label_smoothing=eps)
