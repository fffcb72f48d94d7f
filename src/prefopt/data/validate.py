"""Checking a preference file before training on it.

One pass over the file finds: rows that are not valid records (schema and types), empty
responses, pairs whose chosen and rejected are identical, duplicate pairs, invalid ``h_w`` /
``h_l`` flags and flags in the wrong orientation for Factual-DPO (``(1, 0)``, which ``prefopt
data flip`` fixes). That orientation is an error only for a file meant for Factual-DPO
(``factual=True``, ``--factual``): in a plain DPO file a preferred answer flagged as
hallucinated is a finding about the data, reported but not failed. A JSONL file is read line by
line, so every malformed line is reported, not only the first. With a tokenizer it also
measures token lengths under the trainer's own tokenization and truncation policy
(:mod:`prefopt.data.tokenize`) and counts the pairs that training would truncate or drop.

Memory: about 100 bytes per row for duplicate detection, plus 12 bytes per row for token
lengths; the records themselves are not kept.

Without a tokenizer, a large plain JSONL file is checked by several processes, one range of
lines each (:mod:`prefopt.data.jsonl_ranges`); the parent adds up their findings in file
order and looks for duplicates across the whole file itself, so the report is the one a
single process makes. With a tokenizer the file is read by one process: the tokenizer
spreads its batches over the cores itself.
"""

from __future__ import annotations

import functools
import hashlib
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from prefopt.data import jsonl_ranges
from prefopt.data.flip import h_value
from prefopt.data.io import EMPTY_PROBLEM, file_format, iter_jsonl_lines, iter_rows, parse_line
from prefopt.data.kinds import kind_mismatch, record_kind
from prefopt.data.lists import is_list_record, validate_list_record
from prefopt.data.records import is_conversational, validate_record
from prefopt.data.turns import is_turns_record, validate_turns_record
from prefopt.errors import DataError
from prefopt.modeling.threads import choose_threads

#: Issue kinds, in report order, with what they mean.
ISSUE_KINDS = {
    "unreadable": "lines that are not a JSON object",
    "schema": "records with a missing or mistyped field",
    "empty": "empty prompt or response",
    "identical": "chosen identical to rejected (or a response repeated in a list)",
    "duplicate": "pair repeated from an earlier row",
    "h_flags": "h_w/h_l not 0/1",
    "orientation": "(h_w, h_l) = (1, 0): factually wrong response preferred",
}
EXAMPLES_PER_KIND = 5
#: Kinds that make a file unclean only when it is meant for Factual-DPO (``factual=True``).
FACTUAL_ONLY = frozenset({"orientation"})


@dataclass
class Issue:
    """One finding, located like a DataError."""

    kind: str
    line: int | None
    field: str | None
    problem: str

    def located(self, path: str) -> str:
        where = path if self.line is None else f"{path}:{self.line}"
        return (
            f"{where}: {self.field}: {self.problem}" if self.field else f"{where}: {self.problem}"
        )


@dataclass
class LengthReport:
    """Token lengths (untruncated) and what the truncation policy would do to the pairs."""

    tokenizer: str
    max_length: int
    max_prompt_length: int
    prompt: array = field(default_factory=lambda: array("I"))
    chosen: array = field(default_factory=lambda: array("I"))
    rejected: array = field(default_factory=lambda: array("I"))
    #: Every response of the lists of ranked responses (a list file).
    responses: array = field(default_factory=lambda: array("I"))
    prompts_truncated: int = 0
    completions_truncated: int = 0
    dropped: int = 0

    @property
    def pairs(self) -> int:
        """Records measured: pairs, or lists in a file of lists."""
        return len(self.prompt)

    @property
    def unit(self) -> str:
        return "lists" if self.responses else "pairs"

    def warnings(self) -> list[str]:
        """One line per kind of truncation training would do, with the share of pairs."""
        found = []
        for count, part, limit in (
            (self.prompts_truncated, "prompts", f"--max-prompt-length {self.max_prompt_length}"),
            (self.completions_truncated, "completions", f"--max-length {self.max_length}"),
        ):
            if count:
                share = 100 * count / self.pairs
                found.append(
                    f"warning: {share:.0f}% of {self.unit} ({count:,} of {self.pairs:,}) would "
                    f"have their {part} truncated by {limit}; training sees the cut text"
                )
        return found

    def distribution(self, name: str) -> dict[str, float]:
        """min / mean / p50 / p90 / p99 / max of one part's lengths."""
        values = sorted(getattr(self, name))
        if not values:
            return {}

        def quantile(q: float) -> int:
            return int(values[min(len(values) - 1, int(q * len(values)))])

        return {
            "min": values[0],
            "mean": round(sum(values) / len(values), 1),
            "p50": quantile(0.5),
            "p90": quantile(0.9),
            "p99": quantile(0.99),
            "max": values[-1],
        }


@dataclass
class ValidationReport:
    """Everything ``prefopt data validate`` found."""

    path: str
    rows: int = 0
    record_kinds: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[Issue]] = field(default_factory=dict)
    h_counts: Counter = field(default_factory=Counter)
    lengths: LengthReport | None = None
    #: Checked for Factual-DPO: (h_w, h_l) = (1, 0) rows are errors, not findings.
    factual: bool = False

    def is_error(self, kind: str) -> bool:
        """Whether findings of ``kind`` make the file unclean (see :data:`FACTUAL_ONLY`)."""
        return self.factual or kind not in FACTUAL_ONLY

    @property
    def clean(self) -> bool:
        return self.rows > 0 and not any(n for k, n in self.counts.items() if self.is_error(k))

    def add(self, issue: Issue) -> None:
        self.counts[issue.kind] += 1
        shown = self.examples.setdefault(issue.kind, [])
        if len(shown) < EXAMPLES_PER_KIND:
            shown.append(issue)

    def merge(self, other: ValidationReport, line_shift: int) -> None:
        """Add the findings of ``other``, the report on a later part of the file whose line
        numbers are ``line_shift`` short of the file's (the examples stay the first ones)."""
        self.rows += other.rows
        self.record_kinds.update(other.record_kinds)
        self.counts.update(other.counts)
        self.h_counts.update(other.h_counts)
        for kind, issues in other.examples.items():
            shown = self.examples.setdefault(kind, [])
            for issue in issues[: EXAMPLES_PER_KIND - len(shown)]:
                shown.append(
                    Issue(issue.kind, _shift(issue.line, line_shift), issue.field, issue.problem)
                )

    def suggestions(self) -> list[str]:
        tips = []
        if self.counts["orientation"]:
            before = "" if self.factual else "for Factual-DPO training, "
            tips.append(
                f"{self.counts['orientation']} rows have (h_w, h_l) = (1, 0); {before}"
                f"run `prefopt data flip {self.path}` to put them in the factual orientation"
            )
        if self.counts["duplicate"]:
            tips.append("duplicate pairs weigh twice in training; remove them or keep on purpose")
        if self.lengths is not None and self.lengths.pairs:
            tips.extend(self.lengths.warnings())
        if self.lengths is not None and self.lengths.dropped:
            tips.append(
                f"{self.lengths.dropped} pairs would be dropped: raise --max-length or "
                "lower --max-prompt-length"
            )
        return tips

    def to_dict(self) -> dict[str, Any]:
        """The machine-readable report (``--json``)."""
        report: dict[str, Any] = {
            "file": self.path,
            "clean": self.clean,
            "factual": self.factual,
            "rows": self.rows,
            "record_kinds": dict(self.record_kinds),
            "issues": {kind: self.counts[kind] for kind in ISSUE_KINDS if self.counts[kind]},
            "examples": {  # in report order, as "issues"
                kind: [issue.located(self.path) for issue in self.examples[kind]]
                for kind in ISSUE_KINDS
                if kind in self.examples
            },
            "h_flags": {f"{hw},{hl}": n for (hw, hl), n in sorted(self.h_counts.items())},
            "suggestions": self.suggestions(),
        }
        if self.lengths is not None:
            lengths = self.lengths
            report["tokens"] = {
                "tokenizer": lengths.tokenizer,
                "max_length": lengths.max_length,
                "max_prompt_length": lengths.max_prompt_length,
                "pairs": lengths.pairs,
                "prompts_truncated": lengths.prompts_truncated,
                "completions_truncated": lengths.completions_truncated,
                "dropped": lengths.dropped,
                "lengths": {
                    name: lengths.distribution(name)
                    for name in ("prompt", "chosen", "rejected", "responses")
                    if lengths.distribution(name)
                },
            }
        return report


def _rows_with_problems(path: str | Path, report: ValidationReport) -> Iterator[tuple[int, Any]]:
    """Rows of the file; unreadable JSONL lines are reported and skipped, not fatal."""
    fmt, _ = file_format(path)
    if fmt != "jsonl":
        yield from iter_rows(path)
        return
    for line, raw in iter_jsonl_lines(path):
        try:
            yield line, parse_line(path, line, raw)
        except DataError as exc:
            report.rows += 1
            report.add(Issue("unreadable", line, exc.field, exc.problem))


def _shift(line: int | None, by: int) -> int | None:
    return None if line is None else line + by


def _pair_digest(row: dict[str, Any]) -> bytes:
    if is_turns_record(row):
        parts: list[Any] = [row["messages"]]
    elif is_list_record(row):
        parts = [row["prompt"], row["responses"]]
    else:
        parts = [row["prompt"], row["chosen"], row["rejected"]]
    key = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(key, digest_size=8).digest()


def _check_row(
    row: dict[str, Any],
    line: int,
    path: str | Path,
    report: ValidationReport,
    extra_columns: Sequence[str],
    kind: str | None = None,
) -> bool:
    """Record the issues of one row but duplicates (:func:`_check_duplicate`); True when it
    is a valid record (worth tokenizing, and comparing with the others). ``kind`` is the
    file's (its first record's): a record of another kind is an issue."""
    mismatch = None if kind is None else kind_mismatch(row, kind)
    if mismatch is not None:
        report.add(Issue("schema", line, *mismatch))
        return False
    if is_list_record(row) or is_turns_record(row):
        check = _check_list_row if is_list_record(row) else _check_turns_row
        return check(row, line, path, report) and _check_required(row, line, report, extra_columns)
    valid = _schema_ok(
        lambda: validate_record(row, path, line, extra_columns),
        line, report, ("empty string", "empty response"),
    )  # fmt: skip
    if valid:
        report.record_kinds["conversational" if is_conversational(row) else "standard"] += 1
        if row["chosen"] == row["rejected"]:
            report.add(Issue("identical", line, "rejected", "identical to chosen"))
    if "h_w" in row or "h_l" in row:
        try:
            flags = (h_value(row, "h_w", path, line), h_value(row, "h_l", path, line))
        except DataError as exc:
            report.add(Issue("h_flags", line, exc.field, exc.problem))
        else:
            report.h_counts[flags] += 1
            if flags == (1, 0):
                report.add(
                    Issue("orientation", line, "h_w", "h_w = 1, h_l = 0 (run prefopt data flip)")
                )
    return valid


def _schema_ok(
    validate: Callable[[], None], line: int, report: ValidationReport, empty: tuple[str, ...]
) -> bool:
    """Run a record's schema check; its ``DataError`` becomes an ``empty`` issue when the
    problem starts with one of ``empty``, else a ``schema`` one."""
    try:
        validate()
    except DataError as exc:
        kind = "empty" if exc.problem.startswith(empty) else "schema"
        report.add(Issue(kind, line, exc.field, exc.problem))
        return False
    return True


def _check_required(
    row: dict[str, Any], line: int, report: ValidationReport, required: Sequence[str]
) -> bool:
    """``--require`` on a list or a conversation: each field at the record's top level (a
    list's ``h`` stands for the ``h_w``/``h_l`` its pairs get; ``--factual`` asks for it)."""
    wanted = list(required) + (["h"] if report.factual and is_list_record(row) else [])
    missing = [
        name for name in wanted
        if name not in row and not (name in ("h_w", "h_l") and "h" in row)
    ]  # fmt: skip
    for name in dict.fromkeys(missing):
        where = "each response's flag, for Factual-DPO" if name == "h" else "--require"
        report.add(Issue("schema", line, name, f"missing field ({where})"))
    return not missing


def _check_list_row(
    row: dict[str, Any], line: int, path: str | Path, report: ValidationReport
) -> bool:
    """A list record's issues: schema, empty responses, a response repeated in the list."""
    empty = ("empty string", "empty response")
    if not _schema_ok(lambda: validate_list_record(row, path, line), line, report, empty):
        return False
    report.record_kinds["list"] += 1
    seen: dict[str, int] = {}
    for index, response in enumerate(row["responses"]):
        first = seen.setdefault(orjson.dumps(response).decode(), index)
        if first != index:
            report.add(
                Issue("identical", line, f"responses[{index}]", f"identical to responses[{first}]")
            )
    return True


def _check_turns_row(
    row: dict[str, Any], line: int, path: str | Path, report: ValidationReport
) -> bool:
    """A per-turn conversation's issues: schema, empty answers, a rejected equal to its chosen."""
    empty = ("empty", "expected a non-empty")
    if not _schema_ok(lambda: validate_turns_record(row, path, line), line, report, empty):
        return False
    report.record_kinds["conversation"] += 1
    for index, message in enumerate(row["messages"]):
        if "rejected" in message and message["rejected"] == message["content"]:
            report.add(Issue("identical", line, f"messages[{index}].rejected",
                             "identical to the chosen answer"))  # fmt: skip
    return True


def _check_duplicate(
    digest: bytes, line: int, report: ValidationReport, seen: dict[bytes, int]
) -> None:
    first = seen.setdefault(digest, line)
    if first != line:
        report.add(Issue("duplicate", line, None, f"same pair as line {first}"))


def validate_file(
    path: str | Path,
    extra_columns: Sequence[str] = (),
    tokenizer: Any = None,
    tokenizer_name: str = "",
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    *,
    factual: bool = False,
    workers: int | None = None,
    range_bytes: int | None = None,
) -> ValidationReport:
    """Check ``path``; see the module docstring. File-level problems (missing, empty,
    truncated gzip) still raise.

    Without a tokenizer, a plain JSONL file of at least
    :data:`~prefopt.data.jsonl_ranges.MIN_PARALLEL_RANGES` ranges of ``range_bytes`` is
    checked by ``workers`` processes (default: :func:`~prefopt.modeling.threads.choose_threads`)."""
    report = ValidationReport(str(path), factual=factual)
    seen: dict[bytes, int] = {}
    kind = _first_kind(path)
    if tokenizer is None:
        workers = choose_threads() if workers is None else workers
        ranges = jsonl_ranges.parallel_plan(path, workers, range_bytes or jsonl_ranges.RANGE_BYTES)
        if ranges is not None:
            work = functools.partial(_validate_range, tuple(extra_columns), kind, factual)
            for first, _, (part, digests) in jsonl_ranges.map_ranges(
                path, ranges, work, min(workers, len(ranges))
            ):
                report.merge(part, first - 1)
                for digest, line in digests:
                    _check_duplicate(digest, line + first - 1, report, seen)
            if not report.rows:
                raise DataError(path, None, None, EMPTY_PROBLEM)
            return report
    measurer = None
    if tokenizer is not None:
        from prefopt.config import default_prompt_length
        from prefopt.data.tokenize import TokenizationSettings

        length = max_length or TokenizationSettings().max_length
        settings = TokenizationSettings(  # the limits training would resolve from these
            max_length=length,
            max_prompt_length=max_prompt_length or default_prompt_length(length),
        )
        report.lengths = LengthReport(
            tokenizer_name, settings.max_length, settings.max_prompt_length
        )
        measurer = _LengthMeasurer(tokenizer, settings, report.lengths, str(path))
    for line, row in _rows_with_problems(path, report):
        report.rows += 1
        if _check_row(row, line, path, report, extra_columns, kind):
            _check_duplicate(_pair_digest(row), line, report, seen)
            if measurer is not None and not is_turns_record(row):  # conversations: not yet
                measurer.add(line, row)
    if measurer is not None:
        measurer.flush()
    return report


def _first_kind(path: str | Path) -> str | None:
    """The kind of the file's first readable record (:mod:`prefopt.data.kinds`), or ``None``."""
    try:
        for _, row in iter_rows(path):
            return record_kind(row)
    except DataError:
        return None  # reported line by line
    return None


def _validate_range(
    extra_columns: Sequence[str],
    kind: str | None,
    factual: bool,
    path: str,
    first: int,
    lines: list[bytes],
) -> tuple[bytes, tuple[ValidationReport, list[tuple[bytes, int]]]]:
    """A pool worker's part: the report on one range's lines (numbered from ``first``) and
    the pair digests of its valid records with their lines, for the parent's duplicate
    check across ranges. No output bytes."""
    report = ValidationReport(path, factual=factual)
    digests: list[tuple[bytes, int]] = []
    for offset, raw in enumerate(lines):
        if not raw.strip():
            continue  # a blank line
        line = first + offset
        report.rows += 1
        try:
            row = parse_line(path, line, raw)
        except DataError as exc:
            report.add(Issue("unreadable", line, exc.field, exc.problem))
            continue
        if _check_row(row, line, path, report, extra_columns, kind):
            digests.append((_pair_digest(row), line))
    return b"", (report, digests)


class _LengthMeasurer:
    """Tokenizes valid records in batches with the trainer's tokenizer code, keeping only
    the lengths."""

    batch_size = 256

    def __init__(self, tokenizer: Any, settings: Any, lengths: LengthReport, source: str):
        from prefopt.data.tokenize import TokenizationSettings

        self.tokenizer = tokenizer
        self.settings = settings
        # Tokenize without limits to see the true lengths; the policy is applied afterwards.
        self.unlimited = TokenizationSettings(max_length=2**31 - 1, max_prompt_length=2**31 - 1)
        self.lengths = lengths
        self.source = source
        self.batch: list[tuple[int, dict[str, Any]]] = []
        self.lists: list[tuple[int, dict[str, Any]]] = []

    def add(self, line: int, row: dict[str, Any]) -> None:
        if is_list_record(row):
            self.lists.append((line, row))
        else:
            self.batch.append((line, row))
        if len(self.batch) + len(self.lists) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        from prefopt.data.list_tokenize import tokenize_lists
        from prefopt.data.tokenize import (
            TokenizationReport,
            tokenize_pairs,
            truncate_completions,
            truncate_pair,
        )

        policy = TokenizationReport()
        if self.lists:
            lists, _ = tokenize_lists(self.lists, self.tokenizer, self.unlimited, self.source)
            self.lists = []
            for item in lists:
                self.lengths.prompt.append(len(item.prompt_ids))
                self.lengths.responses.extend(len(ids) for ids in item.response_ids)
                if (
                    truncate_completions(item.prompt_ids, item.response_ids, self.settings, policy)
                    is None
                ):
                    self.lengths.dropped += 1
        if not self.batch:
            self.lengths.prompts_truncated += policy.prompts_truncated
            self.lengths.completions_truncated += policy.completions_truncated
            return
        pairs, _ = tokenize_pairs(self.batch, self.tokenizer, self.unlimited, source=self.source)
        self.batch = []
        for pair in pairs:
            self.lengths.prompt.append(len(pair.prompt_ids))
            self.lengths.chosen.append(len(pair.chosen_ids))
            self.lengths.rejected.append(len(pair.rejected_ids))
            kept = truncate_pair(
                pair.prompt_ids, pair.chosen_ids, pair.rejected_ids, self.settings, policy
            )
            if kept is None:
                self.lengths.dropped += 1
        self.lengths.prompts_truncated += policy.prompts_truncated
        self.lengths.completions_truncated += policy.completions_truncated
