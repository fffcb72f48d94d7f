"""DPO loss against values computed by hand with plain Python floats."""

from __future__ import annotations

import math

import pytest
import torch

from prefopt.api import PreferenceBatch
from prefopt.registry import get_algorithm


def _batch(pc, pr, rc, rr):
    t = lambda xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
    n = len(pc)
    return PreferenceBatch(t(pc), t(pr), t(rc), t(rr), t([3] * n), t([4] * n), {})


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


POLICY_C = [-10.0, -20.0, -5.5, -7.0]
POLICY_R = [-12.0, -18.0, -5.0, -9.5]
REF_C = [-11.0, -19.0, -6.0, -7.0]
REF_R = [-11.5, -19.5, -4.0, -8.0]


def _expected(beta: float, eps: float) -> list[float]:
    out = []
    for pc, pr, rc, rr in zip(POLICY_C, POLICY_R, REF_C, REF_R, strict=True):
        m = (pc - pr) - (rc - rr)
        out.append(-(1 - eps) * _log_sigmoid(beta * m) - eps * _log_sigmoid(-beta * m))
    return out


@pytest.mark.parametrize(("beta", "eps"), [(0.1, 0.0), (0.5, 0.0), (0.1, 0.2), (2.0, 0.3)])
def test_dpo_loss_matches_hand_computation(beta: float, eps: float) -> None:
    spec = get_algorithm("dpo")
    loss_fn = spec.make_loss(spec.config_class(beta=beta, label_smoothing=eps))
    out = loss_fn(_batch(POLICY_C, POLICY_R, REF_C, REF_R))
    expected = _expected(beta, eps)
    assert out.per_pair.tolist() == pytest.approx(expected, abs=1e-12)
    assert out.loss.item() == pytest.approx(sum(expected) / len(expected), abs=1e-12)
    assert out.weights.tolist() == [1.0] * 4
    # Implicit rewards: β · (policy − reference), no other shift.
    assert out.chosen_rewards.tolist() == pytest.approx(
        [beta * (p - r) for p, r in zip(POLICY_C, REF_C, strict=True)]
    )
    assert out.rejected_rewards.tolist() == pytest.approx(
        [beta * (p - r) for p, r in zip(POLICY_R, REF_R, strict=True)]
    )


def test_dpo_loss_is_ln2_when_policy_equals_reference() -> None:
    spec = get_algorithm("dpo")
    loss_fn = spec.make_loss(spec.config_class())
    out = loss_fn(_batch(POLICY_C, POLICY_R, POLICY_C, POLICY_R))
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-12)


def test_dpo_gradient_pushes_margin_up() -> None:
    spec = get_algorithm("dpo")
    loss_fn = spec.make_loss(spec.config_class(beta=0.1))
    pc = torch.tensor([-10.0], dtype=torch.float64, requires_grad=True)
    batch = _batch([0.0], [-12.0], [-11.0], [-11.5])
    batch.policy_chosen_logps = pc
    loss_fn(batch).loss.backward()
    m = (-10.0 + 12.0) - (-11.0 + 11.5)
    # d/dpc of −log σ(βm) = −β·σ(−βm)
    assert pc.grad.item() == pytest.approx(-0.1 / (1 + math.exp(0.1 * m)), abs=1e-12)


@pytest.mark.parametrize("kwargs", [{"beta": 0.0}, {"beta": -1.0}, {"label_smoothing": 0.5}])
def test_dpo_config_rejects_impossible_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        get_algorithm("dpo").config_class(**kwargs)
