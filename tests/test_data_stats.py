"""``prefopt data stats``: counts, length histograms and the h-flag distribution."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefopt.cli.data import app
from prefopt.data.stats import bucket_index, bucket_label, compute_stats
from prefopt.errors import DataError

runner = CliRunner()

ROWS = [
    {"prompt": "p" * 10, "chosen": "c" * 40, "rejected": "r" * 100, "h_w": 0, "h_l": 1},
    {"prompt": "p" * 31, "chosen": "c" * 32, "rejected": "r" * 5000, "h_w": 1, "h_l": 0},
    {"prompt": "p" * 70, "chosen": "same", "rejected": "same", "h_w": 0, "h_l": 1},
    {
        "prompt": [{"role": "system", "content": "s" * 5}, {"role": "user", "content": "u" * 5}],
        "chosen": [{"role": "assistant", "content": "c" * 64}],
        "rejected": [{"role": "assistant", "content": "r" * 63}],
        "h_w": "yes",
        "h_l": 0,
        "id": 4,
    },
]


def write(path: Path) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_buckets() -> None:
    assert [bucket_index(n) for n in (0, 31, 32, 63, 64, 40000)] == [0, 0, 1, 1, 2, 11]
    assert bucket_label(0) == "0–31" and bucket_label(1) == "32–63"
    assert bucket_label(11) == "≥ 32,768"


def test_compute_stats(tmp_path: Path) -> None:
    stats = compute_stats(write(tmp_path / "s.jsonl.gz"))
    assert stats.rows == 4
    assert dict(stats.kinds) == {"standard": 3, "conversational": 1}
    assert stats.fields["id"] == 1 and stats.fields["prompt"] == 4
    prompt, chosen, rejected = (stats.lengths[p] for p in ("prompt", "chosen", "rejected"))
    assert (prompt.minimum, prompt.maximum, prompt.total) == (10, 70, 10 + 31 + 70 + 10)
    assert chosen.buckets[:3] == [1, 2, 1]  # 4 | 40, 32 | 64
    assert rejected.maximum == 5000 and rejected.buckets[bucket_index(5000)] == 1
    assert rejected.mean == (100 + 5000 + 4 + 63) / 4
    assert dict(stats.prompt_turns) == {2: 1}
    assert dict(stats.h_counts) == {(0, 1): 2, (1, 0): 1}
    assert stats.h_invalid == 1
    assert stats.identical == 1


def test_cli_stats_tables_and_json(tmp_path: Path) -> None:
    source = write(tmp_path / "s.jsonl.gz")
    result = runner.invoke(app, ["stats", str(source)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "│ conversational records │    1 │  25.0% │" in out
    assert "│ chosen == rejected     │    1 │  25.0% │" in out
    assert "│ (1, 0)     │    1 │ 25.0% │" in out
    assert "│ invalid    │    1 │ 25.0% │" in out
    assert "│ Δh = 1     │    2 │ 50.0% │" in out
    assert "4,096–8,191" in out and "lengths (characters)" in out
    as_json = json.loads(runner.invoke(app, ["stats", str(source), "--json"]).stdout)
    assert as_json["rows"] == 4
    assert as_json["h_flags"] == {"0,1": 2, "1,0": 1}
    assert as_json["lengths"]["rejected"]["histogram"]["4,096–8,191"] == 1


def test_cli_stats_bad_file(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_bytes(b'{"prompt": "a"}\n\xff\xfe\n')
    result = runner.invoke(app, ["stats", str(tmp_path / "bad.jsonl")])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {tmp_path / 'bad.jsonl'}:2: not valid UTF-8")


# -- several processes ----------------------------------------------------------------------

RANGE = 512  # bytes: a few lines a range, so a small file spans many ranges


def many_rows(path: Path, copies: int = 60) -> Path:
    """ROWS over and over (they differ in kind, lengths and flags), with blank lines."""
    lines = [json.dumps(r) + "\n" for r in ROWS] * copies
    lines[7:7] = ["\n", "  \n"]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_several_processes_count_what_one_counts(tmp_path: Path) -> None:
    source = many_rows(tmp_path / "s.jsonl")
    one = compute_stats(source, workers=1, range_bytes=RANGE)
    two = compute_stats(source, workers=2, range_bytes=RANGE)
    assert (one.workers, two.workers) == (1, 2)
    assert two.to_dict() == one.to_dict()
    assert two.rows == 240 and dict(two.h_counts) == {(0, 1): 120, (1, 0): 60}
    assert two.lengths["rejected"].minimum == 4 and two.lengths["rejected"].maximum == 5000
    assert compute_stats(source, workers=2).workers == 1  # under 16 MiB at the default ranges


def test_several_processes_report_the_first_bad_line_in_file_order(tmp_path: Path) -> None:
    source = many_rows(tmp_path / "s.jsonl")
    lines = source.read_bytes().splitlines(keepends=True)
    lines[150] = b"[1, 2]\n"  # not an object, in a later range
    lines[40] = b'{"prompt": \n'  # bad JSON, in an earlier one
    source.write_bytes(b"".join(lines))
    with pytest.raises(DataError) as caught:
        compute_stats(source, workers=2, range_bytes=RANGE)
    assert caught.value.line == 41 and "JSON" in str(caught.value)
    lines[40] = b"\n"
    source.write_bytes(b"".join(lines))
    with pytest.raises(DataError, match="expected a JSON object") as caught:
        compute_stats(source, workers=2, range_bytes=RANGE)
    assert caught.value.line == 151


def test_a_file_of_blank_lines_is_empty_for_several_processes_too(tmp_path: Path) -> None:
    source = tmp_path / "blank.jsonl"
    source.write_bytes(b"\n" * 4096)
    for workers in (1, 2):
        with pytest.raises(DataError, match="file is empty"):
            compute_stats(source, workers=workers, range_bytes=RANGE)
