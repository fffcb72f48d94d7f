"""The preference record: one pair per row, ``prompt`` / ``chosen`` / ``rejected``.

A record is *standard* when the three fields are non-empty strings, and *conversational*
(TRL's format) when they are non-empty lists of chat messages ``{"role": str, "content":
str}``: the prompt is the conversation so far, ``chosen`` and ``rejected`` are the assistant
messages that follow it. Any other field (``h_w``, ``h_l``, ``id``, ``source``...) travels
along untouched; the fields an algorithm needs (its ``extra_columns``) must be numbers or
booleans.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefopt.errors import DataError

RECORD_FIELDS = ("prompt", "chosen", "rejected")


def is_conversational(row: dict[str, Any]) -> bool:
    """Whether ``row`` holds message lists (conversational) rather than plain strings."""
    value = row.get("prompt", row.get("chosen"))
    return isinstance(value, list)


def validate_record(
    row: dict[str, Any],
    path: str | Path,
    line: int | None,
    extra_columns: Sequence[str] = (),
) -> None:
    """Check one record; raise ``DataError(path, line, field, problem)`` on the first fault.

    ``prompt``, ``chosen`` and ``rejected`` must all be non-empty strings or all be
    non-empty message lists, with ``chosen`` and ``rejected`` starting with an assistant
    message. Every field named in ``extra_columns`` must be present and a number or bool.
    """
    if not isinstance(row, dict):
        raise DataError(path, line, None, f"expected a JSON object, got {type(row).__name__}")
    kinds: dict[str, str] = {}
    for field in RECORD_FIELDS:
        if field not in row:
            raise DataError(path, line, field, "missing field")
        kinds[field] = _check_field(row[field], field, path, line)
    if kinds["prompt"] != kinds["chosen"] or kinds["prompt"] != kinds["rejected"]:
        odd = "chosen" if kinds["chosen"] != kinds["prompt"] else "rejected"
        raise DataError(
            path,
            line,
            odd,
            f"is {_describe_kind(kinds[odd])} but prompt is {_describe_kind(kinds['prompt'])}; "
            "prompt, chosen and rejected must all be strings or all message lists",
        )
    if kinds["prompt"] == "conversational":
        for field in ("chosen", "rejected"):
            if not any(message["content"].strip() for message in row[field]):
                raise DataError(path, line, field, "empty response (every message is empty)")
            role = row[field][0]["role"]
            if role != "assistant":
                raise DataError(
                    path,
                    line,
                    f"{field}[0].role",
                    f"expected 'assistant' (the reply that follows the prompt), got {role!r}",
                )
    for column in extra_columns:
        if column not in row:
            raise DataError(path, line, column, "missing field (the algorithm needs it)")
        value = row[column]
        if isinstance(value, bool):
            continue
        if not isinstance(value, int | float):
            raise DataError(path, line, column, f"expected a number or bool, got {_repr(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise DataError(path, line, column, f"expected a finite number, got {value}")


def _check_field(value: Any, field: str, path: str | Path, line: int | None) -> str:
    """Validate one of prompt/chosen/rejected; return ``standard`` or ``conversational``."""
    if isinstance(value, str):
        if not value.strip():
            raise DataError(path, line, field, "empty string")
        return "standard"
    if isinstance(value, list):
        if not value:
            raise DataError(path, line, field, "empty message list")
        for index, message in enumerate(value):
            where = f"{field}[{index}]"
            if not isinstance(message, dict):
                raise DataError(
                    path, line, where, f"expected a message object, got {_repr(message)}"
                )
            for key in ("role", "content"):
                if key not in message:
                    raise DataError(path, line, f"{where}.{key}", "missing field")
                if not isinstance(message[key], str):
                    raise DataError(
                        path,
                        line,
                        f"{where}.{key}",
                        f"expected a string, got {_repr(message[key])}",
                    )
            if not message["role"]:
                raise DataError(path, line, f"{where}.role", "empty string")
        return "conversational"
    raise DataError(
        path, line, field, f"expected a string or a list of messages, got {_repr(value)}"
    )


def _describe_kind(kind: str) -> str:
    return "a string" if kind == "standard" else "a message list"


def _repr(value: Any) -> str:
    """A short description of a wrong value for error messages: its type and a preview."""
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


# -- changing kind -------------------------------------------------------------------------


def as_messages(value: str | list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    """A message list for ``value``: a string becomes one message with ``role``."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return list(value)


def to_conversational(record: dict[str, Any]) -> dict[str, Any]:
    """The record with string fields turned into messages (prompt: user, replies:
    assistant); other fields are kept in place."""
    out = dict(record)
    out["prompt"] = as_messages(record["prompt"], "user")
    out["chosen"] = as_messages(record["chosen"], "assistant")
    out["rejected"] = as_messages(record["rejected"], "assistant")
    return out


def render_prompt(messages: list[dict[str, Any]]) -> str:
    """A message list as one prompt string.

    A single user message is its content. A longer conversation is written as a transcript,
    one ``Role: content`` paragraph per message, ending with ``Assistant:`` so that the reply
    continues it.
    """
    if len(messages) == 1 and messages[0]["role"] == "user":
        return str(messages[0]["content"])
    turns = [f"{str(m['role']).capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(turns) + "\n\nAssistant: "


def render_reply(messages: list[dict[str, Any]]) -> str:
    """The contents of a reply's messages, joined by blank lines."""
    return "\n\n".join(str(m["content"]) for m in messages)


def to_standard(record: dict[str, Any]) -> dict[str, Any]:
    """The record with message lists rendered as plain strings (see :func:`render_prompt`);
    other fields are kept in place."""
    out = dict(record)
    if isinstance(record["prompt"], list):
        out["prompt"] = render_prompt(record["prompt"])
    for field in ("chosen", "rejected"):
        if isinstance(record[field], list):
            out[field] = render_reply(record[field])
    return out
