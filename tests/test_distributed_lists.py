"""Data parallelism on lists and per-turn conversations, whose processes hold different numbers
of pairs: `--num-processes 2` (gloo on CPU) logs what one process logs with the same global
batch, the evaluation's repeated last samples left out."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from prefopt.testing import run_cli, synthetic_conversations, synthetic_lists, write_pairs

PROCESS_BATCH = 2  # lists or conversations per process and step


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def train(
    model: Path, algorithm: str, data: Path, evals: Path, out: Path, processes: int,
    extra: list[str],
) -> list[dict[str, Any]]:  # fmt: skip
    per_device = PROCESS_BATCH * 2 // processes
    sets = [
        "training.logging_steps=1", "training.save_strategy=no", "training.bf16=false",
        "training.learning_rate=1e-3", "training.eval_strategy=steps", "training.eval_steps=2",
        "training.eval_on_start=true", f"training.per_device_train_batch_size={per_device}",
        f"training.per_device_eval_batch_size={per_device}",
        f"reference.cache_dir={out.parent / (out.name + '-cache')}",  # each run fills its own
    ]  # fmt: skip
    code, _, stderr = run_cli(
        "train", algorithm, "--model", str(model), "--train-file", str(data), "--eval-file",
        str(evals), "--output-dir", str(out), "--max-steps", "3", "--num-processes",
        str(processes), *(item for value in sets for item in ("--set", value)), *extra, "-q",
    )  # fmt: skip
    assert code == 0, stderr
    return records(out)


def compare(single: list[dict[str, Any]], double: list[dict[str, Any]], keys: set[str]) -> None:
    assert [r.get("step") for r in single] == [r.get("step") for r in double]
    for one, two in zip(single, double, strict=True):
        shared = set(one) & keys
        assert shared == set(two) & keys
        for key in shared:
            assert two[key] == pytest.approx(one[key], abs=1e-6, rel=1e-6), (one.get("step"), key)


PAIR_METRICS = {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected", "logps/ref_chosen", "logps/ref_rejected",
                "logps/chosen_shift_per_token"}  # fmt: skip
EVAL_METRICS = {f"eval_{name}" for name in PAIR_METRICS}


def test_lists_with_every_pair_train_on_two_processes_as_on_one(
    tiny_model: Path, tmp_path: Path
) -> None:
    """β-DPO normalises its loss by the kept pairs of the global batch, so with uneven pair
    counts (the gathered statistics, and each process's rows of the kept mask) the two runs
    agree in everything: loss, gradient norm, β, the pair metrics and the evaluation's
    log-probs (5 lists in global batches of 4: the second batch's 3 repeated lists are left
    out)."""
    data = write_pairs(tmp_path / "lists.jsonl", synthetic_lists(24, seed=2))
    evals = write_pairs(tmp_path / "eval.jsonl", synthetic_lists(5, seed=9))
    extra = ["--set", "lists.pairs=all", "--rho", "0.5"]
    single = train(tiny_model, "beta-dpo", data, evals, tmp_path / "one", 1, extra)
    double = train(tiny_model, "beta-dpo", data, evals, tmp_path / "two", 2, extra)
    steps = [r for r in single if "loss" in r]
    assert len(steps) == 3 and steps[-1]["loss"] != pytest.approx(steps[0]["loss"], abs=1e-4)
    # An evaluation's β comes from its gathered batch, repeated lists included (as for pairs),
    # so its rewards are compared through the log-probs, which take no β.
    eval_logps = {name for name in EVAL_METRICS if name.startswith("eval_logps/")}
    keys = {"loss", "grad_norm", "beta", "keep_ratio", "gap_mean"} | PAIR_METRICS | eval_logps
    compare(single, double, keys)
    assert sum("eval_rewards/accuracies" in r for r in double) == 3  # steps 0, 2 and 3
    # Before training every pair's loss is ln 2: so is the evaluation's loss on 2 processes,
    # whose last batch repeats lists (the Trainer keeps the first rows, one process's loss
    # scaled by its share of the global batch, unless every process reports the batch's loss).
    assert double[0]["eval_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert single[0]["eval_loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_conversations_train_on_two_processes(tiny_model: Path, tmp_path: Path) -> None:
    """Plain DPO averages each process's own turns (as gradient accumulation averages its
    micro-batches), so the losses may differ from one process's; every gathered metric of the
    first step and of the evaluation before training (same weights) is the same."""
    data = write_pairs(tmp_path / "turns.jsonl", synthetic_conversations(12, seed=4))
    evals = write_pairs(tmp_path / "eval.jsonl", synthetic_conversations(5, seed=8))
    single = train(tiny_model, "dpo", data, evals, tmp_path / "one", 1, [])
    double = train(tiny_model, "dpo", data, evals, tmp_path / "two", 2, [])
    first = [r for r in single if r.get("step") == 0 or ("loss" in r and r["step"] == 1)]
    first_two = [r for r in double if r.get("step") == 0 or ("loss" in r and r["step"] == 1)]
    assert len(first) == 2 and "eval_rewards/margins" in first[0]
    compare(first, first_two, PAIR_METRICS | EVAL_METRICS)
    assert [r.get("step") for r in single] == [r.get("step") for r in double]


def test_the_last_batchs_repeated_lists_leave_evaluation_metrics_only() -> None:
    """Two processes (the other one's tensors stand in as given), two lists each, the data set
    ending one list into the last global batch: an evaluation keeps the pairs of global list 0
    only; training keeps every pair (it trains on the repeats, and with gradient accumulation
    the end-of-data flag also falls on batches that repeat nothing)."""
    from types import SimpleNamespace

    import torch

    from prefopt.training.pair_gather import BatchPairGather

    mine = {"pair_sample": torch.tensor([0, 0, 1]), "value": torch.tensor([1.0, 2.0, 3.0])}
    other = {"pair_sample": torch.tensor([0, 1, 1, 1]), "value": torch.tensor([4.0, 5, 6, 7])}

    def gather(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.shape == (1,):  # the pair counts
            return torch.tensor([3, 4])
        width = 4
        padded = torch.cat([tensor, tensor.new_zeros(width - tensor.shape[0])])
        theirs = other["value"] if tensor.is_floating_point() else other["pair_sample"] + 2
        return torch.cat([padded, theirs])

    accelerator = SimpleNamespace(
        num_processes=2, process_index=0, device="cpu", gather=gather,
        gradient_state=SimpleNamespace(end_of_dataloader=True, remainder=1),
    )  # fmt: skip
    evaluation = BatchPairGather(accelerator, mine["pair_sample"], 2, evaluation=True)
    assert evaluation(mine["value"]).tolist() == [1.0, 2.0]  # global list 0's pairs
    training = BatchPairGather(accelerator, mine["pair_sample"], 2, evaluation=False)
    assert training(mine["value"]).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
