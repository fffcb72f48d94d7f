"""Per-turn preferences: a conversation whose assistant turns may carry a rejected alternative.

The record::

    {"messages": [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello, how can I help?", "rejected": "What?"},
        {"role": "user", "content": "The capital of France?"},
        {"role": "assistant", "content": "Paris.", "rejected": "Lyon."}]}

An assistant message's ``content`` is its chosen answer, and the chosen answers form the
context of every later turn; ``rejected`` (a non-empty string) makes the turn a preference
pair: at turn t, chosen against rejected, each in the context of the messages before t.
Other fields travel along. A conversation needs a chat template to render.

**One row per conversation** (:func:`build_turn_segments`): the conversation with its chosen
answers (the trunk, part 0), then each turn's rejected answer as a branch (part t). The mask
(:mod:`prefopt.modeling.attention_masks`, with per-token forks) lets a branch see the trunk
only before its turn's answer, and itself; later turns see the earlier chosen answers, never a
rejected one. Each turn's log-probs equal a separate forward of that turn's own conversation
(its messages before t, then the answer), the pair a trainer would otherwise build.

Output sequences: the chosen answers of every turn of the batch first, then their rejected
answers in the same order, as pairs are ordered, so every pair loss trains on turns: the loss
is the mean over the batch's turns (a conversation with more preference turns weighs more).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefopt.data.records import _repr
from prefopt.data.tokenize import (
    TokenizationReport,
    TokenizationSettings,
    TokenizedPair,
    _encode,
)
from prefopt.errors import DataError


def is_turns_record(row: Any) -> bool:
    """Whether ``row`` is a per-turn conversation (it has ``messages``, no ``chosen``)."""
    return isinstance(row, dict) and "messages" in row and "chosen" not in row


def validate_turns_record(row: dict[str, Any], path: str | Path, line: int | None) -> None:
    """Check one conversation; ``DataError(path, line, field, problem)`` on the first fault."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataError(
            path, line, "messages", f"expected a list of messages, got {_repr(messages)}"
        )
    preferences = 0
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise DataError(path, line, where, f"expected a message object, got {_repr(message)}")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise DataError(path, line, f"{where}.{key}", f"expected a string, got "
                                f"{_repr(message.get(key))}")  # fmt: skip
        if "rejected" in message:
            if message["role"] != "assistant":
                raise DataError(
                    path, line, f"{where}.rejected", "only an assistant turn can be rejected"
                )
            rejected = message["rejected"]
            if not isinstance(rejected, str) or not rejected.strip():
                raise DataError(path, line, f"{where}.rejected",
                                f"expected a non-empty string, got {_repr(rejected)}")  # fmt: skip
            if not message["content"].strip():
                raise DataError(path, line, f"{where}.content", "empty chosen answer")
            if index == 0:
                raise DataError(path, line, where, "a preference turn needs a message before it")
            preferences += 1
    if not preferences:
        raise DataError(path, line, "messages", "no assistant turn has a rejected alternative")


def turn_pairs(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Each preference turn of a (valid) conversation as the pair record it trains as: the
    messages before it (chosen answers) as the prompt, then its chosen and rejected answers."""
    messages = row["messages"]
    pairs = []
    for index, message in enumerate(messages):
        if "rejected" in message:
            pairs.append({
                "prompt": _plain(messages[:index]),
                "chosen": [{"role": "assistant", "content": message["content"]}],
                "rejected": [{"role": "assistant", "content": message["rejected"]}],
            })  # fmt: skip
    return pairs


def turn_numbers(row: dict[str, Any]) -> list[int]:
    """The turn of each of :func:`turn_pairs`: the number of its assistant message in the
    conversation (1 for the first answer)."""
    numbers, answers = [], 0
    for message in row["messages"]:
        if message["role"] == "assistant":
            answers += 1
            if "rejected" in message:
                numbers.append(answers)
    return numbers


@dataclass
class TurnSpan:
    """One preference turn of a tokenized conversation: its chosen answer is
    ``trunk_ids[start:end]``; its rejected answer is ``rejected_ids``."""

    start: int
    end: int
    rejected_ids: list[int]


@dataclass
class TokenizedTurns:
    """A conversation as token ids: the trunk (every message, chosen answers) and its turns."""

    trunk_ids: list[int]
    turns: list[TurnSpan]
    index: int | None = None
    extras: dict[str, float] = field(default_factory=dict)
    #: Reference log-probs from the reference cache, when precomputed: every turn's chosen
    #: answer, then every turn's rejected one.
    reference: tuple[float, ...] | None = None

    def pairs(self) -> list[TokenizedPair]:
        """Each turn as the pair a separate forward would score: the trunk before its answer,
        the chosen answer, the rejected one."""
        return [
            TokenizedPair(
                self.trunk_ids[: t.start], self.trunk_ids[t.start : t.end], t.rejected_ids
            )
            for t in self.turns
        ]


def _plain(messages: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def tokenize_turns(
    rows: Sequence[tuple[int, dict[str, Any]]],
    tokenizer: Any,
    settings: TokenizationSettings,
    source: str = "<data>",
) -> tuple[list[TokenizedTurns], TokenizationReport]:
    """Render and tokenize conversations; ``report.pairs`` and ``report.dropped`` count turns.
    A conversation longer than ``max_length`` keeps the turns that fit (the later ones are
    dropped and counted); a turn's answers are cut to the room its context leaves.
    ``max_prompt_length`` does not apply: a turn's context is the conversation itself, which
    is never cut from the front (a turn whose context fills ``max_length`` is dropped)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise DataError(
            source, None, "messages", "per-turn data needs a tokenizer with a chat template"
        )
    report = TokenizationReport()
    out = []
    for line, row in rows:
        item = _tokenize_one(row, tokenizer, settings, f"{source}:{line}", report)
        if item is not None:
            out.append(item)
    return out, report


def _render(tokenizer: Any, messages: Sequence[dict[str, Any]], generation: bool) -> str:
    return str(
        tokenizer.apply_chat_template(
            _plain(messages), tokenize=False, add_generation_prompt=generation
        )
    )


def _tokenize_one(
    row: dict[str, Any],
    tokenizer: Any,
    settings: TokenizationSettings,
    where: str,
    report: TokenizationReport,
) -> TokenizedTurns | None:
    messages = row["messages"]
    trunk: list[int] = []
    turns: list[TurnSpan] = []
    for index, message in enumerate(messages):
        if "rejected" not in message:
            continue
        prompt_text = _render(tokenizer, messages[:index], generation=True)
        (prompt_ids,) = _encode(tokenizer, [prompt_text], special=False)
        if prompt_ids[: len(trunk)] != trunk:
            raise DataError(
                where, None, f"messages[{index}]",
                "the chat template renders the earlier turns differently once this one is "
                "added (e.g. it drops earlier reasoning): turns cannot share one row",
            )  # fmt: skip
        answers = []
        for name, content in (("content", message["content"]), ("rejected", message["rejected"])):
            full = _render(tokenizer, [*messages[:index], {**message, "content": content}], False)
            if not full.startswith(prompt_text):
                problem = "chat template output does not start with the rendered prompt"
                raise DataError(where, None, f"messages[{index}].{name}", problem)
            answers.append(full[len(prompt_text) :])
        chosen_ids, rejected_ids = _encode(tokenizer, answers, special=False)
        room = settings.max_length - len(prompt_ids)
        if room <= 0 or not chosen_ids or not rejected_ids:
            # this turn and the later ones do not fit: all of them are left out
            report.dropped += sum("rejected" in m for m in messages[index:])
            break
        if len(chosen_ids) > room or len(rejected_ids) > room:
            report.completions_truncated += 1
            chosen_ids, rejected_ids = chosen_ids[:room], rejected_ids[:room]
        trunk = prompt_ids + chosen_ids
        turns.append(TurnSpan(len(prompt_ids), len(trunk), rejected_ids))
        report.pairs += 1
    if not turns:
        return None
    return TokenizedTurns(trunk, turns)


def turns_length(item: TokenizedTurns) -> int:
    """Tokens a conversation occupies in one row: the trunk and every rejected branch."""
    return len(item.trunk_ids) + sum(len(t.rejected_ids) for t in item.turns)


def build_turn_segments(
    items: Sequence[TokenizedTurns], rows: Sequence[Sequence[int]], pad_token_id: int
) -> dict[str, Any]:
    """Tensors of the tree layout for ``items`` placed in ``rows`` (see the module docstring):
    each conversation a trunk whose chosen answers are scored in place, with each turn's
    rejected answer a branch forked at that turn (:func:`prefopt.data.collate.build_tree_segments`).
    The batch's turns are numbered conversation by conversation: turn ``p`` of ``P`` has its
    chosen answer in output sequence ``p`` and its rejected one in ``P + p``."""
    from prefopt.data.collate import Branch, Segment, TrunkSpan, build_tree_segments

    count = sum(len(item.turns) for item in items)
    segments = []
    pair = 0
    for item in items:
        pieces: list[TrunkSpan | Branch] = []
        for turn in item.turns:
            pieces += [
                TrunkSpan(turn.start, turn.end, pair),
                Branch(turn.start, turn.rejected_ids, count + pair),
            ]
            pair += 1
        segments.append(Segment(item.trunk_ids, pieces))
    return build_tree_segments(segments, rows, pad_token_id, 2 * count)


class TurnCollator:
    """Collate conversations: the tree layout (``prefix``: a row each, ``packed``: several to
    a row), or ``padded``: every turn as its own pair (two rows, the context run twice)."""

    def __init__(self, layout: str, pad_token_id: int, pack_tokens: int = 0) -> None:
        self.layout = layout
        self.pad_token_id = pad_token_id
        self.pack_tokens = pack_tokens

    def rows(self, items: Sequence[TokenizedTurns]) -> list[list[int]]:
        from prefopt.data.collate import shared_rows

        return shared_rows([turns_length(item) for item in items], self.layout, self.pack_tokens)

    def __call__(self, items: Sequence[TokenizedTurns]) -> dict[str, Any]:
        import torch

        from prefopt.data.collate import add_sequence_columns

        if self.layout == "padded":
            from prefopt.data.collate import PaddedCollator

            pairs = [pair for item in items for pair in item.pairs()]
            batch = PaddedCollator(self.pad_token_id)(pairs)
        else:
            batch = build_turn_segments(items, self.rows(items), self.pad_token_id)
        # Which conversation each pair (turn) comes from, to gather pairs across processes.
        owners = [number for number, item in enumerate(items) for _ in item.turns]
        batch["pair_sample"] = torch.tensor(owners, dtype=torch.long)
        batch["samples"] = torch.tensor(len(items))
        # A conversation's values: every turn's chosen answer, then every rejected one.
        turn_of = [turn for item in items for turn in range(len(item.turns))]
        chosen = list(zip(owners, turn_of, strict=True))
        rejected = [(owner, len(items[owner].turns) + turn) for owner, turn in chosen]
        add_sequence_columns(batch, items, chosen + rejected)
        return batch
