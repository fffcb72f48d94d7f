import pytest
from prefopt.testing import make_batch

from prefopt_losses.hinge import HingeConfig, make_loss


def test_hinge_matches_hand_computed_values() -> None:
    # margins m = (pc − pr) − (rc − rr): 1−0=1, 0−0=0, 30−0=30, −2−0=−2
    batch = make_batch([-1.0, -5.0, -2.0, -9.0], [-2.0, -5.0, -32.0, -7.0], [0.0] * 4, [0.0] * 4)
    out = make_loss(HingeConfig(beta=0.1, margin=1.0))(batch)
    # max(0, 1 − 0.1·m): 0.9, 1.0, 0 (satisfied), 1.2
    assert out.per_pair.tolist() == pytest.approx([0.9, 1.0, 0.0, 1.2], rel=1e-12)
    assert float(out.loss) == pytest.approx(3.1 / 4)


def test_hinge_margin_parameter_and_zero_gradient_past_it() -> None:
    batch = make_batch([0.0, 0.0], [-4.0, -40.0], [0.0, 0.0], [0.0, 0.0], requires_grad=True)
    out = make_loss(HingeConfig(beta=0.5, margin=3.0))(batch)
    # m = 4 and 40: max(0, 3 − 2) = 1, max(0, 3 − 20) = 0
    assert out.per_pair.tolist() == pytest.approx([1.0, 0.0])
    out.loss.backward()
    # active pair: d/dπ_c of (3 − 0.5·m)/2 = −0.25; satisfied pair: no gradient
    assert batch.policy_chosen_logps.grad.tolist() == pytest.approx([-0.25, 0.0])


def test_hinge_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="margin"):
        HingeConfig(margin=0.0)
    with pytest.raises(ValueError, match="beta"):
        HingeConfig(beta=-0.1)
