"""nll: the chosen answer's per-token NLL against hand-computed values and gradients, in both
reductions; `--rpo-alpha` on dpo and factual equals the DPO loss plus α·nll by hand (and 0
changes nothing); `prefopt train nll` trains without a reference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from prefopt.api import PreferenceBatch
from prefopt.registry import get_algorithm

NLL = get_algorithm("nll")
CHOSEN = [-4.0, -9.0, -2.0, -7.5]
REJECTED = [-5.0, -8.0, -6.0, -7.0]
REF_CHOSEN = [-4.5, -8.0, -3.0, -7.0]
REF_REJECTED = [-4.0, -8.5, -5.0, -7.25]
LENGTHS = [2, 3, 1, 5]


def _batch(extras: dict[str, list[float]] | None = None) -> PreferenceBatch:
    def t(values: list[float], grad: bool = False) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64, requires_grad=grad)

    return PreferenceBatch(
        t(CHOSEN, grad=True),
        t(REJECTED, grad=True),
        t(REF_CHOSEN),
        t(REF_REJECTED),
        torch.tensor(LENGTHS),
        torch.tensor([4, 4, 2, 3]),
        {k: t(v) for k, v in (extras or {}).items()},
    )


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_nll_tokens_is_the_nll_of_all_chosen_tokens_over_their_count() -> None:
    batch = _batch()
    out = NLL.build_loss(NLL.config_class())(batch)
    tokens = sum(LENGTHS)  # 11
    assert out.loss.item() == pytest.approx((4 + 9 + 2 + 7.5) / tokens, rel=1e-12)
    assert out.per_pair.tolist() == pytest.approx([2.0, 3.0, 2.0, 1.5], rel=1e-12)
    assert out.weights.tolist() == [1.0] * 4
    out.loss.backward()
    # d/ds_i of −Σ s / Σ n is −1/Σ n for every pair; the rejected side has no gradient
    assert batch.policy_chosen_logps.grad.tolist() == pytest.approx([-1 / tokens] * 4)
    assert batch.policy_rejected_logps.grad is None


def test_nll_pairs_averages_each_pairs_mean() -> None:
    batch = _batch()
    out = NLL.build_loss(NLL.config_class(reduction="pairs"))(batch)
    assert out.loss.item() == pytest.approx((2.0 + 3.0 + 2.0 + 1.5) / 4, rel=1e-12)
    out.loss.backward()
    expected = [-1 / (4 * n) for n in LENGTHS]
    assert batch.policy_chosen_logps.grad.tolist() == pytest.approx(expected, rel=1e-12)


def test_nll_spec_needs_no_reference_and_checks_its_reduction() -> None:
    assert NLL.needs_reference is False and NLL.extra_columns == ()
    with pytest.raises(ValueError, match="reduction"):
        NLL.config_class(reduction="sum")


def _dpo_by_hand(beta: float, shift: list[float] | None = None) -> list[float]:
    """Per-pair −log σ(β·(m − shift)) with m the DPO margin."""
    shift = shift or [0.0] * len(CHOSEN)
    return [
        _softplus(-beta * ((c - r) - (rc - rr) - s))
        for c, r, rc, rr, s in zip(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, shift, strict=True)
    ]


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_rpo_alpha_on_dpo_adds_alpha_times_nll(alpha: float) -> None:
    dpo = get_algorithm("dpo")
    beta = 0.3
    batch = _batch()
    out = dpo.build_loss(dpo.config_class(beta=beta, rpo_alpha=alpha))(batch)
    dpo_losses = _dpo_by_hand(beta)
    nll = (4 + 9 + 2 + 7.5) / sum(LENGTHS)
    assert out.loss.item() == pytest.approx(sum(dpo_losses) / 4 + alpha * nll, rel=1e-12)
    expected_per_pair = [
        d + alpha * (-c / n) for d, c, n in zip(dpo_losses, CHOSEN, LENGTHS, strict=True)
    ]
    assert out.per_pair.tolist() == pytest.approx(expected_per_pair, rel=1e-12)
    assert out.metrics["nll_loss"].item() == pytest.approx(nll, rel=1e-12)
    out.loss.backward()
    # d/ds_c of mean softplus(−β·m) is −β·σ(−β·m)/B; the NLL adds −α/Σn
    sides = zip(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, strict=True)
    margins = [(c - r) - (rc - rr) for c, r, rc, rr in sides]
    grad = [-beta * _sigmoid(-beta * m) / 4 - alpha / sum(LENGTHS) for m in margins]
    assert batch.policy_chosen_logps.grad.tolist() == pytest.approx(grad, rel=1e-10)
    rejected_grad = [beta * _sigmoid(-beta * m) / 4 for m in margins]
    assert batch.policy_rejected_logps.grad.tolist() == pytest.approx(rejected_grad, rel=1e-10)


def test_rpo_alpha_zero_is_plain_dpo() -> None:
    dpo = get_algorithm("dpo")
    out = dpo.build_loss(dpo.config_class(beta=0.3))(_batch())
    assert out.loss.item() == pytest.approx(sum(_dpo_by_hand(0.3)) / 4, rel=1e-12)
    assert "nll_loss" not in out.metrics
    with pytest.raises(ValueError, match="rpo_alpha"):
        dpo.config_class(rpo_alpha=-1.0)


def test_rpo_alpha_on_factual_adds_alpha_times_nll() -> None:
    factual = get_algorithm("factual")
    h = {"h_w": [0.0, 0.0, 0.0, 1.0], "h_l": [1.0, 0.0, 1.0, 1.0]}
    config = factual.config_class(beta=0.2, delta=3.0, rpo_alpha=2.0)
    out = factual.build_loss(config)(_batch(h))
    shift = [3.0 * (hl - hw) for hw, hl in zip(h["h_w"], h["h_l"], strict=True)]
    nll = (4 + 9 + 2 + 7.5) / sum(LENGTHS)
    expected = sum(_dpo_by_hand(0.2, shift)) / 4 + 2.0 * nll
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    assert "factual/delta_h_fraction" in out.metrics and "nll_loss" in out.metrics
    with pytest.raises(ValueError, match="rpo_alpha"):
        factual.config_class(rpo_alpha=float("nan"))


def test_cli_train_nll_runs_without_a_reference(
    tiny_model: Path, pairs_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefopt.cli.main import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["train", "nll", "-q", "--model", str(tiny_model), "--train-file", str(pairs_file),
             "--output-dir", str(out), "--max-steps", "2", "--reduction", "pairs",
             "--set", "training.per_device_train_batch_size=4",
             "--set", "training.logging_steps=1", "--set", "reference.mode=online"]
        )  # fmt: skip
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [step for step in steps if "loss" in step]
    assert len(steps) == 2
    # no reference: the rewards are the policy's own log-probs, so they equal logps/*
    assert steps[0]["rewards/chosen"] == pytest.approx(steps[0]["logps/chosen"], rel=1e-5)
    assert 0 < steps[0]["loss"] < -steps[0]["logps/chosen"]  # per token, below the sum
    assert (out / "adapter_model.safetensors").is_file()
