"""Descriptive statistics of a preference file, computed in one streaming pass.

Counts of rows, record kinds and fields; length histograms (in characters, on power-of-two
buckets) of prompts, chosen and rejected responses; conversation turns; and the distribution
of the Factual-DPO flags ``(h_w, h_l)``. Memory does not grow with the file. A large plain
JSONL file is counted by several processes, one range of lines each
(:mod:`prefopt.data.jsonl_ranges`), whose counts are then added up: the same numbers, and the
same first bad line, as one process.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from prefopt.data import jsonl_ranges
from prefopt.data.flip import H_VALUES
from prefopt.data.io import EMPTY_PROBLEM, iter_rows, parse_line
from prefopt.errors import DataError
from prefopt.modeling.threads import choose_threads

PARTS = ("prompt", "chosen", "rejected")
_FLAGS: dict[Any, int] = H_VALUES
#: Histogram bucket upper bounds in characters; the last bucket is open-ended.
BUCKET_BOUNDS = tuple(2**k for k in range(5, 16))


@dataclass
class LengthStats:
    """Running length statistics of one part, in characters."""

    count: int = 0
    total: int = 0
    minimum: int | None = None
    maximum: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKET_BOUNDS) + 1))

    def add(self, length: int) -> None:
        self.count += 1
        self.total += length
        self.minimum = length if self.minimum is None else min(self.minimum, length)
        self.maximum = max(self.maximum, length)
        self.buckets[bucket_index(length)] += 1

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def merge(self, other: LengthStats) -> None:
        """Add the lengths counted in ``other``."""
        self.count += other.count
        self.total += other.total
        if other.minimum is not None:
            self.minimum = (
                other.minimum if self.minimum is None else min(self.minimum, other.minimum)
            )
        self.maximum = max(self.maximum, other.maximum)
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]


def bucket_index(length: int) -> int:
    """The histogram bucket of ``length``: the first bound it is below."""
    for index, bound in enumerate(BUCKET_BOUNDS):
        if length < bound:
            return index
    return len(BUCKET_BOUNDS)


def bucket_label(index: int) -> str:
    low = 0 if index == 0 else BUCKET_BOUNDS[index - 1]
    if index == len(BUCKET_BOUNDS):
        return f"≥ {low:,}"
    return f"{low:,}–{BUCKET_BOUNDS[index] - 1:,}"


@dataclass
class DataStats:
    """Everything ``prefopt data stats`` shows."""

    path: str
    rows: int = 0
    kinds: Counter = field(default_factory=Counter)
    fields: Counter = field(default_factory=Counter)
    lengths: dict[str, LengthStats] = field(
        default_factory=lambda: {part: LengthStats() for part in PARTS}
    )
    prompt_turns: Counter = field(default_factory=Counter)
    h_counts: Counter = field(default_factory=Counter)
    h_invalid: int = 0
    identical: int = 0
    #: List records: how many responses each list has, and every response's length.
    list_sizes: Counter = field(default_factory=Counter)
    #: Per-turn conversations: how many preference turns (assistant answers with a rejected
    #: alternative) each has.
    conversation_turns: Counter = field(default_factory=Counter)
    responses: LengthStats = field(default_factory=LengthStats)
    workers: int = 1  # processes that read the file (not part of the statistics)

    def add_row(self, row: dict[str, Any]) -> None:
        """Count one record."""
        self.rows += 1
        self.fields.update(row.keys())
        kind = record_kind(row)
        self.kinds[kind] += 1
        for part in PARTS:
            length = text_length(row.get(part))
            if length is not None:
                self.lengths[part].add(length)
        if kind == "conversation":
            messages = row["messages"]
            preferences = sum(isinstance(m, dict) and "rejected" in m for m in messages)
            self.conversation_turns[preferences] += 1
        if kind == "list":
            self.list_sizes[len(row["responses"])] += 1
            for response in row["responses"]:
                length = text_length(response)
                if length is not None:
                    self.responses.add(length)
        if kind == "conversational" or kind == "list" and isinstance(row["prompt"], list):
            self.prompt_turns[len(row["prompt"])] += 1
        if "chosen" in row and row.get("chosen") == row.get("rejected"):
            self.identical += 1
        if "h_w" in row or "h_l" in row:
            try:
                flags = (_FLAGS[row.get("h_w")], _FLAGS[row.get("h_l")])
            except (KeyError, TypeError):
                self.h_invalid += 1
            else:
                self.h_counts[flags] += 1

    def merge(self, other: DataStats) -> None:
        """Add the counts of ``other`` (the statistics of another part of the file)."""
        self.rows += other.rows
        counters = ("kinds", "fields", "prompt_turns", "h_counts", "list_sizes",
                    "conversation_turns")  # fmt: skip
        for counter in counters:
            getattr(self, counter).update(getattr(other, counter))
        for part, lengths in other.lengths.items():
            self.lengths[part].merge(lengths)
        self.h_invalid += other.h_invalid
        self.identical += other.identical
        self.responses.merge(other.responses)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "rows": self.rows,
            "kinds": dict(self.kinds),
            "fields": dict(self.fields),
            "lengths": {
                part: {
                    "count": s.count,
                    "min": s.minimum,
                    "mean": round(s.mean, 1),
                    "max": s.maximum,
                    "histogram": {bucket_label(i): n for i, n in enumerate(s.buckets) if n},
                }
                for part, s in self.lengths.items()
            },
            "prompt_turns": dict(sorted(self.prompt_turns.items())),
            "h_flags": {f"{hw},{hl}": n for (hw, hl), n in sorted(self.h_counts.items())},
            "h_invalid": self.h_invalid,
            "identical": self.identical,
            "list_sizes": dict(sorted(self.list_sizes.items())),
            "conversation_turns": dict(sorted(self.conversation_turns.items())),
            "list_responses": {
                "count": self.responses.count,
                "min": self.responses.minimum,
                "mean": round(self.responses.mean, 1),
                "max": self.responses.maximum,
            },
        }


def text_length(value: Any) -> int | None:
    """Characters of a string, or of the contents of a message list; None otherwise."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        total = 0
        for message in value:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                total += len(content)
        return total
    return None


def record_kind(row: dict[str, Any]) -> str:
    """``standard``, ``conversational``, ``list`` (N ranked responses), ``conversation`` (a
    per-turn conversation) or ``other``."""
    if isinstance(row.get("responses"), list):
        return "list"
    if isinstance(row.get("messages"), list) and "chosen" not in row:
        return "conversation"
    values = [row.get(part) for part in PARTS]
    if all(isinstance(v, str) for v in values):
        return "standard"
    if all(isinstance(v, list) for v in values):
        return "conversational"
    return "other"


def compute_stats(
    path: str | Path, *, workers: int | None = None, range_bytes: int | None = None
) -> DataStats:
    """One pass over ``path``.

    A plain JSONL file of at least :data:`~prefopt.data.jsonl_ranges.MIN_PARALLEL_RANGES`
    ranges of ``range_bytes`` is read by ``workers`` processes (default:
    :func:`~prefopt.modeling.threads.choose_threads`), each counting its ranges; other
    files, and small ones, by this process."""
    stats = DataStats(str(path))
    workers = choose_threads() if workers is None else workers
    ranges = jsonl_ranges.parallel_plan(path, workers, range_bytes or jsonl_ranges.RANGE_BYTES)
    if ranges is None:
        for _, row in iter_rows(path):
            stats.add_row(row)
        return stats
    stats.workers = min(workers, len(ranges))
    for _, _, part in jsonl_ranges.map_ranges(path, ranges, _stats_range, stats.workers):
        stats.merge(part)
    if not stats.rows:
        raise DataError(path, None, None, EMPTY_PROBLEM)
    return stats


def _stats_range(path: str, first: int, lines: list[bytes]) -> tuple[bytes, DataStats]:
    """A pool worker's part: the statistics of one range's lines (no output bytes)."""
    stats = DataStats(path)
    loads = orjson.loads
    for offset, raw in enumerate(lines):
        try:
            row = loads(raw)
        except orjson.JSONDecodeError:
            if not raw.strip():
                continue  # a blank line
            row = parse_line(path, first + offset, raw)  # raises, located
        if type(row) is not dict:
            parse_line(path, first + offset, raw)  # raises, located
        stats.add_row(row)
    return b"", stats
