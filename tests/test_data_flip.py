"""``prefopt data flip``: the Factual-DPO label transformation."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from prefopt.cli.data import app
from prefopt.data.flip import default_output, flip_file, flip_row
from prefopt.data.io import read_rows
from prefopt.errors import DataError, UsageError

runner = CliRunner()


def row(h_w, h_l, **extra):
    return {"id": extra.pop("id", "x"), "prompt": "p", "chosen": "c", "rejected": "r",
            "h_w": h_w, "h_l": h_l, **extra}  # fmt: skip


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(params=["simdjson", "orjson"])
def peeker(request, monkeypatch):
    """Run a test with the simdjson fast path and with the orjson fallback."""
    if request.param == "orjson":
        monkeypatch.setitem(sys.modules, "simdjson", None)  # makes `import simdjson` fail
    else:
        pytest.importorskip("simdjson")
    return request.param


# -- one row -------------------------------------------------------------------------------


def test_only_1_0_rows_are_swapped() -> None:
    rows = {key: row(*key) for key in ((0, 0), (0, 1), (1, 0), (1, 1))}
    for key, r in rows.items():
        assert flip_row(r) == key
    assert rows[(1, 0)] == dict(row(0, 1), chosen="r", rejected="c", flipped=True)
    for key in ((0, 0), (0, 1), (1, 1)):
        assert rows[key] == dict(row(*key), flipped=False)


def test_swap_keeps_field_order_and_value_types() -> None:
    r = {"h_l": False, "rejected": "R", "meta": {"a": 1}, "chosen": "C", "h_w": True}
    flip_row(r)
    assert list(r) == ["h_l", "rejected", "meta", "chosen", "h_w", "flipped"]
    assert r == {"h_l": True, "rejected": "C", "meta": {"a": 1}, "chosen": "R", "h_w": False,
                 "flipped": True}  # fmt: skip
    floats = row(1.0, 0.0)
    flip_row(floats)
    assert (floats["h_w"], floats["h_l"]) == (0.0, 1.0)


def test_earlier_flip_is_remembered() -> None:
    r = row(0, 1, flipped=True)
    assert flip_row(r) == (0, 1)
    assert r["flipped"] is True


@pytest.mark.parametrize(
    ("bad", "field", "needle"),
    [
        ({"h_w": 2}, "h_w", "expected 0 or 1"),
        ({"h_l": "1"}, "h_l", "got '1'"),
        ({"h_w": None}, "h_w", "got None"),
        ({"h_l": [1]}, "h_l", "got [1]"),
        ({"h_w": 0.5}, "h_w", "got 0.5"),
        ({"flipped": "yes"}, "flipped", "expected true or false"),
    ],
)
def test_bad_values_are_refused(bad: dict, field: str, needle: str) -> None:
    r = dict(row(1, 0), **bad)
    with pytest.raises(DataError) as caught:
        flip_row(r, "f.jsonl", 3)
    assert (caught.value.line, caught.value.field) == (3, field)
    assert needle in caught.value.problem


def test_missing_fields_are_refused() -> None:
    with pytest.raises(DataError, match="f.jsonl:4: h_l: missing field"):
        flip_row({"h_w": 0, "chosen": "c", "rejected": "r"}, "f.jsonl", 4)
    with pytest.raises(DataError, match="f.jsonl:4: rejected: missing field"):
        flip_row({"h_w": 0, "h_l": 0, "chosen": "c"}, "f.jsonl", 4)


# -- files ---------------------------------------------------------------------------------


def test_flip_file_counts_and_output(tmp_path: Path, peeker: str) -> None:
    rows = [row(1, 0, id=1), row(0, 1, id=2), row(0, 0, id=3), row(1, 1, id=4), row(1, 0, id=5),
            row(True, False, id=6), row(0, 1, id=7, flipped=True)]  # fmt: skip
    source = write_lines(tmp_path / "pairs.jsonl", rows)
    written, summary = flip_file(source)
    assert written == tmp_path / "pairs_flipped.jsonl"
    assert summary.rows == 7 and summary.flipped == 3
    assert summary.before == {(1, 0): 3, (0, 1): 2, (0, 0): 1, (1, 1): 1}
    assert summary.after == {(0, 1): 5, (0, 0): 1, (1, 1): 1}
    assert summary.share_delta_h(summary.after) == pytest.approx(5 / 7)
    out = read_rows(written)
    assert [r["id"] for r in out] == [1, 2, 3, 4, 5, 6, 7]
    assert [r["flipped"] for r in out] == [True, False, False, False, True, True, True]
    assert out[0] == dict(row(0, 1, id=1), chosen="r", rejected="c", flipped=True)
    assert out[5]["h_w"] is False and out[5]["h_l"] is True
    for r in out:
        assert list(r)[-1] == "flipped"


def test_pass_through_rows_keep_their_bytes(tmp_path: Path, peeker: str) -> None:
    source = tmp_path / "a.jsonl"
    source.write_bytes(
        b'\xef\xbb\xbf{"prompt": "caf\\u00e9", "chosen": "a",  "rejected": "b", "h_w": 0, '
        b'"h_l": 1.0}\r\n\n{"h_w":1,"h_l":0,"chosen":"x","rejected":"y"}\n'
    )
    written, summary = flip_file(source, tmp_path / "out.jsonl")
    lines = written.read_bytes().splitlines()
    assert lines[0] == (
        b'{"prompt": "caf\\u00e9", "chosen": "a",  "rejected": "b", "h_w": 0, '
        b'"h_l": 1.0,"flipped":false}'
    )
    assert json.loads(lines[1]) == {"h_w": 0, "h_l": 1, "chosen": "y", "rejected": "x",
                                    "flipped": True}  # fmt: skip
    assert summary.before == {(0, 1): 1, (1, 0): 1}


def test_fast_path_agrees_with_orjson_on_odd_lines(tmp_path: Path, peeker: str) -> None:
    """Duplicate keys (orjson keeps the last), leading spaces, odd number and string
    spellings, nested "flipped" fields: the output must be what the row-by-row flip gives."""
    lines = [
        b'{"chosen": "a", "rejected": "b", "h_w": 0, "h_l": 0, "h_w": 1}',
        b'   {"chosen": "a", "rejected": "b", "h_w": 1, "h_l": 0}',
        b'{"chosen": "a", "rejected": "b", "h_w": 0, "h_l": 1, "n": -0.0e+1, "s": "\\u00e9"}',
        b'{"chosen": "a", "rejected": "b", "h_w": 1, "h_l": 1, "m": {"flipped": 1}}',
    ]
    source = tmp_path / "odd.jsonl"
    source.write_bytes(b"\n".join(lines))
    expected = [json.loads(line) for line in lines]
    for r in expected:
        flip_row(r)
    written, summary = flip_file(source)
    assert read_rows(written) == expected
    assert summary.flipped == 2


def test_bom_in_the_middle_is_an_error(tmp_path: Path, peeker: str) -> None:
    source = tmp_path / "bom.jsonl"
    line = b'{"chosen": "a", "rejected": "b", "h_w": 0, "h_l": 1}\n'
    source.write_bytes(line + b"\xef\xbb\xbf" + line)
    with pytest.raises(DataError, match="bom.jsonl:2: malformed JSON"):
        flip_file(source)


@pytest.mark.parametrize(
    ("content", "location"),
    [
        (b'{"h_w": 0, "h_l": 0, "chosen": "a", "rejected": "b"}\n{"h_w": 0,\n', "x.jsonl:2: "),
        (b'{"h_w": 0, "h_l": 0, "chosen": "a", "rejected": "b"}\n[1]\n', "x.jsonl:2: "),
        (b'\n\n{"h_w": 3, "h_l": 0, "chosen": "a", "rejected": "b"}\n', "x.jsonl:3: h_w: "),
        (b'{"h_l": 0, "chosen": "a", "rejected": "b"}\n', "x.jsonl:1: h_w: missing"),
        (
            b'{"h_w": 0, "h_l": 0, "chosen": "\xff", "rejected": "b"}\n',
            "x.jsonl:1: not valid UTF-8",
        ),
        (b"", "x.jsonl: file is empty"),
        (b"\n \n", "x.jsonl: file is empty"),
    ],
)
def test_bad_input_leaves_no_output(tmp_path: Path, peeker: str, content: bytes, location: str):
    source = tmp_path / "x.jsonl"
    source.write_bytes(content)
    with pytest.raises(DataError) as caught:
        flip_file(source)
    assert str(caught.value).startswith(str(tmp_path / location))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jsonl"]


def test_gzip_json_and_parquet_inputs(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [row(1, 0, id=1), row(0, 0, id=2)]
    with gzip.open(tmp_path / "g.jsonl.gz", "wt") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows))
    written, _ = flip_file(tmp_path / "g.jsonl.gz")
    assert written.name == "g_flipped.jsonl.gz"
    assert [r["flipped"] for r in read_rows(written)] == [True, False]

    (tmp_path / "j.json").write_text(json.dumps(rows))
    written, summary = flip_file(tmp_path / "j.json")
    assert written.name == "j_flipped.jsonl" and summary.flipped == 1

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    written, _ = flip_file(tmp_path / "p.parquet")
    assert read_rows(written)[0] == dict(row(0, 1, id=1), chosen="r", rejected="c", flipped=True)


def test_truncated_gzip_leaves_no_output(tmp_path: Path) -> None:
    data = gzip.compress(
        b"".join(json.dumps(row(1, 0, id=i)).encode() + b"\n" for i in range(5000))
    )
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated gzip"):
        flip_file(tmp_path / "cut.jsonl.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.jsonl.gz"]


def test_output_rules(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "d.jsonl", [row(0, 1)])
    assert default_output(tmp_path / "data.v2.jsonl") == tmp_path / "data.v2_flipped.jsonl"
    with pytest.raises(UsageError, match="overwrite the input"):
        flip_file(source, source, force=True)
    (tmp_path / "d_flipped.jsonl").write_text("keep\n")
    with pytest.raises(UsageError, match="already exists; pass --force"):
        flip_file(source)
    assert (tmp_path / "d_flipped.jsonl").read_text() == "keep\n"
    flip_file(source, force=True)
    assert read_rows(tmp_path / "d_flipped.jsonl") == [dict(row(0, 1), flipped=False)]


# -- properties ----------------------------------------------------------------------------

FLAGS = st.sampled_from([0, 1, True, False, 0.0, 1.0])
JSON_LEAF = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
EXTRA_KEYS = st.text(min_size=1, max_size=6).filter(
    lambda k: k not in {"h_w", "h_l", "chosen", "rejected", "flipped"}
)
ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "h_w": FLAGS,
            "h_l": FLAGS,
            "chosen": st.text(max_size=20),
            "rejected": st.text(max_size=20),
        },
        optional={"prompt": st.text(max_size=10)},
    ).flatmap(
        lambda base: st.dictionaries(
            EXTRA_KEYS, JSON_LEAF | st.lists(JSON_LEAF, max_size=3), max_size=4
        ).map(lambda extra: {**extra, **base})
    ),
    min_size=1,
    max_size=30,
)


def _flip_via_file(rows: list[dict], folder: Path, name: str) -> list[dict]:
    source = write_lines(folder / f"{name}.jsonl", rows)
    written, _ = flip_file(source, folder / f"{name}_out.jsonl")
    return read_rows(written)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=ROWS)
def test_flip_properties(rows: list[dict]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        once = _flip_via_file(rows, folder, "once")
        twice = _flip_via_file(once, folder, "twice")
    assert len(once) == len(rows)
    for before, after in zip(rows, once, strict=True):
        assert list(after) == [*before, "flipped"]  # same fields, same order, flag last
        swapped = before["h_w"] == 1 and before["h_l"] == 0
        assert after["flipped"] is swapped
        for key, value in before.items():
            if key in ("chosen", "rejected", "h_w", "h_l") and swapped:
                continue
            assert after[key] == value
        if swapped:
            assert (after["chosen"], after["rejected"]) == (before["rejected"], before["chosen"])
        assert (after["h_w"], after["h_l"]) != (1, 0)
    assert twice == once  # idempotent


@settings(max_examples=25, deadline=None)
@given(rows=ROWS)
def test_fast_path_matches_row_by_row_flip(rows: list[dict]) -> None:
    expected = [json.loads(json.dumps(r)) for r in rows]
    for r in expected:
        flip_row(r)
    with tempfile.TemporaryDirectory() as tmp:
        assert _flip_via_file(rows, Path(tmp), "simdjson") == expected
        with pytest.MonkeyPatch.context() as patch:
            patch.setitem(sys.modules, "simdjson", None)  # the orjson fallback
            assert _flip_via_file(rows, Path(tmp), "orjson") == expected


# -- command line --------------------------------------------------------------------------


def test_cli_flip_prints_the_summary(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [row(1, 0), row(0, 1), row(0, 0), row(1, 0)])
    result = runner.invoke(app, ["flip", str(source), "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.output
    assert "│ (1, 0)       │      2 │     0 │" in result.output
    assert "│ (0, 1)       │      1 │     3 │" in result.output
    assert "│ Δh = 1 share │  25.0% │ 75.0% │" in result.output
    assert "flipped 2 of 4 rows" in result.output
    assert len(read_rows(tmp_path / "out.jsonl")) == 4


def test_cli_flip_bad_input_exits_2_without_output(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"h_w": 0, "h_l": 1, "chosen": "a", "rejected": "b"}\n{"h_w": 1, "h_l": "0"}\n'
    )
    result = runner.invoke(app, ["flip", str(source)])
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == f"error: {source}:2: h_l: expected 0 or 1 (or true/false), got '0'"
    )
    assert "Traceback" not in result.output
    assert not (tmp_path / "in_flipped.jsonl").exists()
    missing = runner.invoke(app, ["flip", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr


def test_sigkill_midway_leaves_no_output(tmp_path: Path) -> None:
    line = json.dumps(row(1, 0, note="x" * 200)).encode() + b"\n"
    source = tmp_path / "big.jsonl"
    source.write_bytes(line * 300_000)  # ~95 MB: a few seconds of flipping
    target = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from prefopt.cli.data import app; app()",
            "flip",
            str(source),
            "-o",
            str(target),
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        temp_files: list[Path] = []
        while time.monotonic() < deadline:  # wait until it is writing
            temp_files = [p for p in tmp_path.glob(".out.jsonl.*.tmp") if p.stat().st_size > 0]
            if temp_files:
                break
            time.sleep(0.02)
        assert temp_files, "flip never started writing"
        assert proc.poll() is None, "flip finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not target.exists()
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    # Only the input and the hidden, uniquely named temp file (never a partial out.jsonl).
    assert leftovers[0].startswith(".out.jsonl.") and leftovers[1:] == ["big.jsonl"]


def _peak_rss_kb(script: str) -> int:
    """Peak resident memory of a fresh Python process running ``script``."""
    code = f"import resource\n{script}\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def test_memory_stays_flat_on_a_large_file(tmp_path: Path) -> None:
    """flip and stats stream: peak memory on 60k rows (~35 MB) is that of 100 rows, give
    or take the read/write buffers (holding the rows would add about 60 MB)."""
    line = json.dumps(row(1, 0, note="y" * 400)).encode() + b"\n"
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    small.write_bytes(line * 100)
    large.write_bytes(line * 60_000)
    script = (
        "from prefopt.data.flip import flip_file\n"
        "from prefopt.data.stats import compute_stats\n"
        "flip_file({path!r}, force=True)\n"
        "compute_stats({path!r})\n"
    )
    baseline = _peak_rss_kb(script.format(path=str(small)))
    peak = _peak_rss_kb(script.format(path=str(large)))
    assert peak - baseline < 20_000, f"peak grew by {(peak - baseline) / 1000:.0f} MB"
