"""``prefopt data flip`` over several processes: the same bytes and the same first error as
the single-process path. Small ranges force the parallel path on small files."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefopt.cli.main import app
from prefopt.data import jsonl_ranges
from prefopt.data.flip import flip_file
from prefopt.errors import DataError

RANGE = 512  # bytes: a few lines a range, so a small file spans many ranges


def varied_lines(count: int, seed: int = 0) -> list[bytes]:
    """Lines that take every branch of the flip: pass-through, swapped, already flipped,
    odd spellings (spaces, escapes, duplicate keys, CRLF), blank lines."""
    rng = random.Random(seed)
    lines = []
    for index in range(count):
        h_w, h_l = rng.choice((0, 1, True, 1.0)), rng.choice((0, 1, False))
        row = {"id": index, "prompt": "p" * rng.randint(0, 80), "chosen": "c\u00e9",
               "rejected": "r\u65e5", "h_w": h_w, "h_l": h_l}  # fmt: skip
        kind = index % 7
        if kind == 1:
            row["flipped"] = True
        raw = json.dumps(row, ensure_ascii=kind == 2).encode()
        if kind == 3:
            raw = raw.replace(b", ", b",  ") + b"\r"
        if kind == 4:
            raw = raw[:-1] + b', "h_l": 0}'  # a duplicate key: the last value counts
        lines.append(raw + b"\n")
        if kind == 5:
            lines.append(b"\n")
    return lines


def flip_both(source: Path, folder: Path) -> tuple[bytes, bytes]:
    serial, s_summary = flip_file(source, folder / "serial.jsonl", workers=1)
    parallel, p_summary = flip_file(source, folder / "parallel.jsonl", workers=2, range_bytes=RANGE)
    assert (s_summary.workers, p_summary.workers) == (1, 2)
    assert (p_summary.before, p_summary.after) == (s_summary.before, s_summary.after)
    assert (p_summary.rows, p_summary.flipped) == (s_summary.rows, s_summary.flipped)
    return serial.read_bytes(), parallel.read_bytes()


@pytest.mark.parametrize("ending", [b"\n", b""], ids=["newline", "no-final-newline"])
def test_parallel_output_is_byte_identical(tmp_path: Path, ending: bytes) -> None:
    body = b"".join(varied_lines(300))
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + body.rstrip(b"\n") + ending)
    assert len(jsonl_ranges.plan_ranges(source, RANGE) or []) > 20
    serial, parallel = flip_both(source, tmp_path)
    assert parallel == serial
    assert serial.count(b"\n") == 300


@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_output_is_byte_identical_orjson_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "simdjson", None)  # forked workers too
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(varied_lines(200, seed=workers)))
    serial, _ = flip_file(source, tmp_path / "s.jsonl", workers=1)
    parallel, summary = flip_file(source, tmp_path / "p.jsonl", workers=workers, range_bytes=RANGE)
    assert summary.workers == workers
    assert parallel.read_bytes() == serial.read_bytes()


def test_ranges_cover_the_file_at_line_ends(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    data = b"".join(varied_lines(100))
    source.write_bytes(data)
    ranges = jsonl_ranges.plan_ranges(source, 300)
    assert ranges is not None and ranges[0][0] == 0 and ranges[-1][1] == len(data)
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert end == start and data[end - 1 : end] == b"\n"


def bad_file(folder: Path, bad: dict[int, bytes], count: int = 400) -> Path:
    lines = varied_lines(count, seed=1)
    for index, raw in bad.items():
        lines[index] = raw
    source = folder / "bad.jsonl"
    source.write_bytes(b"".join(lines))
    return source


@pytest.mark.parametrize(
    "bad",
    [
        # a bad flag early, malformed JSON in a later range, a missing field later still
        {120: b'{"chosen": "a", "rejected": "b", "h_w": 2, "h_l": 0}\n',
         250: b'{"chosen": "a",\n', 390: b'{"h_w": 0, "h_l": 1, "chosen": "a"}\n'},
        # the first bad line is the last line of the file; earlier ranges are clean
        {399: b"[1, 2]\n"},
        # two bad lines in one range and more after: the first in the range wins
        {200: b'{"h_w": 0, "h_l": "1", "chosen": "a", "rejected": "b"}\n', 201: b"{\n",
         300: b'{"h_w": 0, "h_l": 1, "chosen": "\xff", "rejected": "b"}\n'},
    ],
    ids=["three-ranges", "last-line", "same-range"],
)  # fmt: skip
def test_first_bad_line_in_file_order(tmp_path: Path, bad: dict[int, bytes]) -> None:
    source = bad_file(tmp_path, bad)
    with pytest.raises(DataError) as serial:
        flip_file(source, tmp_path / "s.jsonl", workers=1)
    with pytest.raises(DataError) as parallel:
        flip_file(source, tmp_path / "p.jsonl", workers=2, range_bytes=RANGE)
    # Lines are 1-based and the varied lines hold blank ones, so count them in the file.
    first = min(bad)
    expected_line = source.read_bytes().split(b"\n").index(bad[first].rstrip(b"\n")) + 1
    assert parallel.value.line == serial.value.line == expected_line
    assert str(parallel.value) == str(serial.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]  # nothing half-written


def test_overlong_line_is_refused_where_the_serial_path_refuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFOPT_MAX_LINE_BYTES", str(1 << 20))
    lines = varied_lines(60)
    long_row = {"h_w": 0, "h_l": 1, "chosen": "c" * (3 << 19), "rejected": "r"}
    lines[40] = json.dumps(long_row).encode() + b"\n"  # 1.5 MiB
    source = tmp_path / "long.jsonl"
    source.write_bytes(b"".join(lines))
    with pytest.raises(DataError) as serial:
        flip_file(source, tmp_path / "s.jsonl", workers=1)
    with pytest.raises(DataError) as parallel:
        flip_file(source, tmp_path / "p.jsonl", workers=2, range_bytes=RANGE)
    assert str(parallel.value) == str(serial.value)
    assert "line longer than" in serial.value.problem
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.jsonl"]


def test_small_and_compressed_files_take_the_single_process_path(tmp_path: Path) -> None:
    import gzip

    data = b"".join(varied_lines(100))
    (tmp_path / "in.jsonl").write_bytes(data)
    (tmp_path / "in.jsonl.gz").write_bytes(gzip.compress(data))
    _, summary = flip_file(tmp_path / "in.jsonl", tmp_path / "a.jsonl", workers=2)
    assert summary.workers == 1  # far below the default ranges: no pool is started
    _, summary = flip_file(
        tmp_path / "in.jsonl.gz", tmp_path / "b.jsonl", workers=2, range_bytes=RANGE
    )
    assert summary.workers == 1
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_worker_count_follows_the_thread_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(varied_lines(300)))
    monkeypatch.setattr(jsonl_ranges, "RANGE_BYTES", RANGE)
    monkeypatch.setenv("PREFOPT_THREADS", "1")
    _, summary = flip_file(source, tmp_path / "one.jsonl")
    assert summary.workers == 1
    monkeypatch.setenv("PREFOPT_THREADS", "3")
    _, summary = flip_file(source, tmp_path / "three.jsonl")
    assert summary.workers == 3
    monkeypatch.delenv("PREFOPT_THREADS")
    result = CliRunner().invoke(
        app, ["--threads", "2", "data", "flip", str(source), "-o", str(tmp_path / "cli.jsonl")]
    )
    assert result.exit_code == 0, result.output
    assert "(2 processes)" in result.output
    assert (tmp_path / "cli.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()


def _die_in_worker(path: str, first: int, lines: list[bytes]) -> tuple[bytes, list[int]]:
    os._exit(3)  # a worker killed mid-range (by the kernel for memory, say)


def test_a_dead_worker_fails_the_flip_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures.process import BrokenProcessPool

    import prefopt.data.flip as flip_module

    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(varied_lines(300)))
    monkeypatch.setattr(flip_module, "_flip_range", _die_in_worker)
    with pytest.raises(BrokenProcessPool):
        flip_file(source, tmp_path / "out.jsonl", workers=2, range_bytes=RANGE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_output_through_the_pipe_when_the_shared_slots_are_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second flip while one holds the shared slots pickles its output instead, and
    leaves the other's slots alone."""
    import mmap

    taken = mmap.mmap(-1, 1 << 16)
    monkeypatch.setattr(jsonl_ranges, "_SLOTS", [taken])
    monkeypatch.setattr(jsonl_ranges, "_SLOT_BYTES", [1 << 14])
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(varied_lines(300)))
    serial, parallel = flip_both(source, tmp_path)
    assert parallel == serial
    assert taken[:] == bytes(1 << 16)  # nothing written into the other call's slots
    assert jsonl_ranges._SLOTS[0] is taken and len(jsonl_ranges._SLOTS) == 1
