"""Deterministic train/eval splits.

Each unit (a row, or with ``group_by`` every row sharing a value of that field, e.g. all the
pairs of one prompt) gets a 64-bit hash of ``(seed, unit key)``; the ``round(fraction *
units)`` units with the smallest hashes go to eval, the rest to train. So the split depends
only on the seed and the data, keeps a group on one side, and hits the fraction exactly
(in units; in rows when not grouping), with at least one unit on each side: an input of one
unit is refused. Two passes over the input: the first hashes (8 bytes of memory per row), the
second writes both outputs, atomically.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from prefopt.data.io import file_format, iter_rows
from prefopt.data.writing import atomic_writer, check_writable
from prefopt.errors import DataError, UsageError


@dataclass
class SplitSummary:
    """Where the rows went."""

    train_path: Path
    eval_path: Path
    train_rows: int = 0
    eval_rows: int = 0
    units: int = 0
    eval_units: int = 0


def default_outputs(path: str | Path) -> tuple[Path, Path]:
    """``<stem>_train.jsonl`` and ``<stem>_eval.jsonl`` beside the input (``.gz`` kept)."""
    path = Path(path)
    _, compressed = file_format(path)
    name = path.name[: -len(".gz")] if compressed else path.name
    stem = name.rsplit(".", 1)[0]
    suffix = ".jsonl.gz" if compressed else ".jsonl"
    return path.with_name(f"{stem}_train{suffix}"), path.with_name(f"{stem}_eval{suffix}")


def unit_hash(seed: int, key: bytes) -> int:
    """The 64-bit hash that orders units for a given seed."""
    digest = hashlib.blake2b(key, digest_size=8, salt=seed.to_bytes(8, "little", signed=True))
    return int.from_bytes(digest.digest(), "little")


def _unit_keys(
    path: str | Path, group_by: str | None
) -> Iterator[tuple[int, dict[str, Any], bytes]]:
    for line, row in iter_rows(path):
        if group_by is None:
            key = str(line).encode()
        else:
            if group_by not in row:
                hint = "; a conversation has none: group by id" if "messages" in row else ""
                raise DataError(path, line, group_by, f"missing field (needed by --group-by{hint})")
            key = orjson.dumps(row[group_by], option=orjson.OPT_SORT_KEYS)
        yield line, row, key


def eval_count(fraction: float, units: int) -> int:
    """How many units go to eval: ``round(fraction * units)``, but at least one on each
    side when there are two units or more."""
    count = round(fraction * units)
    if units >= 2:
        count = min(max(count, 1), units - 1)
    return count


def _threshold(hashes: array, fraction: float, grouped: bool) -> tuple[int, int, int]:
    """``(units, threshold, eval_units)``: a row goes to eval when its hash <= threshold."""
    import numpy as np

    values = np.frombuffer(hashes, dtype=np.uint64)
    if grouped:
        values = np.unique(values)  # one hash per group, sorted
    units = len(values)
    count = eval_count(fraction, units)
    if count == 0:
        return units, -1, 0
    if not grouped:
        values = np.partition(values, count - 1)
    return units, int(values[count - 1]), count


def split_file(
    input_path: str | Path,
    eval_fraction: float,
    seed: int = 0,
    group_by: str | None = None,
    train_path: str | Path | None = None,
    eval_path: str | Path | None = None,
    force: bool = False,
) -> SplitSummary:
    """Split ``input_path`` into train and eval JSONL files; see the module docstring."""
    if not 0.0 < eval_fraction < 1.0:
        raise UsageError(
            f"--eval-fraction must be between 0 and 1 (exclusive), got {eval_fraction}"
        )
    default_train, default_eval = default_outputs(input_path)
    train_out = Path(train_path) if train_path is not None else default_train
    eval_out = Path(eval_path) if eval_path is not None else default_eval
    if train_out.resolve() == eval_out.resolve():
        raise UsageError("the train and eval outputs must be different files")
    for output in (train_out, eval_out):
        if output.resolve() == Path(input_path).resolve():
            raise UsageError(f"{output}: an output would overwrite the input")
        check_writable(output, force)

    hashes = array("Q", (unit_hash(seed, key) for _, _, key in _unit_keys(input_path, group_by)))
    units, threshold, count = _threshold(hashes, eval_fraction, grouped=group_by is not None)
    if units < 2:  # nothing written: one unit cannot go to both sides
        unit = f"{group_by} group" if group_by else "row"
        raise UsageError(
            f"{input_path}: {units} {unit}{'' if units == 1 else 's'}; a split needs at least "
            f"2, one on each side"
        )
    summary = SplitSummary(train_out, eval_out, units=units, eval_units=count)

    dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    with ExitStack() as stack:
        train = stack.enter_context(atomic_writer(train_out, force))
        evaluation = stack.enter_context(atomic_writer(eval_out, force))
        for index, (_, row) in enumerate(iter_rows(input_path)):
            if hashes[index] <= threshold:
                evaluation.write(dumps(row, option=option))
                summary.eval_rows += 1
            else:
                train.write(dumps(row, option=option))
                summary.train_rows += 1
    return summary
