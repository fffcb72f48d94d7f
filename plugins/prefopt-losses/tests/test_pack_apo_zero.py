import math

import pytest
from prefopt.testing import make_batch

from prefopt_losses.apo_zero import APOZeroConfig, make_loss


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_apo_zero_matches_hand_computed_values() -> None:
    beta = 0.2
    chosen_ratio, rejected_ratio = [0.0, 5.0, -10.0], [0.0, -5.0, 3.0]
    batch = make_batch(
        [c - 7 for c in chosen_ratio], [r - 9 for r in rejected_ratio], [-7.0] * 3, [-9.0] * 3
    )
    out = make_loss(APOZeroConfig(beta=beta))(batch)
    expected = [
        (1 - sigmoid(beta * c)) + sigmoid(beta * r)
        for c, r in zip(chosen_ratio, rejected_ratio, strict=True)
    ]
    assert out.per_pair.tolist() == pytest.approx(expected, rel=1e-12)
    assert float(out.per_pair[0]) == pytest.approx(1.0)  # at the reference point
    assert all(0 < v < 2 for v in out.per_pair.tolist())


def test_apo_zero_raises_chosen_and_lowers_rejected() -> None:
    batch = make_batch([-3.0], [-3.0], [-3.0], [-3.0], requires_grad=True)
    make_loss(APOZeroConfig(beta=0.1))(batch).loss.backward()
    # at r = 0: dL/dπ_c = −σ'(0)·β = −0.025, dL/dπ_r = +0.025
    assert float(batch.policy_chosen_logps.grad) == pytest.approx(-0.025)
    assert float(batch.policy_rejected_logps.grad) == pytest.approx(0.025)
