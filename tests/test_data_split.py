"""``prefopt data split``: deterministic, exact, group-preserving train/eval files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefopt.cli.data import app
from prefopt.data.io import read_rows
from prefopt.data.split import default_outputs, eval_count, split_file
from prefopt.errors import DataError, UsageError

runner = CliRunner()


def pairs(count: int, prompts: int) -> list[dict]:
    return [
        {"id": i, "prompt": f"q{i % prompts}", "chosen": f"a{i}", "rejected": f"b{i}"}
        for i in range(count)
    ]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_exact_fraction_disjoint_and_complete(tmp_path: Path) -> None:
    source = write(tmp_path / "d.jsonl", pairs(200, 200))
    summary = split_file(source, 0.15, seed=3)
    train, evaluation = read_rows(summary.train_path), read_rows(summary.eval_path)
    assert (len(train), len(evaluation)) == (170, 30)
    assert (summary.train_rows, summary.eval_rows, summary.eval_units) == (170, 30, 30)
    ids = sorted(r["id"] for r in train + evaluation)
    assert ids == list(range(200))
    assert [r["id"] for r in train] == sorted(r["id"] for r in train)  # input order kept
    assert summary.train_path.name == "d_train.jsonl" and summary.eval_path.name == "d_eval.jsonl"


def test_same_seed_same_split_other_seed_other_split(tmp_path: Path) -> None:
    source = write(tmp_path / "d.jsonl", pairs(100, 100))

    def eval_ids(seed: int, name: str) -> list[int]:
        summary = split_file(
            source, 0.2, seed, train_path=tmp_path / f"{name}_t.jsonl",
            eval_path=tmp_path / f"{name}_e.jsonl",
        )  # fmt: skip
        return [r["id"] for r in read_rows(summary.eval_path)]

    first = eval_ids(1, "a")
    assert len(first) == 20
    assert eval_ids(1, "b") == first
    assert eval_ids(2, "c") != first


def test_group_by_prompt_keeps_groups_together(tmp_path: Path) -> None:
    source = write(tmp_path / "d.jsonl", pairs(120, 12))  # 12 prompts, 10 pairs each
    summary = split_file(source, 0.25, seed=0, group_by="prompt")
    train = {r["prompt"] for r in read_rows(summary.train_path)}
    evaluation = {r["prompt"] for r in read_rows(summary.eval_path)}
    assert not train & evaluation
    assert (len(train), len(evaluation)) == (9, 3)
    assert (summary.units, summary.eval_units, summary.eval_rows) == (12, 3, 30)


def test_group_by_conversational_prompt(tmp_path: Path) -> None:
    rows = [
        {"prompt": [{"role": "user", "content": f"q{i % 4}"}], "chosen": "a", "rejected": "b"}
        for i in range(16)
    ]
    summary = split_file(write(tmp_path / "c.jsonl", rows), 0.5, group_by="prompt")
    assert (summary.eval_units, summary.eval_rows) == (2, 8)


def test_small_inputs_keep_one_unit_per_side() -> None:
    assert eval_count(0.01, 10) == 1
    assert eval_count(0.99, 10) == 9
    assert eval_count(0.1, 1000) == 100


def test_errors(tmp_path: Path) -> None:
    source = write(tmp_path / "d.jsonl", pairs(10, 10))
    with pytest.raises(UsageError, match="between 0 and 1"):
        split_file(source, 1.0)
    with pytest.raises(UsageError, match="must be different files"):
        split_file(source, 0.5, train_path=tmp_path / "x.jsonl", eval_path=tmp_path / "x.jsonl")
    with pytest.raises(
        DataError, match=r"d.jsonl:1: source: missing field \(needed by --group-by\)"
    ):
        split_file(source, 0.5, group_by="source")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]
    (tmp_path / "d_eval.jsonl").write_text("old\n")
    with pytest.raises(UsageError, match="d_eval.jsonl already exists"):
        split_file(source, 0.5)
    assert not (tmp_path / "d_train.jsonl").exists()


def test_bad_row_midway_leaves_neither_output(tmp_path: Path) -> None:
    source = tmp_path / "d.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in pairs(5, 5)) + "{broken\n")
    with pytest.raises(DataError, match="d.jsonl:6: malformed JSON"):
        split_file(source, 0.2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


def test_default_outputs_keep_gzip(tmp_path: Path) -> None:
    assert default_outputs(tmp_path / "x.jsonl.gz") == (
        tmp_path / "x_train.jsonl.gz",
        tmp_path / "x_eval.jsonl.gz",
    )


def test_cli_split(tmp_path: Path) -> None:
    source = write(tmp_path / "d.jsonl", pairs(40, 8))
    args = ["split", str(source), "--eval-fraction", "0.25", "--group-by", "prompt", "--seed", "5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 of 8 prompt groups in eval" in result.output
    assert len(read_rows(tmp_path / "d_eval.jsonl")) == 10
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already exists; pass --force" in again.stderr
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    bad = runner.invoke(app, ["split", str(source), "--eval-fraction", "0"])
    assert bad.exit_code == 2 and "between 0 and 1" in bad.stderr


def test_one_unit_cannot_be_split_and_nothing_is_written(tmp_path: Path) -> None:
    """Each side gets at least one unit, so one row (or one group) is an error, not an empty
    eval file."""
    source = write(tmp_path / "one.jsonl", pairs(1, 1))
    result = runner.invoke(app, ["split", str(source), "--eval-fraction", "0.5"])
    assert result.exit_code == 2
    assert result.stderr == f"error: {source}: 1 row; a split needs at least 2, one on each side\n"
    grouped = write(tmp_path / "grouped.jsonl", pairs(6, 1))  # six pairs of one prompt
    result = runner.invoke(
        app, ["split", str(grouped), "--eval-fraction", "0.5", "--group-by", "prompt"]
    )
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {grouped}: 1 prompt group; a split needs at least 2, one on each side\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grouped.jsonl", "one.jsonl"]
