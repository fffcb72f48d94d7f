"""β-DPO: moving statistics, the filtered draw, β_batch and the loss over consecutive batches,
checked against numpy; reproducible draws across a state round trip; the data-parallel
scaling; and `prefopt train beta-dpo` end to end with its loss state in the checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from prefopt.api import LossContext, PreferenceBatch
from prefopt.registry import get_algorithm

SPEC = get_algorithm("beta-dpo")


def _batch(margins: np.ndarray) -> PreferenceBatch:
    """A batch whose DPO margin is ``margins`` (policy chosen log-probs carry it)."""
    m = torch.tensor(margins, dtype=torch.float64)
    zeros = torch.zeros_like(m)
    ones = torch.ones_like(m)
    rc = torch.full_like(m, -3.0)
    return PreferenceBatch(m - 5.0, zeros - 5.0, rc, rc.clone(), ones, ones, {})


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


BATCHES = [
    np.array([0.5, -1.0, 2.0, 0.1, 3.0, -0.4, 1.2, 0.0, 0.7, -2.5]),
    np.array([1.5, 0.2, -0.3, 2.2, 0.9, 1.1, -1.7, 4.0, 0.3, 0.6]),
    np.array([0.0, 0.4, 0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6]),
    np.array([-0.5, 5.0, 0.25, 0.75, 1.0, -3.0, 2.5, 0.1, 0.2, 0.3]),
]


def test_consecutive_batches_match_numpy() -> None:
    config = SPEC.config_class(beta=0.1, alpha=0.6, rho=0.8, momentum=0.9, seed=7)
    loss_fn = SPEC.build_loss(config)
    mean = sigma = None
    for gap in BATCHES:
        out = loss_fn(_batch(gap))
        # moving statistics, numpy
        if mean is None:
            mean, sigma = gap.mean(), max(gap.std(), 1e-6)
        else:
            mean = 0.9 * mean + 0.1 * gap.mean()
            sigma = 0.9 * sigma + 0.1 * gap.std()
        assert out.metrics["M0"] == pytest.approx(mean, rel=1e-12)
        assert out.metrics["sigma"] == pytest.approx(sigma, rel=1e-12)
        # the draw: k = floor(10 · 0.8) = 8 pairs kept
        mask = out.weights.numpy()
        assert sorted(set(mask.tolist())) == [0.0, 1.0]
        assert mask.sum() == 8
        kept = mask.astype(bool)
        beta = max(1e-3, 0.1 * (1 + 0.6 * (gap[kept].mean() - mean)))
        assert out.metrics["beta"] == pytest.approx(beta, rel=1e-12)
        expected = _softplus(-beta * gap[kept]).sum() / 8
        assert out.loss.item() == pytest.approx(expected, rel=1e-12)
        assert out.per_pair.numpy() == pytest.approx(_softplus(-beta * gap), rel=1e-12)
        assert out.metrics["keep_ratio"] == pytest.approx(0.8)
        assert out.metrics["gap_mean"] == pytest.approx(gap.mean(), rel=1e-12)
        assert out.metrics["gap_kept_mean"] == pytest.approx(gap[kept].mean(), rel=1e-12)
        rewards = out.chosen_rewards.numpy() - out.rejected_rewards.numpy()
        assert rewards == pytest.approx(beta * gap, rel=1e-12)
    assert loss_fn.state_dict() == {"M0": mean, "sigma": sigma, "calls": len(BATCHES)}


def test_rho_one_keeps_every_pair_and_alpha_zero_is_dpo() -> None:
    loss_fn = SPEC.build_loss(SPEC.config_class(beta=0.2, alpha=0.0, rho=1.0))
    dpo = get_algorithm("dpo")
    dpo_fn = dpo.build_loss(dpo.config_class(beta=0.2))
    for gap in BATCHES:
        out = loss_fn(_batch(gap))
        assert out.weights.tolist() == [1.0] * len(gap)
        assert out.metrics["keep_ratio"] == 1.0
        assert out.loss.item() == pytest.approx(dpo_fn(_batch(gap)).loss.item(), rel=1e-12)


def test_keep_at_least_one_and_beta_floor() -> None:
    loss_fn = SPEC.build_loss(SPEC.config_class(beta=0.1, alpha=5.0, rho=0.05, beta_min=0.02))
    loss_fn(_batch(np.array([10.0, 10.0, 10.0, 10.0])))  # M0 = 10
    out = loss_fn(_batch(np.array([-20.0, -20.0, -20.0, -20.0])))
    assert out.weights.sum().item() == 1  # max(1, floor(4 · 0.05)) = 1
    # β0·(1 + α·(−20 − M0)) is negative: clamped to β_min
    assert out.metrics["M0"] == pytest.approx(0.9 * 10 + 0.1 * -20)
    assert out.metrics["beta"] == 0.02


def test_draw_probabilities_follow_the_gaussian_weights() -> None:
    gap = np.array([0.0, 1.0, 2.0, 3.0])
    loss_fn = SPEC.build_loss(SPEC.config_class(rho=0.25, seed=1))  # k = 1
    counts = np.zeros(4)
    draws = 2000
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 4-element tensors: thread-pool wake-ups would dominate
    try:
        for _ in range(draws):  # the same batch every time: M0 and σ stay at its mean and std
            counts += loss_fn(_batch(gap)).weights.numpy()
    finally:
        torch.set_num_threads(threads)
    w = np.exp(-0.5 * ((gap - gap.mean()) / (gap.std() + 1e-6)) ** 2)
    p = w / w.sum()
    tolerance = 4 * np.sqrt(p * (1 - p) / draws)
    assert np.all(np.abs(counts / draws - p) < tolerance)


def test_outlier_is_never_kept() -> None:
    config = SPEC.config_class(rho=0.8, momentum=0.99)  # k = 4 of 5
    calm = np.array([0.0, 0.1, -0.1, 0.05, 0.12])
    for seed in range(20):
        loss_fn = SPEC.build_loss(SPEC.config_class(**{**config.__dict__, "seed": seed}))
        for _ in range(3):  # statistics of calm batches: M0 ≈ 0.03, σ ≈ 0.08
            loss_fn(_batch(calm))
        out = loss_fn(_batch(np.array([0.0, 0.1, -0.1, 0.05, 1000.0])))
        # M0 ≈ 2, σ ≈ 4: the outlier's weight underflows, the four others are kept
        assert out.weights.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]


def test_resumed_state_gives_the_same_draws() -> None:
    config = SPEC.config_class(rho=0.5, seed=3)
    straight = SPEC.build_loss(config)
    masks = [straight(_batch(g)).weights.tolist() for g in BATCHES]
    first = SPEC.build_loss(config)
    first(_batch(BATCHES[0]))
    saved = json.loads(json.dumps(first.state_dict()))  # as the checkpoint stores it
    resumed = SPEC.build_loss(config)
    resumed.load_state_dict(saved)
    for gap, mask in zip(BATCHES[1:], masks[1:], strict=True):
        out = resumed(_batch(gap))
        assert out.weights.tolist() == mask
    assert resumed.state_dict() == straight.state_dict()
    other_seed = SPEC.build_loss(SPEC.config_class(rho=0.5, seed=4))
    other = [other_seed(_batch(g)).weights.tolist() for g in BATCHES]
    assert other != masks


def test_evaluation_changes_no_state_and_keeps_all() -> None:
    loss_fn = SPEC.build_loss(SPEC.config_class())
    loss_fn(_batch(BATCHES[0]))
    before = loss_fn.state_dict()
    with torch.no_grad():
        out = loss_fn(_batch(BATCHES[1]))
    assert loss_fn.state_dict() == before
    assert out.weights.tolist() == [1.0] * 10
    beta = 0.1 * (1 + 0.6 * (BATCHES[1].mean() - before["M0"]))
    assert out.metrics["beta"] == pytest.approx(beta, rel=1e-12)


def test_data_parallel_scaling_matches_single_process() -> None:
    """Two simulated processes: the mean of their losses equals the one-process loss."""
    config = SPEC.config_class(rho=0.6, seed=11)
    single = SPEC.build_loss(config)
    ranks = []
    for rank in range(2):
        gathered: dict[str, torch.Tensor] = {}
        ctx = LossContext(all_gather=lambda t, g=gathered: g["global"], world_size=2, rank=rank)
        ranks.append((SPEC.build_loss(config, ctx), gathered))
    for gap in BATCHES:
        expected = single(_batch(gap))
        halves = [gap[:5], gap[5:]]
        outputs = []
        for rank, (loss_fn, gathered) in enumerate(ranks):
            gathered["global"] = torch.tensor(gap, dtype=torch.float64)
            outputs.append(loss_fn(_batch(halves[rank])))
        mean_loss = (outputs[0].loss.item() + outputs[1].loss.item()) / 2
        assert mean_loss == pytest.approx(expected.loss.item(), rel=1e-12)
        joined = outputs[0].weights.tolist() + outputs[1].weights.tolist()
        assert joined == expected.weights.tolist()
        assert outputs[1].metrics["beta"] == pytest.approx(expected.metrics["beta"], rel=1e-12)


def test_config_validation() -> None:
    for bad in ({"rho": 0.0}, {"rho": 1.5}, {"momentum": 1.0}, {"beta": 0.0}, {"beta_min": 0.0}):
        with pytest.raises(ValueError):
            SPEC.config_class(**bad)


def test_cli_beta_dpo_trains_and_checkpoints_its_state(
    tiny_model: Path, pairs_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefopt.cli.main import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["train", "beta-dpo", "-q", "--model", str(tiny_model), "--train-file",
             str(pairs_file), "--output-dir", str(out), "--max-steps", "2", "--rho", "0.75",
             "--set", "training.per_device_train_batch_size=8", "--set",
             "training.logging_steps=1", "--set", "training.save_steps=1"]
        )  # fmt: skip
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "loss" in line]
    # fresh adapter: every margin is 0, so M0 = 0, β = β0 and the loss is ln 2
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=2e-4)
    assert steps[0]["beta"] == pytest.approx(0.1)
    assert steps[0]["keep_ratio"] == pytest.approx(6 / 8)
    state = json.loads((out / "checkpoint-2" / "prefopt_loss_state.json").read_text())
    assert state["calls"] == 2
    expected_m0 = 0.9 * steps[0]["gap_mean"] + 0.1 * steps[1]["gap_mean"]
    assert state["M0"] == pytest.approx(expected_m0, rel=1e-5, abs=1e-9)
    assert (out / "adapter_model.safetensors").is_file()
