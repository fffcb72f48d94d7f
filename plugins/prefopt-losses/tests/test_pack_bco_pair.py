import json
import math

import pytest
import torch
from prefopt.api import LossContext
from prefopt.testing import make_batch

from prefopt_losses.bco_pair import BCOPairConfig, make_loss


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def hand_bco(r_c: float, r_r: float, delta: float) -> float:
    return -log_sigmoid(r_c - delta) - log_sigmoid(-(r_r - delta))


def batch_of(chosen_ratio: list[float], rejected_ratio: list[float]):
    n = len(chosen_ratio)
    return make_batch(chosen_ratio, rejected_ratio, [0.0] * n, [0.0] * n)


def test_bco_pair_running_reward_shift_over_two_batches() -> None:
    beta = 0.5
    loss = make_loss(BCOPairConfig(beta=beta))
    # batch 1 rewards: chosen 1, 3; rejected −1, 1  -> δ = mean(1, 3, −1, 1) = 1
    first = loss(batch_of([2.0, 6.0], [-2.0, 2.0]))
    assert float(first.metrics["bco/delta"]) == pytest.approx(1.0)
    expected = [hand_bco(1, -1, 1.0), hand_bco(3, 1, 1.0)]
    assert first.per_pair.tolist() == pytest.approx(expected, rel=1e-12)
    # batch 2 rewards: chosen 4; rejected 2 -> δ = (4·1 + 2·3) / 6 = 10/6
    second = loss(batch_of([8.0], [4.0]))
    assert float(second.metrics["bco/delta"]) == pytest.approx(10 / 6)
    assert second.per_pair.tolist() == pytest.approx([hand_bco(4, 2, 10 / 6)], rel=1e-12)
    assert loss.state_dict() == {"mean": pytest.approx(10 / 6), "count": 6}


def test_bco_pair_state_round_trip_and_no_update_in_eval() -> None:
    loss = make_loss(BCOPairConfig(beta=1.0))
    loss(batch_of([1.0, 3.0], [0.0, 0.0]))  # δ = 1
    saved = json.loads(json.dumps(loss.state_dict()))  # checkpoints store it as JSON
    restored = make_loss(BCOPairConfig(beta=1.0))
    restored.load_state_dict(saved)
    assert restored.state_dict() == loss.state_dict()
    with torch.no_grad():  # evaluation reads δ without moving it
        out = restored(batch_of([10.0], [10.0]))
    assert float(out.metrics["bco/delta"]) == pytest.approx(1.0)
    assert restored.state_dict()["count"] == 4


def test_bco_pair_shift_uses_the_global_batch() -> None:
    # Two data-parallel processes: the other one contributes rewards 5, 7 (chosen) and 9, 3.
    other = torch.tensor([5.0, 7.0, 9.0, 3.0], dtype=torch.float32)
    ctx = LossContext(all_gather=lambda t: torch.cat([t, other]), world_size=2, rank=0)
    loss = make_loss(BCOPairConfig(beta=1.0), ctx)
    out = loss(batch_of([1.0, 3.0], [0.0, 4.0]))
    # δ = mean(1, 3, 0, 4, 5, 7, 9, 3) = 4
    assert float(out.metrics["bco/delta"]) == pytest.approx(4.0)
    assert out.per_pair.tolist() == pytest.approx([hand_bco(1, 0, 4), hand_bco(3, 4, 4)])


def test_bco_pair_without_shift() -> None:
    loss = make_loss(BCOPairConfig(beta=0.1, reward_shift=False))
    out = loss(batch_of([10.0, -10.0], [0.0, 5.0]))
    assert float(out.metrics["bco/delta"]) == 0.0
    assert out.per_pair.tolist() == pytest.approx([hand_bco(1, 0, 0), hand_bco(-1, 0.5, 0)])
    assert loss.state_dict()["count"] == 0
