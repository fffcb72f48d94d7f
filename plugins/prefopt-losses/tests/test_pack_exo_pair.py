import math

import pytest
from prefopt.testing import make_batch

from prefopt_losses.exo_pair import EXOPairConfig, make_loss


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def hand_exo(z: float, eps: float) -> float:
    p = sigmoid(z)
    return p * (math.log(p) - math.log(1 - eps)) + (1 - p) * (math.log(1 - p) - math.log(eps))


def test_exo_pair_matches_hand_computed_values() -> None:
    beta, eps = 0.1, 1e-3
    margins = [0.0, 10.0, -20.0, 50.0]
    batch = make_batch([m - 3 for m in margins], [-3.0] * 4, [0.0] * 4, [0.0] * 4)
    out = make_loss(EXOPairConfig(beta=beta, epsilon=eps))(batch)
    assert out.per_pair.tolist() == pytest.approx([hand_exo(beta * m, eps) for m in margins])
    # m = 0: ½(log ½ − log 0.999) + ½(log ½ − log 0.001)
    at_zero = 0.5 * (math.log(0.5) - math.log(0.999)) + 0.5 * (math.log(0.5) - math.log(0.001))
    assert float(out.per_pair[0]) == pytest.approx(at_zero)


def test_exo_pair_is_zero_at_the_smoothed_optimum() -> None:
    beta, eps = 0.5, 0.1
    margin = math.log((1 - eps) / eps) / beta  # σ(β·m) = 1 − ε
    batch = make_batch([margin], [0.0], [0.0], [0.0], requires_grad=True)
    out = make_loss(EXOPairConfig(beta=beta, epsilon=eps))(batch)
    assert float(out.loss.detach()) == pytest.approx(0.0, abs=1e-12)
    out.loss.backward()
    assert float(batch.policy_chosen_logps.grad) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.5, 1.0])
def test_exo_pair_needs_positive_epsilon(eps: float) -> None:
    with pytest.raises(ValueError, match="epsilon"):
        EXOPairConfig(epsilon=eps)
