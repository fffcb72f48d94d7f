"""Reading preference records: streaming readers of files and hub datasets.

Readers stream rows from ``.jsonl``, ``.json`` (a top-level list of objects), ``.parquet``
and gzip-compressed ``.jsonl.gz`` / ``.json.gz`` files, and report every problem as a
:class:`~prefopt.errors.DataError` located as ``file:line: field: problem``. Writing is
:mod:`prefopt.data.writing`'s (atomic: an output file is either complete or absent).

JSON is parsed and serialised with orjson: it is several times faster than the standard
library on both sides, validates UTF-8 while parsing, and keeps the key order of objects.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from prefopt.errors import DataError, UsageError

_BOM = b"\xef\xbb\xbf"
_WHITESPACE = (b" ", b"\t", b"\r", b"\n", b"")
_PARQUET_BATCH_ROWS = 4096
_CHUNK_BYTES = 1 << 20
#: Suffixes that mark a source as a local file rather than a hub dataset id.
_FILE_SUFFIXES = {".jsonl", ".ndjson", ".json", ".parquet", ".gz", ".csv", ".txt", ".arrow"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
EMPTY_PROBLEM = "file is empty (no records)"


def file_format(path: str | Path) -> tuple[str, bool]:
    """The record format of ``path`` (``jsonl``, ``json`` or ``parquet``) and whether it is
    gzip-compressed, judged from its suffixes; ``UsageError`` for anything else."""
    name = Path(path).name.lower()
    compressed = name.endswith(".gz")
    if compressed:
        name = name[: -len(".gz")]
    for suffix, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json")):
        if name.endswith(suffix):
            return fmt, compressed
    if name.endswith(".parquet"):
        if compressed:
            raise UsageError(
                f"{path}: gzip-compressed parquet is not supported "
                "(parquet compresses its columns itself; use the .parquet file)"
            )
        return "parquet", False
    raise UsageError(
        f"{path}: unsupported file type; expected .jsonl, .json or .parquet "
        "(optionally .jsonl.gz / .json.gz)"
    )


def iter_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream ``(line_number, row)`` pairs from a record file.

    Line numbers are 1-based file lines for JSONL (blank lines are skipped but counted) and
    the row index + 1 for JSON and parquet. Malformed JSON, a row that is not an object,
    non-UTF-8 bytes, a truncated gzip stream and a file without records raise ``DataError``;
    a missing file raises ``UsageError("no such file: PATH")``.
    """
    path = require_file(path)
    fmt, compressed = file_format(path)
    if fmt == "jsonl":
        rows = _iter_jsonl(path)
    elif fmt == "json":
        rows = _iter_json(path, compressed)
    else:
        rows = _iter_parquet(path)
    count = 0
    for item in rows:
        count += 1
        yield item
    if count == 0:
        raise DataError(path, None, None, EMPTY_PROBLEM)


def require_file(path: str | Path) -> Path:
    """``path`` as a Path if it is a non-empty file; ``UsageError``/``DataError`` if not."""
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise UsageError(f"{path} is a folder, expected a data file")
        raise UsageError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise DataError(path, None, None, EMPTY_PROBLEM)
    return path


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a record file as a list (convenience for small files and tests)."""
    return [row for _, row in iter_rows(path)]


def _open_binary(path: Path, compressed: bool) -> IO[bytes]:
    if compressed:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb", buffering=1 << 20)


def iter_jsonl_chunks(path: str | Path) -> Iterator[tuple[int, list[bytes]]]:
    """Stream a (gzipped) JSONL file as ``(first_line_number, lines)`` chunks of about 1 MB.

    Lines are raw bytes, blank ones included (line ``first_line_number + i`` is
    ``lines[i]``); the BOM is removed from the first line. A truncated or corrupt gzip
    stream raises ``DataError``. For hot loops that want no per-line generator step (see
    :mod:`prefopt.data.flip`); most callers want :func:`iter_jsonl_lines`.
    """
    path = require_file(path)
    _, compressed = file_format(path)
    limit = max_line_bytes()
    line_number = 0
    pending: list[bytes] = []  # the start of a line that continues in the next block
    pending_bytes = 0
    with _open_binary(path, compressed) as handle:
        while True:
            try:
                block = handle.read(_CHUNK_BYTES)
            except (EOFError, OSError, zlib.error) as exc:
                raise DataError(path, line_number + 1, None, _gzip_problem(exc)) from None
            cut = block.rfind(b"\n") if block else len(block) - 1
            if block and cut < 0:  # no line end in this block: the line goes on
                pending.append(block)
                pending_bytes += len(block)
                if pending_bytes > limit:
                    raise DataError(path, line_number + 1, None, _too_long(limit))
                continue
            head = block[: cut + 1]
            data = b"".join([*pending, head]) if pending else head
            pending = [block[cut + 1 :]] if block and cut + 1 < len(block) else []
            pending_bytes = len(pending[0]) if pending else 0
            if not data:
                return
            lines = io.BytesIO(data).readlines()
            del data
            if len(lines[0]) > limit:
                raise DataError(path, line_number + 1, None, _too_long(limit))
            if line_number == 0 and lines[0].startswith(_BOM):
                lines[0] = lines[0][len(_BOM) :]
            yield line_number + 1, lines
            line_number += len(lines)
            if not block:
                return


#: Default longest JSONL line read (bytes); ``PREFOPT_MAX_LINE_BYTES`` changes it.
MAX_LINE_BYTES = 16 << 20


def max_line_bytes() -> int:
    """The longest JSONL line readers accept: ``PREFOPT_MAX_LINE_BYTES`` or 16 MiB."""
    value = os.environ.get("PREFOPT_MAX_LINE_BYTES", "")
    try:
        return int(value) if value.strip() else MAX_LINE_BYTES
    except ValueError:
        raise UsageError(
            f"PREFOPT_MAX_LINE_BYTES: expected a number of bytes, got {value!r}"
        ) from None


def _too_long(limit: int) -> str:
    return (
        f"line longer than {limit:,} bytes (one record this large is almost surely broken; "
        "set PREFOPT_MAX_LINE_BYTES to allow it)"
    )


def iter_jsonl_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Stream ``(line_number, raw_line)`` for the non-blank lines of a (gzipped) JSONL file.

    The BOM is removed from the first line and blank lines are skipped (but counted); a
    truncated or corrupt gzip stream, and a file with no non-blank line, raise ``DataError``.
    The lines are not parsed.
    """
    found = False
    for first, lines in iter_jsonl_chunks(path):
        for offset, line in enumerate(lines):
            if line[:1] in _WHITESPACE and not line.strip():
                continue  # blank lines are allowed, and still counted
            found = True
            yield first + offset, line
    if not found:
        raise DataError(path, None, None, EMPTY_PROBLEM)


def parse_line(path: str | Path, line_number: int, line: bytes) -> dict[str, Any]:
    """Parse one JSONL line into an object, or raise a located ``DataError``."""
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise DataError(path, line_number, None, _json_problem(line, exc)) from None
    if type(row) is not dict:
        raise DataError(path, line_number, None, _not_object(row))
    return row


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    loads = orjson.loads
    for line_number, line in iter_jsonl_lines(path):
        try:
            row = loads(line)
        except orjson.JSONDecodeError:
            row = parse_line(path, line_number, line)  # raises with the located problem
        if type(row) is not dict:
            parse_line(path, line_number, line)
        yield line_number, row


def _iter_json(path: Path, compressed: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open_binary(path, compressed) as handle:
        try:
            data = handle.read()
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(path, None, None, _gzip_problem(exc)) from None
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if not data.strip():
        raise DataError(path, None, None, EMPTY_PROBLEM)
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        line = data.count(b"\n", 0, exc.pos) + 1
        raise DataError(path, line, None, _json_problem(data, exc)) from None
    if not isinstance(parsed, list):
        raise DataError(
            path, None, None, f"expected a top-level JSON list of objects, got {_kind(parsed)}"
        )
    for index, row in enumerate(parsed):
        if type(row) is not dict:
            raise DataError(path, index + 1, None, _not_object(row))
        yield index + 1, row


def _iter_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(path, None, None, f"not a readable parquet file ({exc})") from None
    index = 0
    with contextlib.closing(parquet):
        batches = parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:
                raise DataError(path, index + 1, None, f"corrupt parquet data ({exc})") from None
            for row in batch.to_pylist():
                index += 1
                yield index, row


def _json_problem(data: bytes, exc: orjson.JSONDecodeError) -> str:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        byte = data[bad.start]
        return f"not valid UTF-8 (byte 0x{byte:02x} at offset {bad.start}); re-encode the file"
    # orjson's colno counts within its own line view and reads 1 for a truncated line; the
    # byte offset ``pos`` is exact: report the column on the offending line from it.
    pos = max(0, min(exc.pos, len(data.rstrip(b"\r\n"))))  # truncated: at the line's end
    column = pos - (data.rfind(b"\n", 0, pos) + 1) + 1
    return f"malformed JSON: {exc.msg} (column {column})"


def _gzip_problem(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "truncated gzip file (the compressed stream ends early)"
    return f"corrupt gzip data ({exc})"


def _kind(value: object) -> str:
    names = {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else "a value")


def _not_object(value: object) -> str:
    return f"expected a JSON object, got {_kind(value)}"


# -- sources -----------------------------------------------------------------------------


def looks_like_hub_id(source: str) -> bool:
    """Whether ``source`` has the shape of a hub dataset id (``owner/name``, no suffix)."""
    if not _HUB_ID.match(source):
        return False
    return Path(source).suffix.lower() not in _FILE_SUFFIXES


def check_data_source(source: str) -> None:
    """Fail fast, before anything heavy loads: ``source`` must be a readable data file, or a
    hub dataset id that is cached or can be downloaded (see :func:`load_rows`)."""
    if not Path(source).exists() and looks_like_hub_id(source):
        from prefopt.modeling.hub import check_hub_dataset

        check_hub_dataset(source)
        return
    require_file(source)


def load_rows(source: str, split: str = "train") -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows from a local file (via :func:`iter_rows`) or, when ``source`` is not an existing
    path but looks like ``owner/name``, from the hub dataset's ``split``."""
    if Path(source).exists() or not looks_like_hub_id(source):
        yield from iter_rows(source)
        return
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise UsageError(f"no such file: {source} (and 'datasets' is not installed)") from exc
    from prefopt.modeling.hub import check_hub_dataset

    check_hub_dataset(source)
    try:
        dataset = datasets.load_dataset(source, split=split)
    except Exception as exc:  # network, unknown id, unknown split: all the user's to fix
        raise UsageError(
            f"no such file: {source}, and it could not be loaded as a hub dataset "
            f"(split '{split}'): {type(exc).__name__}: {exc}"
        ) from None
    count = 0
    for index, row in enumerate(dataset):
        count += 1
        yield index + 1, dict(row)
    if count == 0:
        raise DataError(f"{source}[{split}]", None, None, "dataset split has no records")
