"""A plain JSONL file as newline-aligned byte ranges, processed by a process pool in file order.

Each range holds whole lines, so it can be parsed and transformed on its own; the pool's
workers read their range from the file themselves (``os.pread``) and leave its output in
shared memory, so neither the input nor the output is pickled through a pipe. Results come
back in file order, and so do errors: a worker stops at the first bad line of its range and
reports it relative to the range; the parent turns that into the file's line number and
raises the first one in file order, after everything before it.

Only uncompressed files can be split this way (a gzip stream has no random access), and a
file whose split points fall inside an over-long line is left to the streaming reader, which
refuses that line without reading it whole.
"""

from __future__ import annotations

import gc
import io
import mmap
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from prefopt.data.io import _BOM, _too_long, file_format, max_line_bytes, require_file
from prefopt.errors import DataError

T = TypeVar("T")
#: Bytes of a range: large enough that a task's overhead (a pickle, a pread) is noise.
RANGE_BYTES = 4 << 20
#: A file of fewer ranges than this is read by one process, which starts no pool: the pool
#: would cost more than it saves (16 MiB with the default ranges).
MIN_PARALLEL_RANGES = 4
_SEARCH_BYTES = 1 << 16
#: A chunk function: ``(path, first_line_number, lines) -> result``; raises a located DataError.
ChunkWork = Callable[[str, int, list[bytes]], T]


def plan_ranges(
    path: str | Path, range_bytes: int = RANGE_BYTES, limit: int | None = None
) -> list[tuple[int, int]] | None:
    """``(start, end)`` byte ranges of about ``range_bytes`` that cover ``path`` and end
    just after a line end (the last at the end of the file), or None when a split point lies
    in a line longer than ``limit`` (the streaming reader must then refuse it)."""
    limit = max_line_bytes() if limit is None else limit
    size = os.path.getsize(path)
    ranges: list[tuple[int, int]] = []
    start = 0
    with open(path, "rb", buffering=0) as handle:
        fd = handle.fileno()
        while start < size:
            end = start + max(1, range_bytes)
            if end >= size:
                ranges.append((start, size))
                break
            searched = 0
            while True:  # the first line end at or after the nominal end
                block = os.pread(fd, _SEARCH_BYTES, end + searched)
                cut = block.find(b"\n")
                if cut >= 0:
                    end += searched + cut + 1
                    break
                searched += len(block)
                if not block:  # the last line has no line end
                    end = size
                    break
                if searched > limit:
                    return None
            ranges.append((start, end))
            start = end
    return ranges


def parallel_plan(
    path: str | Path, workers: int, range_bytes: int = RANGE_BYTES
) -> list[tuple[int, int]] | None:
    """The ranges to spread over ``workers`` processes, or None where one streaming process
    should read ``path``: a single worker, a gzip file (no random access), a file of fewer
    than :data:`MIN_PARALLEL_RANGES` ranges, a line limit (``PREFOPT_MAX_LINE_BYTES``) under
    1 MiB, or a split point inside an over-long line."""
    # Below 1 MiB the streaming reader checks the line limit only at its block edges; the
    # ranges check every line, so they are used only where the two agree.
    if workers < 2 or file_format(path)[1] or max_line_bytes() < 1 << 20:
        return None
    if require_file(path).stat().st_size < MIN_PARALLEL_RANGES * range_bytes:
        return None
    ranges = plan_ranges(path, range_bytes)
    return ranges if ranges is not None and len(ranges) > 1 else None


def _read_range(path: str, start: int, end: int) -> list[bytes]:
    with open(path, "rb", buffering=0) as handle:
        data = os.pread(handle.fileno(), end - start, start)
    lines = io.BytesIO(data).readlines()
    if start == 0 and lines and lines[0].startswith(_BOM):
        lines[0] = lines[0][len(_BOM) :]
    return lines


def run_range(
    work: ChunkWork[tuple[bytes, T]], path: str, start: int, end: int, limit: int, slot: int
) -> tuple[int, bytes | int, T | None, tuple[int | None, str | None, str] | None]:
    """Apply ``work`` to the lines of one range (line numbers relative to it, from 1).

    Returns ``(line_count, data, extra, None)`` where ``work`` returned ``(data, extra)``;
    ``data`` is put in shared slot ``slot`` (-1: none) when it fits (and its length returned),
    so it need not be pickled through a pipe. For the range's first bad line it returns
    ``(line_count, b"", None, (line, field, problem))``; a line over ``limit`` bytes is bad,
    as in the streaming reader."""
    lines = _read_range(path, start, end)
    too_long = None
    if lines and max(map(len, lines)) > limit:
        too_long = next(i for i, line in enumerate(lines) if len(line) > limit)
    try:
        data, extra = work(path, 1, lines if too_long is None else lines[:too_long])
    except DataError as exc:
        return len(lines), b"", None, (exc.line, exc.field, exc.problem)
    if too_long is not None:
        return len(lines), b"", None, (too_long + 1, None, _too_long(limit))
    slots = _SLOTS[0] if _SLOTS and slot >= 0 else None
    if slots is not None and len(data) <= _SLOT_BYTES[0]:
        offset = slot * _SLOT_BYTES[0]
        slots[offset : offset + len(data)] = data
        return len(lines), len(data), extra, None
    return len(lines), data, extra, None


# Shared memory for the workers' output, set in the parent before the pool forks: a worker
# copies a range's output into its slot and the parent writes it from there. Pickled through
# a pipe instead, 235 MB of output cost the parent about 0.4 s of CPU; from the slots, about
# 0.15 s (one measurement each, on a busy 2-core machine). One map_ranges at a time per
# process has them; another one meanwhile pickles its output.
_SLOTS: list[mmap.mmap] = []
_SLOT_BYTES: list[int] = []


def _start_worker() -> None:
    # Ctrl-C reaches the whole process group: the parent stops the pool, the workers need
    # not print tracebacks of their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A range's work builds many short-lived lists and dicts and no reference cycles, so the
    # cycle collector only walks them for nothing (about 3% of a flip's samples under perf);
    # a worker lives for one map_ranges call.
    gc.disable()


def _start_method() -> str:
    # fork starts a worker in milliseconds and shares the output slots; spawn elsewhere.
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def map_ranges(
    path: str | Path,
    ranges: list[tuple[int, int]],
    work: ChunkWork[tuple[bytes, T]],
    workers: int,
) -> Iterator[tuple[int, bytes | memoryview, T]]:
    """Yield ``(first_line, data, extra)`` for each range, in file order, computed by
    ``workers`` processes, where ``work`` returned ``(data, extra)`` and the range's lines
    start at file line ``first_line`` (``work`` numbers them from 1); raise the first bad line
    in file order as a ``DataError`` with its file line number.

    ``work`` must be a module-level function (it is sent to the workers by name). ``data``
    may be a view of shared memory that is reused once the caller asks for the next item:
    write it out before that. At most two ranges per worker are in flight, so memory stays
    bounded however large the file.
    """
    name, limit, method = str(path), max_line_bytes(), _start_method()
    window = 2 * workers
    slot_bytes = 2 * max(end - start for start, end in ranges) + (1 << 16)
    shared = method == "fork" and not _SLOTS  # a second call at once uses the pipe
    slots = mmap.mmap(-1, window * slot_bytes) if shared else None
    if slots is not None:
        _SLOTS[:], _SLOT_BYTES[:] = [slots], [slot_bytes]
    first_line, taken = 1, 0
    view: memoryview | None = None
    # An executor rather than multiprocessing.Pool: a worker that dies (killed for memory,
    # say) raises BrokenProcessPool here instead of leaving its result to wait forever.
    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context(method), initializer=_start_worker
    )
    try:
        pending: deque[Future[Any]] = deque()
        tasks = enumerate(ranges)

        def submit() -> None:
            for index, (start, end) in tasks:
                slot = index % window if slots is not None else -1
                pending.append(pool.submit(run_range, work, name, start, end, limit, slot))
                return

        for _ in range(window):
            submit()
        while pending:
            count, data, extra, problem = pending.popleft().result()
            if problem is not None:
                line, field, message = problem
                located = None if line is None else first_line + line - 1
                raise DataError(path, located, field, message)
            if isinstance(data, int):
                assert slots is not None
                offset = (taken % window) * slot_bytes
                view = memoryview(slots)[offset : offset + data]
            yield first_line, (data if view is None else view), extra
            first_line, taken = first_line + count, taken + 1
            if view is not None:
                view.release()  # the caller has written it out: the slot is free again
                view = None
            submit()
    finally:
        # After an error the queued ranges are dropped; the running ones (milliseconds)
        # finish, so no worker outlives the call.
        pool.shutdown(wait=True, cancel_futures=True)
        if view is not None:
            view.release()
        if slots is not None:
            _SLOTS.clear()
            _SLOT_BYTES.clear()
            slots.close()
