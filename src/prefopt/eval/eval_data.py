"""The data ``prefopt eval`` scores, read and tokenized exactly as training reads it: pairs
(:func:`prefopt.data.tokenize.tokenize_pairs`), or per-turn conversations
(:func:`prefopt.data.turns.tokenize_turns`), each preference turn then a pair. Lists of ranked
responses: :mod:`prefopt.eval.list_eval`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class EvalData:
    rows: list[tuple[int, dict[str, Any]]]
    pairs: list[Any]
    row_index: list[int]  # pairs[i] comes from rows[row_index[i]]
    has_h: bool
    dropped: int
    #: For per-turn conversations: each pair's turn, the number of its assistant message.
    turns: list[int] | None = None


def load_eval_pairs(
    source: str, tokenizer: Any, max_length: int, max_prompt_length: int, split: str = "test"
) -> EvalData:
    """Read, validate and tokenize the pairs; h flags are used when the first row has them."""
    from prefopt.data.flip import h_value
    from prefopt.data.io import load_rows
    from prefopt.data.kinds import check_kind
    from prefopt.data.records import validate_record
    from prefopt.data.turns import is_turns_record
    from prefopt.errors import DataError, UsageError

    rows: list[tuple[int, dict[str, Any]]] = []
    has_h = False
    records = iter(load_rows(source, split=split))
    first = next(records, None)
    if first is not None and is_turns_record(first[1]):
        return _load_eval_turns(source, tokenizer, max_length, max_prompt_length,
                                [first, *records])  # fmt: skip
    for line, row in [first, *records] if first is not None else []:
        check_kind(row, "pairs", source, line)
        validate_record(row, source, line)
        if not rows:
            has_h = "h_w" in row and "h_l" in row
        if has_h:
            for name in ("h_w", "h_l"):
                if name not in row:
                    raise DataError(
                        source, line, name, "missing field (the first pair has h_w and h_l)"
                    )
            h_value(row, "h_w", source, line)
            h_value(row, "h_l", source, line)
        rows.append((line, row))
    if not rows:
        raise UsageError(f"{source}: no preference pairs found")
    return _tokenize_eval_pairs(source, tokenizer, max_length, max_prompt_length, rows, has_h)


def _tokenize_eval_pairs(
    source: str,
    tokenizer: Any,
    max_length: int,
    max_prompt_length: int,
    rows: list[tuple[int, dict[str, Any]]],
    has_h: bool,
) -> EvalData:
    from prefopt.data.tokenize import TokenizationSettings, tokenize_pairs
    from prefopt.errors import UsageError

    # The row index travels through tokenization as an extra column, so dropped pairs are known.
    indexed = ((line, {**row, "_prefopt_row": index}) for index, (line, row) in enumerate(rows))
    settings = TokenizationSettings(max_length, max_prompt_length)
    pairs, report = tokenize_pairs(indexed, tokenizer, settings, ("_prefopt_row",), source)
    if not pairs:
        raise UsageError(f"{source}: every pair was dropped by truncation; raise --max-length")
    row_index = [int(pair.extras.pop("_prefopt_row")) for pair in pairs]
    return EvalData(rows, pairs, row_index, has_h, report.dropped)


def _load_eval_turns(
    source: str,
    tokenizer: Any,
    max_length: int,
    max_prompt_length: int,
    records: list[tuple[int, dict[str, Any]]],
) -> EvalData:
    """Per-turn conversations (:mod:`prefopt.data.turns`) scored turn by turn: each
    preference turn as the pair training scores (tokenized as training tokenizes them: the
    context never cut from the front, the turns a long conversation has no room for dropped),
    numbered by its assistant message (1 for the first answer)."""
    from prefopt.data.kinds import check_kind
    from prefopt.data.tokenize import TokenizationSettings
    from prefopt.data.turns import tokenize_turns, turn_numbers, validate_turns_record
    from prefopt.errors import UsageError

    settings = TokenizationSettings(max_length, max_prompt_length)
    rows: list[tuple[int, dict[str, Any]]] = []
    pairs: list[Any] = []
    numbers: list[int] = []
    dropped = 0
    for line, row in records:
        check_kind(row, "conversations", source, line)
        validate_turns_record(row, source, line)
        tokenized, report = tokenize_turns([(line, row)], tokenizer, settings, source)
        dropped += report.dropped
        for item in tokenized:  # the turns that fit: the conversation's first ones
            kept = item.pairs()
            pairs += kept
            numbers += turn_numbers(row)[: len(kept)]
            rows += [(line, {"id": row["id"]} if "id" in row else {})] * len(kept)
    if not pairs:
        raise UsageError(f"{source}: every turn was dropped by truncation; raise --max-length")
    return EvalData(rows, pairs, list(range(len(pairs))), False, dropped, numbers)
