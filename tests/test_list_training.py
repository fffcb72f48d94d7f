"""Training on lists of ranked responses: a list of two is exactly a pair (same losses, same
gradients), lists of four train every pair loss from one forward, the pairs and their flags
by hand, and the refusals."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from prefopt.testing.cli_runner import run_cli_in_process as run_cli
from prefopt.training.list_data import list_preference_batch

RUN = [
    "--max-steps", "4", "--set", "training.logging_steps=1", "--set", "training.bf16=false",
    "--set", "training.per_device_train_batch_size=8",
]  # fmt: skip


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def logged(out: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if "loss" in line]


def as_lists(pairs_file: Path, path: Path) -> Path:
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    return write(
        path,
        [{"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]], "scores": [1, 0]}
         for r in rows],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("algorithm", "extra"),
    [
        ("dpo", []),
        ("factual", ["--delta", "5"]),
        ("beta-dpo", []),
        ("mix", ["--loss", "dpo=1", "--loss", "nll=0.5"]),
    ],
)
def test_a_list_of_two_is_exactly_a_pair(
    algorithm: str, extra: list[str], tiny_model: Path, tmp_path: Path
) -> None:
    """Every path: the same losses, gradients and log-probs, bit for bit, for a plain loss, a
    loss with extra columns (the flags from h), a stateful filtering one, and a mix."""
    from prefopt.testing import synthetic_pairs, write_pairs

    rows = synthetic_pairs(64, with_h_flags=True, both_true=0.3)
    pairs_file = write_pairs(tmp_path / "pairs.jsonl", rows)
    lists = write(tmp_path / "lists.jsonl", [
        {"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]], "scores": [1, 0],
         "h": [r["h_w"], r["h_l"]]}
        for r in rows
    ])  # fmt: skip
    runs = {}
    for name, data in (("pairs", pairs_file), ("lists", lists)):
        out = tmp_path / name
        code, _, stderr = run_cli("train", algorithm, "--model", str(tiny_model), "--train-file",
                                  str(data), "--output-dir", str(out), *RUN, *extra)  # fmt: skip
        assert code == 0, stderr
        runs[name] = logged(out)
    assert len(runs["lists"]) == 4
    for pair_step, list_step in zip(runs["pairs"], runs["lists"], strict=True):
        assert set(list_step) == set(pair_step)
        for key, value in pair_step.items():
            if key != "pairs_per_second":
                assert list_step[key] == value, (algorithm, pair_step["step"], key)  # bit for bit


def test_lists_of_four_train_dpo_and_factual(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    lists = write(tmp_path / "lists4.jsonl", [
        {"prompt": a["prompt"], "responses": [a["chosen"], a["rejected"], b["rejected"],
         "I do not know."], "scores": [3, 1, 1, 0], "h": [0, 1, 1, 0]}
        for a, b in zip(rows[::2], rows[1::2], strict=True)
    ])  # fmt: skip
    for algorithm in ("dpo", "factual"):
        out = tmp_path / algorithm
        code, _, stderr = run_cli("train", algorithm, "--model", str(tiny_model), "--train-file",
                                  str(lists), "--output-dir", str(out), *RUN,
                                  "--set", "lists.pairs=all")  # fmt: skip
        assert code == 0, stderr
        steps = logged(out)
        assert abs(steps[0]["loss"] - math.log(2)) < 1e-6 and steps[-1]["loss"] < math.log(2)
        if algorithm == "factual":
            # all: (0,1) Δh 1, (0,2) Δh 1, (0,3) 0, (1,3) −1, (2,3) −1 — two in five.
            assert steps[0]["factual/delta_h_fraction"] == pytest.approx(0.4)


def collated(qualities: list[list[float]], pairing: str) -> dict[str, Any]:
    from prefopt.data.list_collate import ListCollator
    from prefopt.data.list_tokenize import TokenizedList

    items = [TokenizedList([1], [[2]] * len(q), q) for q in qualities]
    return ListCollator("prefix", 0, pairing=pairing)(items)


def index_pairs(qualities: list[list[float]], pairing: str) -> list[tuple[int, int]]:
    batch = collated(qualities, pairing)
    return list(zip(batch["pair_better"].tolist(), batch["pair_worse"].tolist(), strict=True))


def test_the_collator_picks_the_pairs_per_list() -> None:
    # sequences 0-3, 4-5 (all tied), 6-8 (a ranking: -1 best, then -2, then -3)
    qualities = [[3.0, 1.0, 1.0, 0.0], [5.0, 5.0], [-1.0, -3.0, -2.0]]
    assert index_pairs(qualities, "best-worst") == [(0, 3), (6, 7)]
    assert index_pairs(qualities, "best-rest") == [(0, 1), (0, 2), (0, 3), (6, 8), (6, 7)]
    assert index_pairs(qualities, "all") == [
        (0, 1), (0, 2), (0, 3), (1, 3), (2, 3), (6, 8), (6, 7), (8, 7),
    ]  # fmt: skip
    batch = collated(qualities, "all")
    assert batch["pair_sample"].tolist() == [0, 0, 0, 0, 0, 2, 2, 2]
    assert batch["pair_gap"].tolist() == [2.0, 2.0, 3.0, 1.0, 1.0, 1.0, 2.0, 1.0]
    assert batch["list_ranks"].tolist() == [0, 1, 1, 2, 0, 0, 0, 2, 1]
    tied_best = collated([[2.0, 2.0, 0.0]], "best-rest")
    assert tied_best["pair_better"].tolist() == [0, 1]  # each tied best against the rest


def test_ties_are_exact_whatever_the_batch_dtype() -> None:
    """Scores that float32 (or bf16, as DeepSpeed casts float inputs) would merge still form
    their pairs: the collator decides from the exact values and passes integers."""
    batch = collated([[16777217.0, 16777216.0], [0.8123, 0.8130, 0.1]], "all")
    assert index_pairs([[16777217.0, 16777216.0], [0.8123, 0.8130, 0.1]], "all") == [
        (0, 1), (3, 2), (3, 4), (2, 4),
    ]  # fmt: skip
    assert batch["list_ranks"].dtype == torch.long


def test_the_pairs_of_a_list_batch_carry_their_logps_flags_and_gap() -> None:
    logps = torch.tensor([-1.0, -2.0, -3.0, -4.0, -5.0], dtype=torch.float64)
    reference = logps - 0.5
    lengths = torch.tensor([3, 4, 5, 6, 7])
    inputs = collated([[0.0, 2.0, 1.0], [1.0, 4.0]], "best-rest")
    inputs["flags"] = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    batch = list_preference_batch(logps, lengths, reference, inputs)
    assert batch.policy_chosen_logps.tolist() == [-2.0, -2.0, -5.0]
    assert batch.policy_rejected_logps.tolist() == [-3.0, -1.0, -4.0]
    assert batch.reference_chosen_logps.tolist() == [-2.5, -2.5, -5.5]
    assert batch.chosen_lengths.tolist() == [4, 4, 7]
    assert batch.extras["h_w"].tolist() == [0.0, 0.0, 0.0]
    assert batch.extras["h_l"].tolist() == [0.0, 1.0, 1.0]
    assert batch.extras["score_gap"].tolist() == [1.0, 2.0, 3.0]
    assert batch.lists is not None and batch.lists.pair_list.tolist() == [0, 0, 1]


def test_refusals_name_the_problem(tiny_model: Path, tmp_path: Path) -> None:
    good = {"prompt": "Question: q?\nAnswer: ", "responses": ["a.", "b."], "scores": [1, 0]}
    lists = write(tmp_path / "lists.jsonl", [good, good])
    mixed = write(tmp_path / "mixed.jsonl",
                  [good, {"prompt": "p", "chosen": "a", "rejected": "b"}])  # fmt: skip
    pair_first = write(tmp_path / "pair_first.jsonl",
                       [{"prompt": "p", "chosen": "a", "rejected": "b"}, good])  # fmt: skip
    cases = [
        (
            pair_first,
            "dpo",
            [],
            f"{pair_first}:2: responses: a list of responses in a file of pairs",
        ),  # fmt: skip
        (lists, "factual", [], f"{lists}:1: h: missing field (algorithm 'factual' needs"),
        (
            mixed,
            "dpo",
            [],
            f"{mixed}:2: chosen: a pair in a file of lists (its first record's kind)",
        ),
        (lists, "dpo", ["--set", "lists.pairs=some"], "lists.pairs: expected best-worst"),
        (lists, "dpo", ["--set", "lists.weight=heavy"], "lists.weight: expected none or gap"),
        (
            lists,
            "dpo-pl",
            ["--set", "lists.weight=gap"],
            "lists.weight=gap weighs the pairs of a pair loss; 'dpo-pl' ranks whole lists",
        ),
        (lists, "lipo", ["--set", "lists.weight=gap"], "'lipo' ranks whole lists and has no"),
    ]
    for data, algorithm, extra, message in cases:
        out = tmp_path / f"out-{algorithm}"
        code, _, stderr = run_cli("train", algorithm, "--model", str(tiny_model), "--train-file",
                                  str(data), "--output-dir", str(out), *RUN, *extra)  # fmt: skip
        assert code == 2, (message, stderr)
        assert message in stderr and "Traceback" not in stderr
        assert not out.exists()


def test_lists_all_tied_are_left_out(tiny_model: Path, tmp_path: Path, caplog: Any) -> None:
    good = {
        "prompt": "Question: q?\nAnswer: ",
        "responses": ["a.", "b.", "c."],
        "scores": [2, 1, 0],
    }
    tied = {**good, "scores": [1, 1, 1]}
    lists = write(tmp_path / "lists.jsonl", [good, tied, good])
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="prefopt"):
        code, stdout, stderr = run_cli("train", "dpo", "--model", str(tiny_model),
                                       "--train-file", str(lists), "--output-dir", str(out),
                                       *RUN)  # fmt: skip
    assert code == 0, stderr
    assert re.search(r"train lists\s+│ 2 \(0 dropped\)", stdout), stdout  # the summary's unit
    assert "1 lists whose responses are all tied give no pair; left out (line 2 first)" in (
        caplog.text
    )
    assert "tokenize" in stderr and "2 lists" in stderr


def test_list_settings_on_pair_data_are_named_as_ignored(
    tiny_model: Path, pairs_file: Path, tmp_path: Path, caplog: Any
) -> None:
    with caplog.at_level("WARNING", logger="prefopt"):
        code, _, stderr = run_cli("train", "dpo", "--model", str(tiny_model), "--train-file",
                                  str(pairs_file), "--output-dir", str(tmp_path / "out"), *RUN,
                                  "--max-steps", "1", "--set", "lists.weight=gap")  # fmt: skip
    assert code == 0, stderr
    assert (f"{pairs_file} holds pairs: lists.weight=gap applies to lists of ranked responses "
            "and is ignored") in caplog.text  # fmt: skip


def test_gap_weighting_is_the_weighted_mean_of_the_pair_losses() -> None:
    from prefopt.algorithms.dpo import DPOConfig, DPOLoss
    from prefopt.training.list_data import gap_weighted

    logps = torch.tensor([-1.0, -2.5, -3.0, -4.0], dtype=torch.float64)
    inputs = collated([[3.0, 2.0, 0.0, 1.0]], "all")
    batch = list_preference_batch(logps, torch.ones(4, dtype=torch.long), logps * 0.9, inputs)
    output = DPOLoss(DPOConfig(beta=0.5))(batch)
    weighted = gap_weighted(output, batch)
    gaps = batch.extras["score_gap"].tolist()
    assert gaps == [1.0, 2.0, 3.0, 1.0, 2.0, 1.0]  # (0,1) (0,3) (0,2) (1,3) (1,2) (3,2)
    losses = output.per_pair.tolist()
    expected = sum(g * ell for g, ell in zip(gaps, losses, strict=True)) / sum(gaps)
    assert weighted.loss.item() == pytest.approx(expected, rel=1e-12)
    assert output.loss.item() == pytest.approx(sum(losses) / 6, rel=1e-12)  # unweighted: mean


def test_an_eval_file_of_another_kind_is_refused_before_training(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    lists = as_lists(pairs_file, tmp_path / "lists.jsonl")
    out = tmp_path / "out"
    code, _, stderr = run_cli("train", "dpo", "--model", str(tiny_model), "--train-file",
                              str(pairs_file), "--eval-file", str(lists), "--output-dir",
                              str(out), *RUN)  # fmt: skip
    assert code == 2 and f"{lists} holds lists but the training file holds pairs" in stderr
    assert not out.exists()
