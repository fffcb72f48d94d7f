"""The Factual-DPO label transformation: put every pair in the factual orientation.

Each row carries ``h_w`` and ``h_l``: 1 when the chosen (w) or rejected (l) response contains
a factual error. Factual-DPO wants the factually wrong response on the rejected side, so a
row with ``(h_w, h_l) = (1, 0)`` has ``chosen`` and ``rejected`` swapped, and so have its
flags, giving ``(0, 1)``. Rows ``(0, 0)``, ``(0, 1)`` and ``(1, 1)`` pass through unchanged;
no row is dropped and every other field keeps its value and position. Each output row gets
``"flipped": true|false``; a row flipped by an earlier run stays ``true``, which makes the
transformation idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from prefopt.data import jsonl_ranges
from prefopt.data.io import EMPTY_PROBLEM, file_format, iter_jsonl_chunks, iter_rows, parse_line
from prefopt.data.writing import atomic_writer, check_writable
from prefopt.errors import DataError, UsageError
from prefopt.modeling.threads import choose_threads

H_FIELDS = ("h_w", "h_l")
# 0, 1, False, True, 0.0 and 1.0 all hash and compare equal to 0 or 1, so one dict lookup
# both validates and normalises an h value.
H_VALUES = {0: 0, 1: 1}
_PASS_SUFFIX = b',"flipped":false}\n'


@dataclass
class FlipSummary:
    """Counts of ``(h_w, h_l)`` before and after a flip."""

    before: dict[tuple[int, int], int] = field(default_factory=dict)
    after: dict[tuple[int, int], int] = field(default_factory=dict)
    rows: int = 0
    flipped: int = 0
    workers: int = 1  # processes that flipped the file

    @classmethod
    def from_codes(cls, counts: list[int]) -> FlipSummary:
        """Build from counts indexed by ``2 * h_w + h_l`` (the flags before the flip)."""
        before = {(code >> 1, code & 1): n for code, n in enumerate(counts) if n}
        after = dict(before)
        flipped = after.pop((1, 0), 0)
        if flipped:
            after[(0, 1)] = after.get((0, 1), 0) + flipped
        return cls(before, after, sum(counts), flipped)

    def share_delta_h(self, counts: dict[tuple[int, int], int]) -> float:
        """Share of rows with Δh = h_l − h_w = 1, i.e. ``(0, 1)`` rows."""
        return counts.get((0, 1), 0) / self.rows if self.rows else 0.0


def h_value(row: dict[str, Any], name: str, path: str | Path, line: int) -> int:
    """The 0/1 value of flag ``name``; ``DataError`` if missing or not 0/1, bool, 0.0/1.0."""
    try:
        value = row[name]
    except KeyError:
        raise DataError(path, line, name, "missing field (flip needs h_w and h_l)") from None
    try:
        normalised = H_VALUES.get(value)
    except TypeError:  # unhashable: a list or an object
        normalised = None
    if normalised is None:
        raise DataError(path, line, name, f"expected 0 or 1 (or true/false), got {value!r}")
    return normalised


def flip_row(row: dict[str, Any], path: str | Path = "<row>", line: int = 0) -> tuple[int, int]:
    """Flip one row in place if it is ``(1, 0)``; return its ``(h_w, h_l)`` before the flip.

    The swap exchanges values, not keys, so the field order of the row is unchanged.
    """
    if "responses" in row or "messages" in row:  # a list of responses or a conversation
        field = "responses" if "responses" in row else "messages"
        raise DataError(path, line, field, "flip works on pairs: a list or a conversation "
                        "needs no flip (its pairs take their flags as ranked)")  # fmt: skip
    h_w = h_value(row, "h_w", path, line)
    h_l = h_value(row, "h_l", path, line)
    if "chosen" not in row or "rejected" not in row:
        missing = "chosen" if "chosen" not in row else "rejected"
        raise DataError(path, line, missing, "missing field")
    swap = h_w == 1 and h_l == 0
    if swap:
        row["chosen"], row["rejected"] = row["rejected"], row["chosen"]
        row["h_w"], row["h_l"] = row["h_l"], row["h_w"]
    previous = row.get("flipped", False)
    if not isinstance(previous, bool):
        raise DataError(path, line, "flipped", f"expected true or false, got {previous!r}")
    row["flipped"] = swap or previous
    return h_w, h_l


def flip_rows(
    rows: Iterable[tuple[int, dict[str, Any]]], path: str | Path, counts: list[int]
) -> Iterator[dict[str, Any]]:
    """Flip a stream of ``(line, row)`` pairs, counting the flags before the flip into
    ``counts`` (indexed by ``2 * h_w + h_l``)."""
    for line, row in rows:
        h_w, h_l = flip_row(row, path, line)
        counts[2 * h_w + h_l] += 1
        yield row


def default_output(path: str | Path) -> Path:
    """``<stem>_flipped.jsonl`` beside the input (``.jsonl.gz`` when the input is gzipped)."""
    path = Path(path)
    _, compressed = file_format(path)
    name = path.name[: -len(".gz")] if compressed else path.name
    stem = name.rsplit(".", 1)[0]
    return path.with_name(f"{stem}_flipped.jsonl" + (".gz" if compressed else ""))


def flip_file(
    input_path: str | Path,
    output_path: str | Path | None = None,
    force: bool = False,
    *,
    workers: int | None = None,
    range_bytes: int | None = None,
) -> tuple[Path, FlipSummary]:
    """Flip ``input_path`` into ``output_path`` (JSONL, written atomically); returns the
    output path and the flag counts. Any problem raises before the output appears.

    A plain JSONL file of at least
    :data:`~prefopt.data.jsonl_ranges.MIN_PARALLEL_RANGES` ranges of ``range_bytes``
    (default :data:`~prefopt.data.jsonl_ranges.RANGE_BYTES`) is flipped by ``workers``
    processes (default: :func:`~prefopt.modeling.threads.choose_threads`,
    i.e. ``--threads`` / ``PREFOPT_THREADS``, else the free CPUs); the output and the error
    for the first bad line are those of the single-process path."""
    output = Path(output_path) if output_path is not None else default_output(input_path)
    if output.resolve() == Path(input_path).resolve():
        raise UsageError(f"{output}: the output would overwrite the input; choose another -o")
    check_writable(output, force)
    counts = [0, 0, 0, 0]
    fmt, _ = file_format(input_path)
    used = 1
    with atomic_writer(output, force) as out:
        if fmt == "jsonl":
            workers = choose_threads() if workers is None else workers
            range_bytes = range_bytes or jsonl_ranges.RANGE_BYTES
            used = _flip_jsonl(input_path, out, counts, workers, range_bytes)
        else:
            dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
            rows = flip_rows(iter_rows(input_path), input_path, counts)
            out.writelines(dumps(row, option=option) for row in rows)
    summary = FlipSummary.from_codes(counts)
    summary.workers = used
    return output, summary


def _flip_jsonl(
    path: str | Path, out: IO[bytes], counts: list[int], workers: int, range_bytes: int
) -> int:
    """The JSONL fast path: stream a small or compressed file through :func:`_flip_lines`,
    or spread a large plain one over ``workers`` processes (:mod:`prefopt.data.jsonl_ranges`),
    which gives the same bytes and the same first error. Returns the processes used."""
    ranges = jsonl_ranges.parallel_plan(path, workers, range_bytes)
    if ranges is not None:
        workers = min(workers, len(ranges))
        for _, data, range_counts in jsonl_ranges.map_ranges(path, ranges, _flip_range, workers):
            out.write(data)
            for code, count in enumerate(range_counts):
                counts[code] += count
    else:
        workers = 1
        peek = _row_peeker()
        for first, lines in iter_jsonl_chunks(path):
            out.writelines(_flip_lines(path, first, lines, counts, peek))
    if not any(counts):
        raise DataError(path, None, None, EMPTY_PROBLEM)
    return workers


def _flip_lines(
    path: str | Path,
    first: int,
    lines: list[bytes],
    counts: list[int],
    peek: Callable[[bytes], int | None],
) -> list[bytes | memoryview]:
    """Flip ``lines`` (line ``first + i`` is ``lines[i]``) into output pieces, counting the
    flags before the flip into ``counts``.

    A quick look at each line (:func:`_row_peeker`) sorts it three ways: a clean row that
    passes through keeps its original bytes, with ``"flipped":false`` added before the
    closing brace; a clean ``(1, 0)`` row is parsed, swapped and serialised; anything else
    (a problem, an existing ``flipped`` field) goes through :func:`flip_row`, the code of
    the slow path, so errors are reported exactly as there.
    """
    loads, dumps, option = orjson.loads, orjson.dumps, orjson.OPT_APPEND_NEWLINE
    batch: list[bytes | memoryview] = []
    append = batch.append
    for offset, raw in enumerate(lines):
        code = peek(raw)
        if code is None:
            if not raw.strip():
                continue  # a blank line
            line = first + offset
            try:
                row = loads(raw)
            except orjson.JSONDecodeError:
                row = parse_line(path, line, raw)  # raises, located
            if type(row) is not dict:
                parse_line(path, line, raw)  # raises, located
            h_w, h_l = flip_row(row, path, line)  # validates, swaps, reports problems
            code = 2 * h_w + h_l
            append(dumps(row, option=option))
        elif code == 2:
            row = loads(raw)
            row["chosen"], row["rejected"] = row["rejected"], row["chosen"]
            row["h_w"], row["h_l"] = row["h_l"], row["h_w"]
            row["flipped"] = True
            append(dumps(row, option=option))
        else:
            append(memoryview(raw)[: raw.rindex(b"}")])
            append(_PASS_SUFFIX)
        counts[code] += 1
    return batch


_WORKER_PEEK: list[Callable[[bytes], int | None]] = []  # one peeker per worker process


def _flip_range(path: str, first: int, lines: list[bytes]) -> tuple[bytes, list[int]]:
    """A pool worker's part: the flipped bytes of one range and its flag counts."""
    if not _WORKER_PEEK:
        _WORKER_PEEK.append(_row_peeker())
    counts = [0, 0, 0, 0]
    return b"".join(_flip_lines(path, first, lines, counts, _WORKER_PEEK[0])), counts


def _row_peeker() -> Callable[[bytes], int | None]:
    """A function that looks at one raw JSONL line without building the row.

    It returns ``2 * h_w + h_l`` when the line is a valid JSON object with valid flags,
    ``chosen`` and ``rejected``, and no ``flipped`` field, and None otherwise: the caller
    then takes the full, checked path, which reports the problem.

    simdjson (pysimdjson) validates the whole line, UTF-8 included, without building Python
    objects for the values it is not asked for, so the long prompt and response strings of a
    row that passes through are never materialised; that is most of flip's speed. Without
    pysimdjson the line is parsed with orjson instead (correct, about half as fast).
    """
    h_values: dict[Any, int] = H_VALUES
    try:
        import simdjson
    except ImportError:
        loads = orjson.loads

        def peek_orjson(raw: bytes) -> int | None:
            try:
                row = loads(raw)
                code = 2 * h_values[row["h_w"]] + h_values[row["h_l"]]
            except Exception:  # any problem: the full path reports it
                return None
            if "flipped" in row or "chosen" not in row or "rejected" not in row:
                return None
            return code

        return peek_orjson

    parse = simdjson.Parser().parse

    def peek_simdjson(raw: bytes) -> int | None:
        if raw[:1] != b"{":  # leading space or a stray BOM (simdjson skips it, orjson not)
            return None
        try:
            document: Any = parse(raw)
            code = 2 * h_values[document["h_w"]] + h_values[document["h_l"]]
            keys = set(document)  # the field names; the values stay unparsed
            fields = len(document)  # duplicates counted
        except Exception:  # not an object, bad JSON, a bad or missing flag: full path
            return None
        # ``document`` is a local, so it is released before the parser is used again.
        if len(keys) != fields:  # duplicate keys: orjson keeps the last value
            return None
        if "flipped" in keys or "chosen" not in keys or "rejected" not in keys:
            return None
        return code

    return peek_simdjson
