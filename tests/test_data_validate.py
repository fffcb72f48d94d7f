"""``prefopt data validate``: every kind of problem, exit codes, JSON, token lengths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefopt.cli.data import app
from prefopt.data.validate import validate_file

runner = CliRunner()


def good(i: int, **extra) -> dict:
    return {"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": f"No {i}.", **extra}


def write_lines(path: Path, lines: list) -> Path:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path


def test_clean_file_exits_0(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "ok.jsonl", [good(i, h_w=0, h_l=1) for i in range(5)])
    result = runner.invoke(app, ["validate", str(source)])
    assert result.exit_code == 0, result.output
    assert "clean" in result.output and "not clean" not in result.output
    report = json.loads(runner.invoke(app, ["validate", str(source), "--json"]).stdout)
    assert report["clean"] is True
    assert report["rows"] == 5
    assert report["issues"] == {}
    assert report["h_flags"] == {"0,1": 5}


DIRTY = [
    good(1, h_w=0, h_l=1),  # 1 fine
    "{not json",  # 2 unreadable
    [1, 2],  # 3 unreadable
    {"prompt": "p", "chosen": "c"},  # 4 schema: rejected missing
    good(5, chosen=""),  # 5 empty
    good(6, rejected="Answer 6."),  # 6 identical
    good(1, h_w=0, h_l=1),  # 7 duplicate of line 1
    good(8, h_w=2, h_l=0),  # 8 h_flags
    good(9, h_w=1, h_l=0),  # 9 orientation
    good(10, h_w=True, h_l=False),  # 10 orientation
    good(11, prompt=5),  # 11 schema
]


def test_every_problem_is_counted_and_located(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "dirty.jsonl", DIRTY)
    report = validate_file(source)
    assert report.rows == 11
    assert not report.clean
    assert dict(report.counts) == {
        "unreadable": 2,
        "schema": 2,
        "empty": 1,
        "identical": 1,
        "duplicate": 1,
        "h_flags": 1,
        "orientation": 2,
    }
    located = {
        kind: [i.located(str(source)) for i in issues] for kind, issues in report.examples.items()
    }
    assert located["unreadable"][0].startswith(f"{source}:2: malformed JSON")
    assert located["unreadable"][1] == f"{source}:3: expected a JSON object, got a list"
    assert located["schema"] == [
        f"{source}:4: rejected: missing field",
        f"{source}:11: prompt: expected a string or a list of messages, got int 5",
    ]
    assert located["empty"] == [f"{source}:5: chosen: empty string"]
    assert located["identical"] == [f"{source}:6: rejected: identical to chosen"]
    assert located["duplicate"] == [f"{source}:7: same pair as line 1"]
    assert located["h_flags"][0].startswith(f"{source}:8: h_w: expected 0 or 1")
    assert [i.line for i in report.examples["orientation"]] == [9, 10]
    assert dict(report.h_counts) == {(0, 1): 2, (1, 0): 2}
    assert any("prefopt data flip" in tip for tip in report.suggestions())


def test_cli_dirty_file_exits_2_with_json(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "dirty.jsonl", DIRTY)
    result = runner.invoke(app, ["validate", str(source)])
    assert result.exit_code == 2
    assert "not clean" in result.output
    assert f"{source}:7: same pair as line 1" in result.output
    assert (
        "hint: 2 rows have (h_w, h_l) = (1, 0); for Factual-DPO training, run `prefopt data flip"
        in result.output
    )
    as_json = runner.invoke(app, ["validate", str(source), "--json"])
    assert as_json.exit_code == 2
    report = json.loads(as_json.stdout)
    assert report["clean"] is False
    assert report["issues"]["orientation"] == 2
    assert report["examples"]["duplicate"] == [f"{source}:7: same pair as line 1"]


def test_required_columns(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "f.jsonl", [good(1, h_w=0, h_l=1), good(2, h_w=0)])
    report = validate_file(source, extra_columns=["h_w", "h_l"])
    assert report.counts["schema"] == 1
    assert (
        report.examples["schema"][0].located("f")
        == "f:2: h_l: missing field (the algorithm needs it)"
    )
    result = runner.invoke(app, ["validate", str(source), "--require", "h_l"])
    assert result.exit_code == 2


def test_file_level_problems_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    result = runner.invoke(app, ["validate", str(tmp_path / "empty.jsonl")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'empty.jsonl'}: file is empty (no records)"
    both = runner.invoke(app, ["validate", "x.jsonl", "--model", "m", "--tokenizer", "t"])
    assert both.exit_code == 2 and "not both" in both.stderr
    bad_tok = write_lines(tmp_path / "ok.jsonl", [good(1)])
    missing = runner.invoke(app, ["validate", str(bad_tok), "--tokenizer", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "cannot load a tokenizer" in missing.stderr


def test_parquet_and_conversational(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    conv = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "hello"}],
        "rejected": [{"role": "assistant", "content": "bye"}],
    }
    pq.write_table(pa.Table.from_pylist([conv, conv]), tmp_path / "c.parquet")
    report = validate_file(tmp_path / "c.parquet")
    assert dict(report.record_kinds) == {"conversational": 2}
    assert dict(report.counts) == {"duplicate": 1}


# -- token lengths -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BPE tokenizer (with chat template) saved to a folder; no model is built."""
    from prefopt.testing import build_tiny_tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    build_tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def expected_lengths(tokenizer, row: dict) -> tuple[int, int, int]:
    """Independent count: prompt with BOS, each completion plus EOS (standard records)."""
    prompt = len(tokenizer(row["prompt"])["input_ids"])
    chosen = len(tokenizer(row["chosen"], add_special_tokens=False)["input_ids"]) + 1
    rejected = len(tokenizer(row["rejected"], add_special_tokens=False)["input_ids"]) + 1
    return prompt, chosen, rejected


def test_token_lengths_and_truncation(tmp_path: Path, tokenizer, tokenizer_dir: Path) -> None:
    rows = [
        {"prompt": "Question: What colour is the fox?\nAnswer: ", "chosen": "The fox is red.",
         "rejected": "The fox is a bright and fluent blue."},
        {"prompt": "Question: " + "the quick brown fox " * 12, "chosen": "Red.",
         "rejected": "Blue."},
        {"prompt": "Q", "chosen": "The quick brown fox jumps over the lazy dog " * 3,
         "rejected": "No."},
    ]  # fmt: skip
    source = write_lines(tmp_path / "t.jsonl", rows)
    lengths = [expected_lengths(tokenizer, r) for r in rows]
    max_prompt, max_length = 20, 30
    assert lengths[1][0] > max_length and lengths[2][1] > max_length - lengths[2][0]

    report = validate_file(
        source, tokenizer=tokenizer, max_length=max_length, max_prompt_length=max_prompt
    )
    tokens = report.lengths
    assert tokens is not None
    assert list(zip(tokens.prompt, tokens.chosen, tokens.rejected, strict=True)) == lengths
    prompts_over = sum(p > max_prompt for p, _, _ in lengths)
    assert tokens.prompts_truncated == prompts_over
    expected_completions = sum(max(c, r) > max_length - min(p, max_prompt) for p, c, r in lengths)
    assert tokens.completions_truncated == expected_completions
    assert tokens.dropped == 0
    assert tokens.distribution("prompt")["max"] == max(p for p, _, _ in lengths)

    result = runner.invoke(
        app,
        ["validate", str(source), "--model", str(tokenizer_dir), "--max-length", "30",
         "--max-prompt-length", "30", "--json"],
    )  # fmt: skip
    report_json = json.loads(result.stdout)
    assert report_json["tokens"]["dropped"] == 1  # the long prompt fills the whole budget
    assert report_json["tokens"]["lengths"]["chosen"]["max"] == max(c for _, c, _ in lengths)
    assert result.exit_code == 0  # length findings are reported, not failures


def test_token_table_in_cli_output(tmp_path: Path, tokenizer_dir: Path) -> None:
    source = write_lines(tmp_path / "t.jsonl", [good(i) for i in range(3)])
    result = runner.invoke(app, ["validate", str(source), "--tokenizer", str(tokenizer_dir)])
    assert result.exit_code == 0, result.output
    assert "token lengths" in result.output
    assert "pairs 3: prompts truncated 0, completions truncated 0, dropped 0" in result.output


def test_truncating_every_prompt_is_warned_with_its_share(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    """``--max-prompt-length 8`` truncating 100% of prompts used to be called just "clean"."""
    rows = [dict(good(i), prompt="Question: " + "the quick brown fox " * 4) for i in range(4)]
    source = write_lines(tmp_path / "t.jsonl", rows)
    result = runner.invoke(
        app, ["validate", str(source), "--tokenizer", str(tokenizer_dir),
              "--max-prompt-length", "8"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        "warning: 100% of pairs (4 of 4) would have their prompts truncated by "
        "--max-prompt-length 8" in result.output
    )
    assert "clean, but training would truncate pairs" in result.output


# -- several processes ----------------------------------------------------------------------

RANGE = 512  # bytes: a few lines a range, so a small file spans many ranges


def test_several_processes_make_the_report_one_process_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every kind of problem in many small ranges, blank lines between, and duplicates of
    pairs from far earlier ranges: the report (counts, the first examples with their lines,
    flags) is the serial one."""
    from prefopt.data import jsonl_ranges

    lines = []
    for copy in range(12):
        lines += [good(100 + copy, h_w=0, h_l=1), "", *DIRTY]
    source = write_lines(tmp_path / "many.jsonl", lines)
    one = validate_file(source, workers=1, range_bytes=RANGE)
    pools: list[int] = []
    map_ranges = jsonl_ranges.map_ranges

    def counted(path, ranges, work, workers):
        pools.append(workers)
        yield from map_ranges(path, ranges, work, workers)

    monkeypatch.setattr(jsonl_ranges, "map_ranges", counted)
    two = validate_file(source, workers=2, range_bytes=RANGE)
    assert pools == [2]  # the pool did the work
    assert two.to_dict() == one.to_dict()
    assert two.to_dict()["examples"]["duplicate"] == one.to_dict()["examples"]["duplicate"]
    # a copy is 12 rows; its 6 valid DIRTY pairs hold 5 distinct ones (good(1) twice), and
    # every later copy repeats all 6 of them: 1 + 11 * 6 duplicates
    assert two.rows == 12 * 12 and two.counts["duplicate"] == 1 + 11 * 6
    assert two.examples["duplicate"][0].line == 9  # copy 1 is lines 1-13: good(1) at 3 and 9
    assert two.examples["duplicate"][0].problem == "same pair as line 3"
    assert two.examples["duplicate"][1].line == 16  # copy 2 is lines 14-26: good(1) at 16
    assert two.examples["duplicate"][1].problem == "same pair as line 3"


def test_several_processes_refuse_an_empty_file(tmp_path: Path) -> None:
    from prefopt.errors import DataError

    (tmp_path / "blank.jsonl").write_bytes(b"\n" * 4096)
    for workers in (1, 2):
        with pytest.raises(DataError, match="file is empty"):
            validate_file(tmp_path / "blank.jsonl", workers=workers, range_bytes=RANGE)


def test_preferred_hallucinations_are_a_finding_in_a_dpo_file(tmp_path: Path) -> None:
    """A valid plain-DPO file with (h_w, h_l) = (1, 0) rows is clean (it exited 2 before): the
    rows are reported, with the flip hint; ``--factual`` makes them errors."""
    rows = [good(1, h_w=0, h_l=1), good(2, h_w=1, h_l=0), good(3, h_w=1, h_l=0)]
    source = write_lines(tmp_path / "dpo.jsonl", rows)
    plain = runner.invoke(app, ["validate", str(source), "--json"])
    assert plain.exit_code == 0
    report = json.loads(plain.stdout)
    assert (report["clean"], report["factual"]) == (True, False)
    assert report["issues"] == {"orientation": 2}
    assert report["suggestions"][0].startswith("2 rows have (h_w, h_l) = (1, 0); for Factual-DPO")
    shown = runner.invoke(app, ["validate", str(source)])
    assert shown.exit_code == 0 and "not clean" not in shown.output
    factual = runner.invoke(app, ["validate", str(source), "--factual", "--json"])
    assert factual.exit_code == 2
    assert json.loads(factual.stdout)["clean"] is False
    assert validate_file(source, factual=True).clean is False
