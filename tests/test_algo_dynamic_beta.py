"""Dynamic-β: the controller over consecutive batches (warmup, τ at the W-th call, later
updates, clipping) against a numpy re-implementation; state round trips; data parallelism;
and `prefopt train dynamic-beta` end to end, resumed from a checkpoint with its state."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from prefopt.api import LossContext, PreferenceBatch
from prefopt.registry import get_algorithm

SPEC = get_algorithm("dynamic-beta")


def _batch(margins: np.ndarray) -> PreferenceBatch:
    m = torch.tensor(margins, dtype=torch.float64)
    ref = torch.full_like(m, -2.0)
    ones = torch.ones_like(m)
    return PreferenceBatch(m - 4.0, ref - 2.0, ref, ref.clone(), ones, ones, {})


def _reference(batches: list[np.ndarray], cfg: dict) -> list[dict]:
    """The controller written out in numpy, one record per call."""
    beta, tau, collected, records = cfg["beta"], None, [], []
    delta, lam = cfg["delta"], cfg["lam"]
    for call, margins in enumerate(batches, start=1):
        record = {
            "beta_used": beta,
            "loss": float(np.mean(np.logaddexp(0.0, -beta * margins))),
            "in_warmup": call <= cfg["warmup_steps"],
        }
        if call <= cfg["warmup_steps"]:
            collected.extend(margins.tolist())
            if call == cfg["warmup_steps"]:
                tau = float(np.quantile(np.array(collected), 1 - delta))
        else:
            tau = (1 - lam) * tau + lam * float(np.quantile(margins, 1 - delta))
            p_hat = float(np.mean(margins >= tau))
            u = (p_hat - delta) / math.sqrt(delta * (1 - delta) / margins.size)
            beta = beta * math.exp(cfg["alpha"] * math.tanh(cfg["gamma"] * u))
            beta = min(cfg["beta_max"], max(cfg["beta_min"], beta))
            record.update(p_hat=p_hat, u=u)
        record.update(tau=tau, beta_after=beta)
        records.append(record)
    return records


RNG = np.random.default_rng(0)
BATCHES = [RNG.normal(loc=0.5 * i, scale=1.0 + 0.2 * i, size=12) for i in range(8)]
DEFAULTS = {
    "beta": 0.1, "warmup_steps": 3, "delta": 0.1, "lam": 0.1, "alpha": 0.005, "gamma": 2.0,
    "beta_min": 0.0, "beta_max": 2.0,
}  # fmt: skip


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"alpha": 0.3, "lam": 0.5, "delta": 0.2},
        {"alpha": 1.0, "beta_max": 0.15},  # rising margins push β up into the clip
        {"alpha": 1.0, "warmup_steps": 1, "delta": 0.25},
    ],
)
def test_controller_matches_numpy_over_consecutive_batches(overrides: dict) -> None:
    cfg = {**DEFAULTS, **overrides}
    loss_fn = SPEC.build_loss(SPEC.config_class(**cfg))
    for margins, expected in zip(BATCHES, _reference(BATCHES, cfg), strict=True):
        out = loss_fn(_batch(margins))
        assert out.loss.item() == pytest.approx(expected["loss"], rel=1e-12)
        assert out.metrics["beta"] == pytest.approx(expected["beta_used"], rel=1e-12)
        assert out.metrics["in_warmup"] == float(expected["in_warmup"])
        if expected["tau"] is None:
            assert "tau" not in out.metrics
        else:
            assert out.metrics["tau"] == pytest.approx(expected["tau"], rel=1e-12)
        if "p_hat" in expected:
            assert out.metrics["p_hat"] == pytest.approx(expected["p_hat"])
            assert out.metrics["u"] == pytest.approx(expected["u"], rel=1e-12)
        else:
            assert "p_hat" not in out.metrics and "u" not in out.metrics
        assert loss_fn.beta == pytest.approx(expected["beta_after"], rel=1e-12)
    if "beta_max" in overrides:
        assert loss_fn.beta == overrides["beta_max"]  # clipped at the top


def test_tau_is_set_at_the_wth_call_from_all_warmup_margins() -> None:
    loss_fn = SPEC.build_loss(SPEC.config_class(warmup_steps=3, delta=0.1))
    for margins in BATCHES[:2]:
        loss_fn(_batch(margins))
        assert loss_fn.tau is None and loss_fn.beta == 0.1
    loss_fn(_batch(BATCHES[2]))
    pooled = np.concatenate(BATCHES[:3])
    assert loss_fn.tau == pytest.approx(float(np.quantile(pooled, 0.9)), rel=1e-12)
    assert loss_fn.beta == 0.1  # β moves from the next call on
    assert loss_fn.state_dict()["collected"] == []


def test_low_margins_shrink_beta_to_its_floor() -> None:
    loss_fn = SPEC.build_loss(
        SPEC.config_class(warmup_steps=1, alpha=0.5, beta=0.1, beta_min=0.05, lam=0.0)
    )
    loss_fn(_batch(np.linspace(0.0, 10.0, 11)))  # τ = 9
    betas = []
    for _ in range(3):  # no margin reaches τ: p̂ = 0, u < 0, β shrinks by e^{−0.5·tanh(2u)}
        out = loss_fn(_batch(np.zeros(11)))
        assert out.metrics["p_hat"] == 0.0
        betas.append(loss_fn.beta)
    u = -0.1 / math.sqrt(0.1 * 0.9 / 11)
    assert betas[0] == pytest.approx(0.1 * math.exp(0.5 * math.tanh(2 * u)), rel=1e-12)
    assert betas[-1] == 0.05


def test_state_round_trip_mid_warmup_continues_identically() -> None:
    cfg = {**DEFAULTS, "alpha": 0.2}
    straight = SPEC.build_loss(SPEC.config_class(**cfg))
    losses = [straight(_batch(m)).loss.item() for m in BATCHES]
    first = SPEC.build_loss(SPEC.config_class(**cfg))
    for margins in BATCHES[:2]:
        first(_batch(margins))
    resumed = SPEC.build_loss(SPEC.config_class(**cfg))
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert [resumed(_batch(m)).loss.item() for m in BATCHES[2:]] == losses[2:]
    assert resumed.state_dict() == straight.state_dict()


def test_evaluation_leaves_the_controller_alone() -> None:
    loss_fn = SPEC.build_loss(SPEC.config_class(**{**DEFAULTS, "warmup_steps": 1}))
    loss_fn(_batch(BATCHES[0]))
    before = loss_fn.state_dict()
    with torch.no_grad():
        out = loss_fn(_batch(BATCHES[1]))
    assert loss_fn.state_dict() == before
    assert "p_hat" not in out.metrics


def test_data_parallel_uses_the_global_batch() -> None:
    cfg = {**DEFAULTS, "warmup_steps": 2, "alpha": 0.3}
    single = SPEC.build_loss(SPEC.config_class(**cfg))
    shared: dict[str, torch.Tensor] = {}
    ranks = [
        SPEC.build_loss(
            SPEC.config_class(**cfg),
            LossContext(all_gather=lambda t: shared["global"], world_size=2, rank=rank),
        )
        for rank in range(2)
    ]
    for margins in BATCHES:
        expected = single(_batch(margins)).loss.item()
        shared["global"] = torch.tensor(margins, dtype=torch.float64)
        local = [ranks[r](_batch(margins[6 * r : 6 * r + 6])).loss.item() for r in range(2)]
        assert sum(local) / 2 == pytest.approx(expected, rel=1e-12)
        assert ranks[0].state_dict() == ranks[1].state_dict()
        assert ranks[0].beta == pytest.approx(single.beta, rel=1e-12)


def test_config_validation() -> None:
    for bad in ({"delta": 0.0}, {"delta": 1.0}, {"warmup_steps": 0}, {"lam": 1.5},
                {"beta_min": 0.5, "beta_max": 0.2}, {"beta": -1.0}):  # fmt: skip
        with pytest.raises(ValueError):
            SPEC.config_class(**bad)


def _train(capsys: pytest.CaptureFixture[str], *args: str) -> None:
    from prefopt.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code in (0, None), capsys.readouterr().err


def test_cli_dynamic_beta_trains_and_resumes_with_its_state(
    tiny_model: Path, pairs_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    common = [
        "train", "dynamic-beta", "-q", "--model", str(tiny_model), "--train-file",
        str(pairs_file), "--output-dir", str(out), "--warmup-steps", "1", "--alpha", "0.5",
        "--set", "training.per_device_train_batch_size=8", "--set", "training.logging_steps=1",
        "--set", "training.save_steps=2",
    ]  # fmt: skip
    _train(capsys, *common, "--max-steps", "2")
    state = json.loads((out / "checkpoint-2" / "prefopt_loss_state.json").read_text())
    assert state["calls"] == 2 and state["tau"] is not None
    _train(capsys, *common, "--max-steps", "3", "--resume")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "loss" in line]
    assert [line["step"] for line in steps] == [1, 2, 3]
    assert steps[0]["in_warmup"] == 1.0 and steps[0]["beta"] == pytest.approx(0.1)
    assert steps[0]["loss"] == pytest.approx(
        math.log(2), abs=2e-4
    )  # fresh adapter: m = 0 up to fp32 noise
    assert steps[1]["in_warmup"] == 0.0 and "p_hat" in steps[1]
    # step 3 (after the resume) uses the β that step 2 left in the checkpointed state
    assert steps[2]["beta"] == pytest.approx(state["beta"], rel=1e-6)
    final = json.loads((out / "checkpoint-3" / "prefopt_loss_state.json").read_text())
    assert final["calls"] == 3
