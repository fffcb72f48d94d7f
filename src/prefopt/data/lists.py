"""The list record: one prompt, N ranked responses, and the pairs a list stands for.

A list record generalises the pair::

    {"prompt": ..., "responses": [r1, ..., rN], "scores": [s1, ..., sN]}

``responses`` are N ≥ 2 non-empty strings, or N non-empty message lists starting with an
assistant message (then the prompt is a message list too), as ``chosen``/``rejected`` are in a
pair. Their quality is given by ``scores`` (numbers, higher is better) or ``ranking`` (integers,
1 is best): one of the two. An optional ``h`` gives each response's hallucination flag (0 or 1)
for Factual-DPO. Any other field travels along untouched.

**Ties.** Responses with equal scores (or equal ranks) are tied: neither is preferred, so no
pair is formed between them, and a list whose responses are all tied stands for no pair at all.
A ranking of ``[1, 1, 3]`` is two tied best responses above a third.

**Pairs of a list** (:func:`list_pairs`), each ``(better, worse)`` by index:

- ``best-worst``: the best response against the worst (one pair; with tied bests or worsts,
  the first of them in the list);
- ``best-rest``: the best response (each of them, when several tie for best) against every
  response scored strictly lower;
- ``all``: every two responses with different scores, the better one first.

The score gap of a pair (``scores[better] − scores[worse]``, or the rank difference) can weight
it (:func:`pair_weights`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefopt.data.records import _check_field, _repr, as_messages, render_prompt, render_reply
from prefopt.errors import DataError

LIST_FIELDS = ("prompt", "responses")
PAIRINGS = ("best-worst", "best-rest", "all")


def is_list_record(row: dict[str, Any]) -> bool:
    """Whether ``row`` is a list record (it has ``responses``) rather than a pair."""
    return isinstance(row, dict) and "responses" in row


def is_list_source(source: str | Path, split: str = "train") -> bool:
    """Whether a data source holds list records (its first record has ``responses``)."""
    from prefopt.data.io import load_rows

    for _, row in load_rows(str(source), split=split):
        return is_list_record(row)
    return False


def validate_list_record(row: dict[str, Any], path: str | Path, line: int | None) -> None:
    """Check one list record; ``DataError(path, line, field, problem)`` on the first fault."""
    for field in LIST_FIELDS:
        if field not in row:
            raise DataError(path, line, field, "missing field")
    prompt_kind = _check_field(row["prompt"], "prompt", path, line)
    responses = row["responses"]
    if not isinstance(responses, list) or len(responses) < 2:
        raise DataError(
            path,
            line,
            "responses",
            f"expected a list of 2 or more responses, got {_repr(responses)}",
        )
    for index, response in enumerate(responses):
        where = f"responses[{index}]"
        kind = _check_field(response, where, path, line)
        if kind != prompt_kind:
            raise DataError(
                path,
                line,
                where,
                "is a message list but prompt is a string"
                if kind == "conversational"
                else "is a string but prompt is a message list",
            )
        if kind == "conversational":
            if not any(message["content"].strip() for message in response):
                raise DataError(path, line, where, "empty response (every message is empty)")
            if response[0]["role"] != "assistant":
                raise DataError(
                    path, line, f"{where}[0].role",
                    f"expected 'assistant' (the reply that follows the prompt), got "
                    f"{response[0]['role']!r}",
                )  # fmt: skip
    _check_quality(row, len(responses), path, line)
    if "h" in row:
        flags = row["h"]
        if not isinstance(flags, list) or len(flags) != len(responses):
            raise DataError(
                path, line, "h", f"expected {len(responses)} flags (one per response), got "
                f"{_repr(flags)}"
            )  # fmt: skip
        for index, flag in enumerate(flags):
            if flag not in (0, 1) or isinstance(flag, float) and flag not in (0.0, 1.0):
                raise DataError(path, line, f"h[{index}]", f"expected 0 or 1, got {_repr(flag)}")


def _check_quality(row: dict[str, Any], count: int, path: str | Path, line: int | None) -> None:
    has_scores, has_ranking = "scores" in row, "ranking" in row
    if has_scores == has_ranking:
        problem = "give scores or ranking, not both" if has_scores else "missing field"
        raise DataError(path, line, "scores", f"{problem} (scores: higher is better; ranking: 1 "
                        "is best)")  # fmt: skip
    field = "scores" if has_scores else "ranking"
    values = row[field]
    if not isinstance(values, list) or len(values) != count:
        raise DataError(
            path, line, field, f"expected {count} values (one per response), got {_repr(values)}"
        )
    for index, value in enumerate(values):
        where = f"{field}[{index}]"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DataError(path, line, where, f"expected a number, got {_repr(value)}")
        if not math.isfinite(value):
            raise DataError(path, line, where, f"expected a finite number, got {value}")
        if field == "ranking" and (value != int(value) or value < 1):
            raise DataError(
                path, line, where, f"expected a rank 1, 2, ... (1 is best), got {value}"
            )


def list_to_conversational(record: dict[str, Any]) -> dict[str, Any]:
    """The list record with strings as messages (prompt: user, responses: assistant)."""
    out = dict(record)
    out["prompt"] = as_messages(record["prompt"], "user")
    out["responses"] = [as_messages(response, "assistant") for response in record["responses"]]
    return out


def list_to_standard(record: dict[str, Any]) -> dict[str, Any]:
    """The list record with message lists rendered as plain strings."""
    out = dict(record)
    if isinstance(record["prompt"], list):
        out["prompt"] = render_prompt(record["prompt"])
    out["responses"] = [
        render_reply(response) if isinstance(response, list) else response
        for response in record["responses"]
    ]
    return out


def quality(row: dict[str, Any]) -> list[float]:
    """Each response's quality, higher is better (scores as given, ranks negated)."""
    if "scores" in row:
        return [float(value) for value in row["scores"]]
    return [-float(value) for value in row["ranking"]]


def list_pairs(row: dict[str, Any], pairing: str = "best-worst") -> list[tuple[int, int]]:
    """The ``(better, worse)`` index pairs of a (valid) list record; tied responses form none."""
    return pairs_of(quality(row), pairing)


def pairs_of(values: Sequence[float], pairing: str = "best-worst") -> list[tuple[int, int]]:
    """The ``(better, worse)`` index pairs of responses of quality ``values`` (higher is
    better) under ``pairing``; tied responses form none."""
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
    order = sorted(range(len(values)), key=lambda index: (-values[index], index))
    best, worst = order[0], max(order, key=lambda index: (-values[index], -index))
    if values[best] == values[worst]:
        return []  # every response tied
    if pairing == "best-worst":
        return [(best, worst)]
    if pairing == "best-rest":
        tops = [index for index in order if values[index] == values[best]]
        return [(top, other) for top in tops for other in order if values[other] < values[best]]
    return [
        (better, worse)
        for position, better in enumerate(order)
        for worse in order[position + 1 :]
        if values[better] > values[worse]
    ]


def pair_weights(row: dict[str, Any], pairs: Sequence[tuple[int, int]]) -> list[float]:
    """Each pair's score gap (rank difference for a ranking), for weighting by gap."""
    values = quality(row)
    return [values[better] - values[worse] for better, worse in pairs]


def to_pair_records(row: dict[str, Any], pairing: str) -> list[dict[str, Any]]:
    """The pair records a list record stands for (``data pairs``): ``prompt``, ``chosen``,
    ``rejected``, the flags as ``h_w``/``h_l`` when the list has ``h``, the score gap as
    ``score_gap``, and the list's other fields."""
    kept = {
        key: value
        for key, value in row.items()
        if key not in ("prompt", "responses", "scores", "ranking", "h")
    }
    records = []
    for (better, worse), gap in zip(
        pairs := list_pairs(row, pairing), pair_weights(row, pairs), strict=True
    ):
        record = {"prompt": row["prompt"], "chosen": row["responses"][better],
                  "rejected": row["responses"][worse]}  # fmt: skip
        if "h" in row:
            record["h_w"], record["h_l"] = int(row["h"][better]), int(row["h"][worse])
        record["score_gap"] = gap
        records.append({**kept, **record})  # the pair's own fields win over leftovers
    return records


class PairsSummary:
    """What :func:`write_pairs_file` did: lists read, pairs written, lists that gave none."""

    def __init__(self) -> None:
        self.lists = 0
        self.pairs = 0
        self.all_tied = 0
        self.passed_through = 0  # pair records already, copied as they are
        self.conversations = 0  # per-turn conversations, a pair for each preference turn


def write_pairs_file(
    source: str | Path, output: str | Path, pairing: str = "best-worst", force: bool = False
) -> PairsSummary:
    """Turn every list record of ``source`` into its pairs (:func:`to_pair_records`) in
    ``output`` (JSONL, written whole or not at all). A per-turn conversation gives a pair for
    each preference turn, the pair it trains as (:func:`prefopt.data.turns.turn_pairs`, its
    other fields kept). Pair records pass through unchanged; a list whose responses are all
    tied gives no pair and is counted."""
    from prefopt.data.io import iter_rows
    from prefopt.data.records import validate_record
    from prefopt.data.turns import is_turns_record, turn_pairs, validate_turns_record
    from prefopt.data.writing import write_jsonl

    if pairing not in PAIRINGS:
        from prefopt.errors import UsageError

        raise UsageError(f"--pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
    summary = PairsSummary()

    def rows() -> Any:
        for line, row in iter_rows(source):
            if is_list_record(row):
                validate_list_record(row, source, line)
                summary.lists += 1
                pairs = to_pair_records(row, pairing)
                summary.all_tied += not pairs
                summary.pairs += len(pairs)
                yield from pairs
            elif is_turns_record(row):
                validate_turns_record(row, source, line)
                summary.conversations += 1
                others = {key: value for key, value in row.items() if key != "messages"}
                turns = [{**pair, **others} for pair in turn_pairs(row)]
                summary.pairs += len(turns)
                yield from turns
            else:
                validate_record(row, source, line)
                summary.passed_through += 1
                summary.pairs += 1
                yield row

    write_jsonl(output, rows(), force=force)
    return summary


def dense_ranks(values: Sequence[float]) -> list[int]:
    """Each response's rank among the distinct quality values, 0 the best (ties share one):
    an exact integer form of the order, safe from float casts."""
    distinct = sorted(set(values), reverse=True)
    return [distinct.index(value) for value in values]
