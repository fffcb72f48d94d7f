"""Tokenization of list records (a prompt and N ranked responses), as pairs are tokenized.

The prompt and every response are rendered and encoded exactly as a pair's prompt and
completions are (:mod:`prefopt.data.tokenize`): the chat template for conversational records,
BOS on a plain prompt, EOS after each plain response. Truncation is the pairs' policy applied
to each response: the prompt keeps its last ``max_prompt_length`` tokens, then every response
is cut so that prompt + response fit ``max_length``. A list left with no room for a response
is dropped and counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prefopt.data.lists import quality
from prefopt.data.tokenize import (
    TokenizationReport,
    TokenizationSettings,
    _encode,
    _with_eos,
    render_responses,
    truncate_completions,
)

_BATCH = 256


@dataclass
class TokenizedList:
    """A list record as token ids, with each response's quality (higher is better) and its
    hallucination flag when the record has ``h``."""

    prompt_ids: list[int]
    response_ids: list[list[int]]
    quality: list[float]
    flags: list[int] | None = None
    #: Position in its data set (set by a training run).
    index: int | None = None
    extras: dict[str, float] = field(default_factory=dict)
    #: Each response's reference log-prob from the reference cache, when precomputed.
    reference: tuple[float, ...] | None = None


def tokenize_lists(
    rows: Iterable[tuple[int, dict[str, Any]]],
    tokenizer: Any,
    settings: TokenizationSettings,
    source: str = "<data>",
) -> tuple[list[TokenizedList], TokenizationReport]:
    """Tokenize ``(line, list record)`` pairs; the kept lists and a report (``pairs`` counts
    lists here)."""
    report = TokenizationReport()
    out: list[TokenizedList] = []
    batch: list[tuple[int, dict[str, Any]]] = []
    for item in rows:
        batch.append(item)
        if len(batch) >= _BATCH:
            _tokenize_batch(batch, tokenizer, settings, source, out, report)
            batch = []
    if batch:
        _tokenize_batch(batch, tokenizer, settings, source, out, report)
    return out, report


def _tokenize_batch(
    batch: list[tuple[int, dict[str, Any]]],
    tokenizer: Any,
    settings: TokenizationSettings,
    source: str,
    out: list[TokenizedList],
    report: TokenizationReport,
) -> None:
    rendered = []
    for line, row in batch:
        named = [(f"responses[{i}]", r) for i, r in enumerate(row["responses"])]
        rendered.append(render_responses(row["prompt"], named, tokenizer, f"{source}:{line}"))
    eos = tokenizer.eos_token_id
    for (_line, row), (prompt_text, texts, is_chat) in zip(batch, rendered, strict=True):
        (prompt_ids,) = _encode(tokenizer, [prompt_text], special=not is_chat)
        responses = _encode(tokenizer, texts, special=False)
        if eos is not None and not is_chat:
            responses = [_with_eos(ids, eos) for ids in responses]
        kept = truncate_completions(prompt_ids, responses, settings, report)
        if kept is None:
            report.dropped += 1
            continue
        prompt_ids, responses = kept
        flags = [int(flag) for flag in row["h"]] if "h" in row else None
        out.append(TokenizedList(prompt_ids, responses, quality(row), flags))
        report.pairs += 1
