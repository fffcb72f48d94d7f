import math

import pytest
from prefopt.testing import make_batch

from prefopt_losses.simpo import SPEC, SimPOConfig, make_loss


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


PC, PR = [-12.0, -30.0, -6.0], [-20.0, -15.0, -6.0]
LC, LR = [4, 10, 3], [5, 3, 2]


def test_simpo_matches_hand_computed_values_without_reference() -> None:
    beta, ratio = 2.0, 0.5  # γ = 1
    batch = make_batch(PC, PR, chosen_lengths=LC, rejected_lengths=LR)
    assert batch.reference_chosen_logps is None
    out = make_loss(SimPOConfig(beta=beta, gamma_beta_ratio=ratio))(batch)
    # pair 0: r_c = 2·(−12/4) = −6, r_r = 2·(−20/5) = −8, loss = −log σ(−6 + 8 − 1) = −log σ(1)
    assert float(out.per_pair[0]) == pytest.approx(-log_sigmoid(1.0))
    expected = [
        -log_sigmoid(beta * pc / lc - beta * pr / lr - ratio * beta)
        for pc, pr, lc, lr in zip(PC, PR, LC, LR, strict=True)
    ]
    assert out.per_pair.tolist() == pytest.approx(expected, rel=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx([-6.0, -6.0, -4.0])
    assert out.rejected_rewards.tolist() == pytest.approx([-8.0, -10.0, -6.0])


def test_simpo_ignores_reference_log_probs() -> None:
    plain = make_batch(PC, PR, chosen_lengths=LC, rejected_lengths=LR)
    with_ref = make_batch(PC, PR, [-1.0] * 3, [-50.0] * 3, chosen_lengths=LC, rejected_lengths=LR)
    loss = make_loss(SimPOConfig())
    assert loss(plain).per_pair.tolist() == loss(with_ref).per_pair.tolist()


def test_simpo_length_normalisation_drives_the_gradient() -> None:
    batch = make_batch([-8.0], [-8.0], chosen_lengths=[4], rejected_lengths=[2], requires_grad=True)
    make_loss(SimPOConfig(beta=2.0, gamma_beta_ratio=0.25))(batch).loss.backward()
    # z = 2·(−2) − 2·(−4) − 0.5 = 3.5; dL/dπ_c = −(1 − σ(z))·β/|y_c|, dL/dπ_r = +(1 − σ(z))·β/|y_r|
    s = 1 / (1 + math.exp(-3.5))
    assert float(batch.policy_chosen_logps.grad) == pytest.approx(-(1 - s) * 0.5)
    assert float(batch.policy_rejected_logps.grad) == pytest.approx((1 - s) * 1.0)


def test_simpo_is_reference_free() -> None:
    assert SPEC.needs_reference is False
    with pytest.raises(ValueError, match="gamma_beta_ratio"):
        SimPOConfig(gamma_beta_ratio=-1.0)
