"""Factual-DPO: the loss against plain-Python values, its reduction to DPO, data checks, and
`prefopt train factual --delta 10` end to end (the first logged loss is known in closed form)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from prefopt.api import LossContext, PreferenceBatch
from prefopt.errors import ConfigError, UsageError
from prefopt.registry import get_algorithm
from prefopt.testing import synthetic_pairs, write_pairs
from prefopt.testing.cli_runner import run_cli_in_process as run_cli

POLICY_C = [-10.0, -20.0, -5.5, -7.0, -3.0, -8.0]
POLICY_R = [-12.0, -18.0, -5.0, -9.5, -3.5, -2.0]
REF_C = [-11.0, -19.0, -6.0, -7.0, -3.1, -7.0]
REF_R = [-11.5, -19.5, -4.0, -8.0, -3.2, -3.0]
H_W = [0.0, 0.0, 0.0, 1.0, 0.0, 1.0]
H_L = [1.0, 0.0, 1.0, 1.0, 1.0, 1.0]


def _batch() -> PreferenceBatch:
    def t(xs: list[float]) -> torch.Tensor:
        return torch.tensor(xs, dtype=torch.float64)

    n = len(POLICY_C)
    return PreferenceBatch(
        t(POLICY_C), t(POLICY_R), t(REF_C), t(REF_R), t([3.0] * n), t([4.0] * n),
        {"h_w": t(H_W), "h_l": t(H_L)},
    )  # fmt: skip


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _loss(config: dict, batch: PreferenceBatch | None = None):
    spec = get_algorithm("factual")
    return spec.build_loss(spec.config_class(**config))(batch or _batch())


@pytest.mark.parametrize(
    ("beta", "delta", "eps"), [(0.1, 0.0, 0.0), (0.1, 10.0, 0.0), (0.5, 2.5, 0.0), (0.2, 4.0, 0.25)]
)
def test_factual_loss_matches_plain_python(beta: float, delta: float, eps: float) -> None:
    expected = []
    margins = []
    for pc, pr, rc, rr, hw, hl in zip(POLICY_C, POLICY_R, REF_C, REF_R, H_W, H_L, strict=True):
        m = (pc - pr) - (rc - rr)
        margins.append(m)
        z = beta * (m - delta * (hl - hw))
        expected.append(-(1 - eps) * _log_sigmoid(z) - eps * _log_sigmoid(-z))
    out = _loss({"beta": beta, "delta": delta, "label_smoothing": eps})
    assert out.per_pair.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert out.loss.item() == pytest.approx(sum(expected) / len(expected), rel=1e-12)
    assert out.weights.tolist() == [1.0] * len(expected)
    # rewards exclude the Δ shift: β·(π − π_ref)
    chosen = [beta * (pc - rc) for pc, rc in zip(POLICY_C, REF_C, strict=True)]
    rejected = [beta * (pr - rr) for pr, rr in zip(POLICY_R, REF_R, strict=True)]
    assert out.chosen_rewards.tolist() == pytest.approx(chosen, rel=1e-12)
    assert out.rejected_rewards.tolist() == pytest.approx(rejected, rel=1e-12)
    factual = [i for i, (hw, hl) in enumerate(zip(H_W, H_L, strict=True)) if hl - hw == 1]
    assert out.metrics["factual/delta_h_fraction"] == pytest.approx(len(factual) / len(H_W))
    below = sum(1 for i in factual if margins[i] < delta) / len(factual)
    assert out.metrics["factual/margin_below_delta"] == pytest.approx(below)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_delta_zero_is_exactly_dpo(eps: float) -> None:
    dpo = get_algorithm("dpo")
    batch = _batch()
    expected = dpo.build_loss(dpo.config_class(beta=0.3, label_smoothing=eps))(batch)
    out = _loss({"beta": 0.3, "delta": 0.0, "label_smoothing": eps}, batch)
    assert torch.equal(out.per_pair, expected.per_pair)
    assert torch.equal(out.loss, expected.loss)
    assert torch.equal(out.chosen_rewards, expected.chosen_rewards)


def test_gradient_flows_to_policy_only_through_shifted_margin() -> None:
    batch = _batch()
    batch.policy_chosen_logps.requires_grad_(True)
    out = _loss({"beta": 0.5, "delta": 3.0}, batch)
    out.loss.backward()
    grad = batch.policy_chosen_logps.grad.tolist()
    for i, (pc, pr, rc, rr, hw, hl) in enumerate(
        zip(POLICY_C, POLICY_R, REF_C, REF_R, H_W, H_L, strict=True)
    ):
        z = 0.5 * ((pc - pr) - (rc - rr) - 3.0 * (hl - hw))
        sig = 1 / (1 + math.exp(-z))
        assert grad[i] == pytest.approx(-(1 - sig) * 0.5 / len(POLICY_C), rel=1e-10)


def test_metric_left_out_without_factual_pairs() -> None:
    batch = _batch()
    batch.extras = {
        "h_w": torch.zeros(6, dtype=torch.float64),
        "h_l": torch.zeros(6, dtype=torch.float64),
    }
    out = _loss({"delta": 5.0}, batch)
    assert out.metrics["factual/delta_h_fraction"] == 0.0
    assert "factual/margin_below_delta" not in out.metrics


def test_metrics_use_the_global_batch() -> None:
    # a fake second process whose six pairs all have Δh = 2 (> 0.5: counted as factual pairs)
    ctx = LossContext(
        all_gather=lambda t: torch.cat([t, torch.ones_like(t) * (t.max() + 1)]), world_size=2
    )
    spec = get_algorithm("factual")
    out = spec.build_loss(spec.config_class(delta=1.0), ctx)(_batch())
    assert out.metrics["factual/delta_h_fraction"] == pytest.approx((3 + 6) / 12)


def test_config_rejects_negative_delta_and_run_name_drops_trailing_zero() -> None:
    spec = get_algorithm("factual")
    with pytest.raises(ValueError, match="delta must be >= 0"):
        spec.config_class(delta=-1.0)
    assert (
        spec.run_name(spec.config_class(delta=10.0), "Qwen2.5-0.5B")
        == "FactualDPO_Qwen2.5-0.5B_delta10"
    )
    assert spec.run_name(spec.config_class(delta=2.5), "m") == "FactualDPO_m_delta2.5"
    from prefopt.config_layers import resolve_run_config

    config = resolve_run_config(
        spec, flags={"model.name_or_path": "org/Tiny-1B", "algorithm.delta": 4}
    )
    assert config.training["run_name"] == "FactualDPO_Tiny-1B_delta4"
    assert config.training["output_dir"] == str(Path("runs") / "FactualDPO_Tiny-1B_delta4")
    with pytest.raises(ConfigError, match="delta must be >= 0"):
        resolve_run_config(spec, flags={"algorithm.delta": -2})


def test_validate_records_counts_wrong_orientation_and_hints_flip() -> None:
    spec = get_algorithm("factual")
    rows = [(1, {"h_w": 0, "h_l": 1}), (2, {"h_w": 1, "h_l": 0}), (3, {"h_w": 0, "h_l": 0}),
            (5, {"h_w": True, "h_l": False})]  # fmt: skip
    with pytest.raises(UsageError) as info:
        spec.validate_records(rows, "pairs.jsonl")
    message = str(info.value)
    assert message.startswith("pairs.jsonl: 2 of 4 pairs have h_w > h_l")
    assert "lines 2, 5" in message and "prefopt data flip" in message
    spec.validate_records(rows[:1] + rows[2:3], "pairs.jsonl")  # fine orientation: no error


# -- end to end ----------------------------------------------------------------------------
def _eight_pairs(path: Path) -> Path:
    rows = synthetic_pairs(8, seed=3, with_h_flags=True)
    for index, row in enumerate(rows):  # 4 pairs with Δh = 1, 4 with Δh = 0 (both true)
        row["h_w"], row["h_l"] = (0, 1) if index % 2 == 0 else (0, 0)
    return write_pairs(path, rows)


def test_cli_factual_delta10_first_loss_is_closed_form(tiny_model: Path, tmp_path: Path) -> None:
    data = _eight_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        "train", "factual", "--delta", "10", "--model", str(tiny_model),
        "--train-file", str(data), "--output-dir", str(out), "--max-steps", "1",
        "--set", "training.per_device_train_batch_size=8", "--set", "training.logging_steps=1",
    )  # fmt: skip
    assert code == 0, stderr
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 1
    beta, delta = 0.1, 10.0
    softplus = math.log1p(math.exp(beta * delta))
    # A fresh adapter has m = 0 up to float32 noise: policy and reference log-probs come from
    # separate forward passes (differences of ~1e-4 nats on ~45-nat sequences).
    assert first["loss"] == pytest.approx((4 * softplus + 4 * math.log(2)) / 8, abs=2e-4)
    assert first["factual/delta_h_fraction"] == pytest.approx(0.5)
    assert first["factual/margin_below_delta"] == pytest.approx(1.0)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-4)  # no Δ in the rewards
    saved = (out / "prefopt_config.yaml").read_text()
    assert "run_name: FactualDPO_" in saved and "delta: 10.0" in saved


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the CLI in this process (no interpreter start-up); returns (exit code, stderr)."""
    from prefopt.cli.main import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_cli_refuses_unflipped_and_unflagged_data(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = synthetic_pairs(6, with_h_flags=True)
    rows[2].update(h_w=1, h_l=0)
    rows[4].update(h_w=1, h_l=0)
    bad = write_pairs(tmp_path / "unflipped.jsonl", rows)
    code, stderr = _cli(
        capsys, "train", "factual", "--model", str(tiny_model), "--train-file", str(bad),
        "--max-steps", "1",
        "--output-dir", str(tmp_path / "o1"),
    )  # fmt: skip
    assert code == 2
    assert f"{bad}: 2 of 6 pairs have h_w > h_l (lines 3, 5)" in stderr
    assert "prefopt data flip" in stderr and "Traceback" not in stderr

    rows = synthetic_pairs(3, with_h_flags=True)
    del rows[1]["h_l"]
    missing = write_pairs(tmp_path / "missing.jsonl", rows)
    code, stderr = _cli(
        capsys, "train", "factual", "--model", str(tiny_model), "--train-file", str(missing),
        "--max-steps", "1",
        "--output-dir", str(tmp_path / "o2"),
    )  # fmt: skip
    assert code == 2
    assert f"{missing}:2: h_l: missing field (the algorithm needs it)" in stderr


def test_cli_refuses_flags_that_are_not_0_or_1(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``h_l: 7`` used to scale the margin by 7; it is refused like ``data flip`` does."""
    rows = synthetic_pairs(3, with_h_flags=True)
    rows[1].update(h_w=0, h_l=7)
    bad = write_pairs(tmp_path / "seven.jsonl", rows)
    code, stderr = _cli(
        capsys, "train", "factual", "--model", str(tiny_model), "--train-file", str(bad),
        "--max-steps", "1", "--output-dir", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 2
    assert f"{bad}:2: h_l: expected 0 or 1 (or true/false), got 7" in stderr
    assert "Traceback" not in stderr and not (tmp_path / "o").exists()
    spec = get_algorithm("factual")
    spec.validate_records([(1, {"h_w": True, "h_l": 1.0})], "ok.jsonl")  # bools and 1.0 pass
