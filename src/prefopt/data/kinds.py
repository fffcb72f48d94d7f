"""The three kinds of preference record, and the rule that a file holds one kind.

- a **pair**: ``prompt``, ``chosen``, ``rejected`` (:mod:`prefopt.data.records`);
- a **list** of ranked responses: ``prompt``, ``responses``, ``scores`` or ``ranking``
  (:mod:`prefopt.data.lists`);
- a **conversation** with per-turn preferences: ``messages`` (:mod:`prefopt.data.turns`).

A file's first record decides its kind; a record of another kind further on is an error that
names its line, the field that gives its kind away, and both kinds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefopt.data.lists import is_list_record
from prefopt.data.turns import is_turns_record
from prefopt.errors import DataError

#: The kinds, as a file of them is called.
KINDS = ("pairs", "lists", "conversations")
_ONE = {"pairs": "a pair", "lists": "a list of responses", "conversations": "a conversation"}
_FIELD = {"pairs": "chosen", "lists": "responses", "conversations": "messages"}


def record_kind(row: Any) -> str:
    """``pairs``, ``lists`` or ``conversations``: the kind of file ``row`` belongs in."""
    if is_list_record(row):
        return "lists"
    if is_turns_record(row):
        return "conversations"
    return "pairs"


def kind_mismatch(row: Any, expected: str) -> tuple[str, str] | None:
    """``(field, problem)`` when ``row`` is not of the ``expected`` kind, else ``None``."""
    found = record_kind(row)
    if found == expected:
        return None
    return _FIELD[found], (
        f"{_ONE[found]} in a file of {expected} (its first record's kind): a file holds one "
        "kind, pairs, lists or conversations"
    )


def check_kind(row: Any, expected: str, path: str | Path, line: int | None) -> None:
    """Raise ``DataError`` when ``row`` is not of the ``expected`` kind."""
    mismatch = kind_mismatch(row, expected)
    if mismatch is not None:
        raise DataError(path, line, *mismatch)
