import math

import pytest
from prefopt.testing import make_batch

from prefopt_losses.nca_pair import NCAPairConfig, make_loss


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_nca_pair_matches_hand_computed_values() -> None:
    beta = 0.5
    pc, pr, rc, rr = [-4.0, -9.0, -3.0], [-6.0, -7.0, -3.0], [-5.0, -8.0, -3.0], [-5.0, -8.0, -3.0]
    out = make_loss(NCAPairConfig(beta=beta))(make_batch(pc, pr, rc, rr))
    expected = []
    for i in range(3):
        r_c, r_r = beta * (pc[i] - rc[i]), beta * (pr[i] - rr[i])
        expected.append(-log_sigmoid(r_c) - 0.5 * log_sigmoid(-r_c) - 0.5 * log_sigmoid(-r_r))
    assert out.per_pair.tolist() == pytest.approx(expected, rel=1e-12)
    # policy == reference (pair 2): −log σ(0) − ½ log σ(0) − ½ log σ(0) = 2·log 2
    assert float(out.per_pair[2]) == pytest.approx(2 * math.log(2))


def test_nca_pair_chosen_terms_are_minimal_at_log_two() -> None:
    # d/dr_c [−log σ(r_c) − ½ log σ(−r_c)] = 0 where σ(r_c) = 2/3, i.e. r_c = log 2.
    beta = 0.1
    batch = make_batch([math.log(2) / beta], [0.0], [0.0], [0.0], requires_grad=True)
    make_loss(NCAPairConfig(beta=beta))(batch).loss.backward()
    assert float(batch.policy_chosen_logps.grad) == pytest.approx(0.0, abs=1e-12)
    # the rejected term always pushes down: gradient ½·σ(r_r)·β > 0
    assert float(batch.policy_rejected_logps.grad) == pytest.approx(0.5 * 0.5 * beta)
