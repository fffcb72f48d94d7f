"""Record reading/writing (prefopt.data.io) and record validation (prefopt.data.records)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

import prefopt.data.writing as writing_module
from prefopt.data.io import iter_rows, load_rows, looks_like_hub_id, read_rows
from prefopt.data.records import is_conversational, validate_record
from prefopt.data.writing import atomic_writer, write_jsonl
from prefopt.errors import DataError, UsageError

ROW = {"prompt": "p", "chosen": "a", "rejected": "b"}


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- reading -------------------------------------------------------------------------------


def test_jsonl_rows_and_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "a.jsonl", b'{"x": 1}\n\n   \n{"x": 2}\r\n{"x": 3}')
    assert list(iter_rows(path)) == [(1, {"x": 1}), (4, {"x": 2}), (5, {"x": 3})]


def test_bom_is_accepted(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "a.jsonl", b'\xef\xbb\xbf{"x": 1}\n{"x": 2}\n')
    assert read_rows(path) == [{"x": 1}, {"x": 2}]
    json_path = write_bytes(tmp_path / "a.json", b'\xef\xbb\xbf[{"x": 1}]')
    assert read_rows(json_path) == [{"x": 1}]


def test_json_list_and_gzip_variants(tmp_path: Path) -> None:
    rows = [{"x": i, "s": "é"} for i in range(3)]
    (tmp_path / "a.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    assert list(iter_rows(tmp_path / "a.json")) == [(1, rows[0]), (2, rows[1]), (3, rows[2])]
    with gzip.open(tmp_path / "a.json.gz", "wt", encoding="utf-8") as f:
        json.dump(rows, f)
    assert read_rows(tmp_path / "a.json.gz") == rows
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    assert list(iter_rows(tmp_path / "a.jsonl.gz"))[2] == (3, rows[2])


def test_parquet_is_streamed_in_batches(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {"prompt": [f"p{i}" for i in range(5000)], "h_w": [i % 2 for i in range(5000)]}
    )
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=1000)
    rows = list(iter_rows(tmp_path / "a.parquet"))
    assert len(rows) == 5000
    assert rows[0] == (1, {"prompt": "p0", "h_w": 0})
    assert rows[-1] == (5000, {"prompt": "p4999", "h_w": 1})


@pytest.mark.parametrize(
    ("name", "data", "line", "needle"),
    [
        ("bad.jsonl", b'{"x": 1}\n{"x": \n', 2, "malformed JSON"),
        ("list.jsonl", b'{"x": 1}\n[1, 2]\n', 2, "expected a JSON object, got a list"),
        ("str.jsonl", b'"just text"\n', 1, "expected a JSON object, got a string"),
        ("latin1.jsonl", b'{"x": 1}\n{"x": "caf\xe9"}\n', 2, "not valid UTF-8 (byte 0xe9"),
        ("bad.json", b'[{"x": 1},\n {"x": ]', 2, "malformed JSON"),
        ("rows.json", b'[{"x": 1}, 5]', 2, "expected a JSON object, got a number"),
        ("obj.json", b'{"x": 1}', None, "expected a top-level JSON list"),
    ],
)
def test_bad_input_is_located(
    tmp_path: Path, name: str, data: bytes, line: int | None, needle: str
) -> None:
    path = write_bytes(tmp_path / name, data)
    with pytest.raises(DataError) as caught:
        list(iter_rows(path))
    assert caught.value.line == line
    assert needle in caught.value.problem
    prefix = f"{path}:{line}: " if line else f"{path}: "
    assert str(caught.value).startswith(prefix)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("empty.jsonl", b""),
        ("blank.jsonl", b"\n\n  \n"),
        ("bom.jsonl", b"\xef\xbb\xbf"),
        ("empty.json", b"[]"),
        ("ws.json", b"  \n"),
        ("empty.jsonl.gz", gzip.compress(b"", mtime=0)),
    ],
)
def test_empty_files_are_refused(tmp_path: Path, name: str, data: bytes) -> None:
    path = write_bytes(tmp_path / name, data)
    with pytest.raises(DataError, match="file is empty"):
        list(iter_rows(path))


def test_empty_parquet_is_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), tmp_path / "e.parquet")
    with pytest.raises(DataError, match="file is empty"):
        list(iter_rows(tmp_path / "e.parquet"))
    write_bytes(tmp_path / "junk.parquet", b"not parquet at all")
    with pytest.raises(DataError, match="not a readable parquet file"):
        list(iter_rows(tmp_path / "junk.parquet"))


def test_truncated_gzip_is_reported_with_a_line(tmp_path: Path) -> None:
    data = gzip.compress(b"".join(b'{"x": %d}\n' % i for i in range(20000)))
    path = write_bytes(tmp_path / "cut.jsonl.gz", data[: len(data) // 2])
    seen = []
    with pytest.raises(DataError, match="truncated gzip") as caught:
        for line, _ in iter_rows(path):
            seen.append(line)
    assert caught.value.line is not None and caught.value.line == len(seen) + 1
    json_path = write_bytes(
        tmp_path / "cut.json.gz", gzip.compress(b"[" + b"{}," * 999 + b"{}]")[:-6]
    )
    with pytest.raises(DataError, match="truncated gzip"):
        read_rows(json_path)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file: .*nope.jsonl"):
        list(iter_rows(tmp_path / "nope.jsonl"))
    write_bytes(tmp_path / "a.csv", b"a,b\n")
    with pytest.raises(UsageError, match="unsupported file type"):
        list(iter_rows(tmp_path / "a.csv"))
    with pytest.raises(UsageError, match="is a folder"):
        list(iter_rows(tmp_path))


# -- writing -------------------------------------------------------------------------------


def test_write_jsonl_round_trip_keeps_order_and_unicode(tmp_path: Path) -> None:
    rows = [{"z": 1, "a": "ü → 🙂", "m": [1, {"k": None}]}, {"b": True, "a": 1.5}]
    assert write_jsonl(tmp_path / "out.jsonl", rows) == 2
    text = (tmp_path / "out.jsonl").read_text(encoding="utf-8")
    assert text.splitlines()[0].startswith('{"z":1,"a":"ü → 🙂"')
    assert text.endswith("\n")
    assert read_rows(tmp_path / "out.jsonl") == rows
    assert listing(tmp_path) == ["out.jsonl"]


def test_write_jsonl_gz_is_compressed(tmp_path: Path) -> None:
    rows = [dict(ROW, i=i) for i in range(3000)]
    assert write_jsonl(tmp_path / "out.jsonl.gz", iter(rows)) == 3000
    assert (tmp_path / "out.jsonl.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert read_rows(tmp_path / "out.jsonl.gz") == rows


def test_existing_output_needs_force(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(UsageError, match=r"out.jsonl already exists; pass --force"):
        write_jsonl(target, [ROW])
    assert target.read_text() == "old\n"
    assert write_jsonl(target, [ROW], force=True) == 1
    assert read_rows(target) == [ROW]
    assert listing(tmp_path) == ["out.jsonl"]


def test_output_permissions_follow_umask(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "out.jsonl", [ROW])
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "out.jsonl").stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_failed_write_leaves_nothing(tmp_path: Path, error: type[BaseException]) -> None:
    def rows():
        yield ROW
        raise error("stop")

    with pytest.raises(error):
        write_jsonl(tmp_path / "out.jsonl", rows())
    assert listing(tmp_path) == []


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl.gz"
    write_jsonl(target, [ROW])
    before = target.read_bytes()
    with pytest.raises(RuntimeError), atomic_writer(target, force=True) as out:
        out.write(b"partial")
        raise RuntimeError("boom")
    assert target.read_bytes() == before
    assert listing(tmp_path) == ["out.jsonl.gz"]


def test_atomic_writer_writes_only_at_the_end(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.jsonl"
    with atomic_writer(target) as out:
        out.write(b"hello\n")
        assert not target.exists()
        assert len(list(target.parent.iterdir())) == 1  # the hidden temp file
    assert target.read_bytes() == b"hello\n"
    assert listing(target.parent) == ["out.jsonl"]


def test_a_large_output_goes_to_disk_while_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past WRITEBACK_BYTES unsynced, a background fdatasync starts (one at a time); the
    final fsync and the close wait for it, and a failing one does not fail the write."""
    monkeypatch.setattr(writing_module, "WRITEBACK_BYTES", 4096)
    synced: list[int] = []

    def fake_datasync(fd: int) -> None:
        synced.append(fd)
        if len(synced) == 1:
            raise OSError("a transient failure")  # the final fsync is the one that counts

    monkeypatch.setattr(os, "fdatasync", fake_datasync, raising=False)
    chunk = b"x" * 3000 + b"\n"
    target = tmp_path / "out.jsonl"
    with atomic_writer(target) as out:
        for _ in range(1000):  # about 3 MB: the 1 MiB buffer hands it on in three writes
            out.write(chunk)
    assert target.read_bytes() == chunk * 1000
    assert 1 <= len(synced) <= 3  # one per buffer flush at most, none when one is running
    assert listing(tmp_path) == ["out.jsonl"]


def test_a_small_output_starts_no_writeback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fdatasync", synced.append, raising=False)
    write_jsonl(tmp_path / "out.jsonl", [ROW] * 100)
    assert synced == []


# -- sources -------------------------------------------------------------------------------


def test_load_rows_local_and_missing(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [ROW])
    assert list(load_rows(str(tmp_path / "a.jsonl"))) == [(1, ROW)]
    with pytest.raises(UsageError, match="no such file: .*missing.jsonl"):
        list(load_rows(str(tmp_path / "missing.jsonl")))
    with pytest.raises(UsageError, match="no such file"):
        list(load_rows("data/train.jsonl"))


def test_hub_id_shape() -> None:
    assert looks_like_hub_id("Anthropic/hh-rlhf")
    assert looks_like_hub_id("trl-lib/ultrafeedback_binarized")
    assert not looks_like_hub_id("data/train.jsonl")
    assert not looks_like_hub_id("a/b/c")
    assert not looks_like_hub_id("train")


def test_load_rows_uses_the_hub_for_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake_load_dataset(source, split):
        calls.append((source, split))
        return [ROW, dict(ROW, prompt="q")]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = list(load_rows("owner/name", split="test"))
    assert calls == [("owner/name", "test")]
    assert rows == [(1, ROW), (2, dict(ROW, prompt="q"))]

    def failing(source, split):
        raise FileNotFoundError("Dataset 'owner/none' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(UsageError, match="could not be loaded as a hub dataset"):
        list(load_rows("owner/none"))


# -- records -------------------------------------------------------------------------------

CONV = {
    "prompt": [{"role": "system", "content": ""}, {"role": "user", "content": "hi"}],
    "chosen": [{"role": "assistant", "content": "hello"}],
    "rejected": [{"role": "assistant", "content": "go away"}],
}


def test_valid_records_pass() -> None:
    validate_record(dict(ROW, h_w=1, h_l=False), "f.jsonl", 1, extra_columns=["h_w", "h_l"])
    validate_record(dict(CONV, h_w=0.0), "f.jsonl", 1, extra_columns=["h_w"])
    assert is_conversational(CONV)
    assert not is_conversational(ROW)


@pytest.mark.parametrize(
    ("row", "field", "needle"),
    [
        ({"prompt": "p", "chosen": "a"}, "rejected", "missing field"),
        (dict(ROW, chosen=""), "chosen", "empty string"),
        (dict(ROW, rejected="  \n"), "rejected", "empty string"),
        (dict(ROW, prompt=3), "prompt", "expected a string or a list of messages, got int"),
        (dict(ROW, chosen=None), "chosen", "got null"),
        (dict(CONV, chosen=[]), "chosen", "empty message list"),
        (dict(CONV, chosen=["hello"]), "chosen[0]", "expected a message object"),
        (dict(CONV, chosen=[{"role": "assistant"}]), "chosen[0].content", "missing field"),
        (
            dict(CONV, rejected=[{"role": "assistant", "content": 5}]),
            "rejected[0].content",
            "expected a string, got int",
        ),
        (dict(CONV, prompt=[{"role": "", "content": "x"}]), "prompt[0].role", "empty string"),
        (dict(CONV, chosen="hello"), "chosen", "is a string but prompt is a message list"),
        (dict(ROW, rejected=CONV["rejected"]), "rejected", "is a message list but prompt"),
        (
            dict(CONV, chosen=[{"role": "user", "content": "x"}]),
            "chosen[0].role",
            "expected 'assistant'",
        ),
        (dict(CONV, chosen=[{"role": "assistant", "content": " "}]), "chosen", "empty response"),
    ],
)
def test_bad_records_name_the_field(row: dict, field: str, needle: str) -> None:
    with pytest.raises(DataError) as caught:
        validate_record(row, "f.jsonl", 7)
    assert caught.value.field == field
    assert needle in caught.value.problem
    assert str(caught.value).startswith(f"f.jsonl:7: {field}: ")


@pytest.mark.parametrize(
    ("value", "needle"),
    [("1", "expected a number or bool, got str"), (None, "got null"), (float("nan"), "finite")],
)
def test_extra_columns_must_be_numbers(value: object, needle: str) -> None:
    with pytest.raises(DataError, match=needle) as caught:
        validate_record(dict(ROW, h_w=value), "f.jsonl", 2, extra_columns=["h_w"])
    assert caught.value.field == "h_w"
    with pytest.raises(DataError, match="missing field") as caught:
        validate_record(ROW, "f.jsonl", 2, extra_columns=["h_l"])
    assert caught.value.field == "h_l"


def test_unwritable_output_is_a_one_line_usage_error_naming_the_path(tmp_path: Path) -> None:
    from prefopt.testing.cli_runner import run_cli_in_process as run_cli

    data = tmp_path / "in.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b", "h_w": 1, "h_l": 0}\n')
    blocker = tmp_path / "file.jsonl"
    blocker.write_text("x")
    target = blocker / "out.jsonl"
    code, _, stderr = run_cli("data", "flip", str(data), "-o", str(target))
    assert code == 2, stderr
    assert f"cannot write {target}: {blocker} is a file, not a folder" in stderr
    assert "Traceback" not in stderr and "FileExistsError" not in stderr


def test_unwritable_folder_and_stale_temps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import time

    from prefopt.data import writing as io
    from prefopt.errors import UsageError

    out = tmp_path / "out.jsonl"
    stale = tmp_path / ".out.jsonl.abc123.tmp"
    fresh = tmp_path / ".out.jsonl.def456.tmp"
    stale.write_text("x")
    fresh.write_text("y")
    old = time.time() - 2 * io.STALE_TEMP_SECONDS
    os.utime(stale, (old, old))
    io.write_jsonl(out, [{"a": 1}])
    assert not stale.exists() and fresh.exists()  # a live writer's temp file is left alone
    monkeypatch.setattr(io.os, "access", lambda *_: False)
    with pytest.raises(UsageError, match=f"cannot write {tmp_path}/new.jsonl: folder"):
        io.check_writable(tmp_path / "new.jsonl")


def test_truncated_line_reports_its_real_column(tmp_path: Path) -> None:
    from prefopt.data.io import read_rows

    bad = tmp_path / "cut.jsonl"
    bad.write_bytes(b'{"prompt": "p", "chosen": "a"}\n{"a": 1, "b": [1,2\n')
    with pytest.raises(DataError) as info:
        read_rows(bad)
    assert "cut.jsonl:2" in str(info.value) and "(column 19)" in str(info.value)


def test_a_huge_line_is_refused_with_its_line_and_blocks_are_joined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 50 MB line used to be read whole (9.4 GB); now lines over the limit are refused."""
    from prefopt.data import io

    rows = [{"prompt": "p" * n, "chosen": "a", "rejected": "b"} for n in (5, 300, 7)]
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) + b'{"x": 1}')
    monkeypatch.setattr(io, "_CHUNK_BYTES", 64)  # lines span several blocks
    assert [row for _, row in io.iter_rows(path)] == [*rows, {"x": 1}]
    monkeypatch.setenv("PREFOPT_MAX_LINE_BYTES", "200")
    with pytest.raises(DataError, match=r"big\.jsonl:2: line longer than 200 bytes"):
        read_rows(path)
