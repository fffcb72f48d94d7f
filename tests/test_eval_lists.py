"""`prefopt eval` on lists of ranked responses: ranking accuracy, Kendall τ-b, top-1 accuracy
and accuracy by position, against values computed by hand, and end to end on a trained run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from prefopt.eval.list_metrics import kendall_tau_b, position, ranking_metrics
from prefopt.testing.cli_runner import run_cli_in_process as run_cli


def test_kendall_tau_b_by_hand() -> None:
    assert kendall_tau_b([3, 2, 1], [30, 20, 10]) == 1.0
    assert kendall_tau_b([1, 2, 3], [30, 20, 10]) == -1.0
    # quality ties (2, 2): n0 = 6 pairs, tied in q: 1, tied in r: 0; C = 4, D = 1
    rewards, quality = [0.9, 0.1, 0.5, 0.3], [3, 2, 2, 1]
    # pairs: (0,1) C, (0,2) C, (0,3) C, (1,2) q-tie, (1,3) dr=-0.2 dq=1 D, (2,3) C
    assert kendall_tau_b(rewards, quality) == pytest.approx((4 - 1) / math.sqrt(5 * 6))
    assert kendall_tau_b([1, 2], [5, 5]) is None  # quality tied throughout


def test_ranking_metrics_by_hand() -> None:
    rewards = [[0.9, 0.1, 0.5, 0.3], [0.2, 0.4]]
    quality = [[3, 2, 2, 1], [1, 0]]
    metrics = ranking_metrics(rewards, quality)
    # list 1 ordered pairs: (0,1) ok, (0,2) ok, (0,3) ok, (1,3) wrong, (2,3) ok; list 2: wrong
    assert metrics["ordered_pairs"] == 6
    assert metrics["ranking_accuracy"] == pytest.approx(4 / 6)
    assert metrics["top1_accuracy"] == pytest.approx(1 / 2)  # list 2 picks the worse one
    tau1 = (4 - 1) / math.sqrt(5 * 6)
    assert metrics["kendall_tau"] == pytest.approx((tau1 + -1.0) / 2)
    # position 1: (0,1), (0,2), (0,3) in list 1 (3 right) and (0,1) in list 2 (wrong): 3/4
    # position 2: (1,3) wrong and (2,3) right: 1/2 (responses 1 and 2 share position 2)
    assert metrics["ranking_accuracy[position=1]"] == pytest.approx(3 / 4)
    assert metrics["ranking_accuracy[position=2]"] == pytest.approx(1 / 2)
    assert position([3, 2, 2, 1], 2) == 2 and position([3, 2, 2, 1], 3) == 4


def test_top1_counts_any_of_the_tied_best() -> None:
    metrics = ranking_metrics([[0.1, 0.9, 0.0]], [[5, 5, 1]])
    assert metrics["top1_accuracy"] == 1.0


def test_eval_on_lists_end_to_end(tiny_model: Path, pairs_file: Path, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    lists = tmp_path / "lists.jsonl"
    lists.write_text("".join(
        json.dumps({"prompt": a["prompt"], "responses": [a["chosen"], a["rejected"],
                    b["rejected"]], "scores": [2, 1, 0]}) + "\n"
        for a, b in zip(rows[::2], rows[1::2], strict=True)
    ))  # fmt: skip
    run = tmp_path / "run"
    code, _, stderr = run_cli("train", "dpo", "--model", str(tiny_model), "--train-file",
                              str(lists), "--output-dir", str(run), "--max-steps", "6",
                              "--set", "training.bf16=false", "--set", "lists.pairs=all",
                              "--set", "training.learning_rate=1e-3")  # fmt: skip
    assert code == 0, stderr
    per_list = tmp_path / "per_list.jsonl"
    code, stdout, stderr = run_cli("eval", "pairs", str(run), "--data", str(lists),
                                   "--out", str(per_list), "--length-normalize")  # fmt: skip
    assert code == 0, stderr
    assert "--length-normalize applies to pairs; lists are ranked by their summed" in (
        stdout + stderr
    )
    results = json.loads((run / "eval_results.json").read_text())
    metrics = results["metrics"]
    assert results["lists"] == 32 and metrics["ordered_pairs"] == 96
    rows_out = [json.loads(line) for line in per_list.read_text().splitlines()]
    assert [r["line"] for r in rows_out] == list(range(1, 33)) and rows_out[0]["list"] == 0
    assert f"per list: {per_list}" in stdout
    recomputed = ranking_metrics([r["rewards"] for r in rows_out], [r["quality"] for r in rows_out])
    assert recomputed == metrics
    assert metrics["ranking_accuracy"] > 0.5  # trained toward the order
    assert "kendall_tau" in stdout and "top1_accuracy" in stdout


def test_top1_shares_credit_among_tied_rewards_and_skips_lists_all_tied() -> None:
    # rewards tie between a best (q 5) and a worse (q 1) response: half a hit
    metrics = ranking_metrics([[0.5, 0.5, 0.1], [0.2, 0.2]], [[5, 1, 0], [3, 3]])
    assert metrics["top1_accuracy"] == 0.5  # the second list, all tied, has no best to find
