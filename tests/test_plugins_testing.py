"""The helpers plugin authors test with: ``make_batch`` and ``train_one_step``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from prefopt.api import AlgorithmSpec, LossOutput, PreferenceBatch
from prefopt.errors import ConfigError
from prefopt.testing import make_batch, train_one_step


@dataclass
class RecordingConfig:
    scale: float = field(default=1.0, metadata={"help": "Multiplies the loss."})


SEEN: list[PreferenceBatch] = []


def make_recording_loss(config: RecordingConfig, ctx: Any = None) -> Any:
    """−log σ(policy margin), and remember every batch it was given."""

    def loss(batch: PreferenceBatch) -> LossOutput:
        import torch.nn.functional as F

        SEEN.append(batch)
        per_pair = -config.scale * F.logsigmoid(batch.logits_margin())
        return LossOutput(per_pair.mean(), per_pair, per_pair.detach() * 0 + 1, {"seen": 1.0})

    return loss


REFERENCE_FREE = AlgorithmSpec(
    "recording", "Records its batches.", RecordingConfig, make_recording_loss,
    needs_reference=False,
)  # fmt: skip


def test_make_batch_builds_a_preference_batch() -> None:
    batch = make_batch([-1.0, -2.0], [-3.0, -1.0], chosen_lengths=[2, 4], extras={"h_l": [1, 0]})
    assert batch.reference_chosen_logps is None and batch.size == 2
    assert batch.logits_margin().tolist() == [2.0, -1.0]
    assert batch.chosen_lengths.tolist() == [2, 4] and batch.rejected_lengths.tolist() == [1, 1]
    assert batch.extras["h_l"].tolist() == [1.0, 0.0]
    with_ref = make_batch([-1.0], [-3.0], [-2.0], [-2.0], requires_grad=True)
    assert with_ref.logits_margin().tolist() == [2.0]
    assert with_ref.policy_chosen_logps.requires_grad


def test_reference_free_spec_gets_no_reference(tiny_model: Path, tmp_path: Path) -> None:
    SEEN.clear()
    metrics = train_one_step(REFERENCE_FREE, tiny_model, tmp_path / "free", pairs=2, scale=2.0)
    assert SEEN and all(
        b.reference_chosen_logps is None and b.reference_rejected_logps is None for b in SEEN
    )
    first = SEEN[0]
    expected = (
        -2.0 * sum(math.log(1 / (1 + math.exp(-m))) for m in first.policy_log_ratio().tolist()) / 2
    )
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["seen"] == 1.0  # the loss's own metric is logged
    assert (first.chosen_lengths > 1).all()  # real completion lengths reach the loss


def test_reference_spec_gets_reference_equal_to_policy_at_start(
    tiny_model: Path, tmp_path: Path
) -> None:
    SEEN.clear()
    with_reference = replace(REFERENCE_FREE, needs_reference=True)
    metrics = train_one_step(with_reference, tiny_model, tmp_path / "ref", pairs=2)
    batch = SEEN[0]
    assert batch.reference_chosen_logps is not None
    # LoRA starts at B = 0: the reference pass (adapter disabled) equals the policy.
    assert batch.reference_chosen_logps.tolist() == pytest.approx(
        batch.policy_chosen_logps.detach().tolist(), rel=1e-4
    )
    assert metrics["loss"] == pytest.approx(math.log(2), rel=1e-3)  # room for bf16 autocast


def test_train_one_step_by_name_and_its_errors(tiny_model: Path, tmp_path: Path) -> None:
    metrics = train_one_step("dpo", tiny_model, tmp_path / "dpo", beta=0.5)
    assert metrics["loss"] == pytest.approx(math.log(2), rel=1e-3)
    assert math.isfinite(metrics["grad_norm"])
    with pytest.raises(ConfigError, match="unknown config key 'algorithm.gamma'"):
        train_one_step("dpo", tiny_model, tmp_path / "bad", gamma=1.0)
    needs_column = replace(REFERENCE_FREE, name="needs-col", extra_columns=("score",))
    with pytest.raises(ValueError, match=r"lack the extra column\(s\) \['score'\]"):
        train_one_step(needs_column, tiny_model, tmp_path / "col")
