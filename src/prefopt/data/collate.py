"""Collation of tokenized pairs into model inputs; the layout is a seam.

Three layouts, all giving the same per-pair log-probs (up to float rounding):

- ``PaddedCollator``: 2B right-padded rows, the B chosen sequences ``prompt + chosen`` first and
  then the B rejected ones ``prompt + rejected``. ``completion_mask`` marks the completion tokens
  whose log-probs are summed. Every model and attention implementation takes it.
- ``PrefixSharedCollator``: one row per pair, ``[prompt | chosen | rejected]``; the prompt is run
  once instead of twice. Rejected tokens get the positions they would have after the prompt and
  a mask that hides the chosen tokens from them (see :mod:`prefopt.modeling.attention_masks`).
- ``PackedCollator``: prefix-shared pair segments packed several to a row up to a token budget
  (first-fit decreasing), with a block-diagonal mask, so padding nearly vanishes.

The prefix-shared and packed batches carry ``position_ids``, per-token ``segment_ids`` and
``parts`` (the mask is built on the device at forward time) and the scored tokens as four (K,)
vectors: ``score_rows``/``score_positions`` (the hidden state that predicts the token),
``score_targets`` (the token id) and ``score_index`` (output sequence: pair ``i``'s chosen is
``i``, its rejected ``B + i``). All layouts carry per-pair ``extras`` as float tensors of shape
(B,) and the columns the reference cache reads (:func:`add_sequence_columns`): which pair and
which of its two values each output sequence is, ``reference_logps`` (2B,) float64 when every
pair has cached reference log-probs, and ``sample_index`` (B,) when every pair knows its place
in the data set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prefopt.data.tokenize import TokenizedPair

LAYOUTS = ("padded", "prefix", "packed")


def pair_length(pair: TokenizedPair, layout: str = "prefix") -> int:
    """Tokens a pair occupies in ``layout`` (``padded``: its longer row)."""
    if layout == "padded":
        return len(pair.prompt_ids) + max(len(pair.chosen_ids), len(pair.rejected_ids))
    return len(pair.prompt_ids) + len(pair.chosen_ids) + len(pair.rejected_ids)


def _common(
    batch: dict[str, Any], pairs: Sequence[TokenizedPair], extra_columns: Sequence[str]
) -> None:
    import torch

    batch["extras"] = {
        name: torch.tensor([pair.extras[name] for pair in pairs], dtype=torch.float32)
        for name in extra_columns
    }
    count = len(pairs)
    slots = [(index, 0) for index in range(count)] + [(index, 1) for index in range(count)]
    add_sequence_columns(batch, pairs, slots)


def add_sequence_columns(
    batch: dict[str, Any], items: Sequence[Any], slots: Sequence[tuple[int, int]]
) -> None:
    """What the reference cache reads of a batch of ``items`` (pairs, lists or conversations,
    each with ``reference`` and ``index``), whose output sequence ``s`` is value
    ``slots[s][1]`` of item ``slots[s][0]`` (a pair's values are (chosen, rejected)):
    ``sequence_item``/``sequence_slot`` (S,); ``reference_logps`` (S,) float64 when every
    item carries cached values; ``sample_index`` (B,) when every item knows its place in the
    data set."""
    import torch

    batch["sequence_item"] = torch.tensor([item for item, _ in slots], dtype=torch.long)
    batch["sequence_slot"] = torch.tensor([slot for _, slot in slots], dtype=torch.long)
    references = [item.reference for item in items]
    if references and all(reference is not None for reference in references):
        batch["reference_logps"] = torch.tensor(
            [references[item][slot] for item, slot in slots], dtype=torch.float64
        )
    indices = [item.index for item in items]
    if indices and all(index is not None for index in indices):
        batch["sample_index"] = torch.tensor(indices, dtype=torch.long)


class PaddedCollator:
    """Collate pairs into the padded layout (chosen rows, then rejected rows)."""

    layout = "padded"

    def __init__(self, pad_token_id: int, extra_columns: Sequence[str] = ()) -> None:
        self.pad_token_id = pad_token_id
        self.extra_columns = tuple(extra_columns)

    def __call__(self, pairs: Sequence[TokenizedPair]) -> dict[str, Any]:
        import torch

        sequences: list[list[int]] = []
        prompt_lengths: list[int] = []
        for completion_of in ("chosen_ids", "rejected_ids"):
            for pair in pairs:
                sequences.append(pair.prompt_ids + getattr(pair, completion_of))
                prompt_lengths.append(len(pair.prompt_ids))
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        completion_mask = torch.zeros((len(sequences), width), dtype=torch.bool)
        for row, (ids, prompt_length) in enumerate(zip(sequences, prompt_lengths, strict=True)):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
            completion_mask[row, prompt_length : len(ids)] = True
        batch: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "completion_mask": completion_mask,
        }
        _common(batch, pairs, self.extra_columns)
        return batch


class PrefixSharedCollator:
    """One row per pair: ``[prompt | chosen | rejected]`` with a prefix-sharing mask."""

    layout = "prefix"

    def __init__(self, pad_token_id: int, extra_columns: Sequence[str] = ()) -> None:
        self.pad_token_id = pad_token_id
        self.extra_columns = tuple(extra_columns)

    def rows(self, pairs: Sequence[TokenizedPair]) -> list[list[int]]:
        """Which pairs (indices into ``pairs``) share each row."""
        return [[index] for index in range(len(pairs))]

    def __call__(self, pairs: Sequence[TokenizedPair]) -> dict[str, Any]:
        batch = build_segment_batch(pairs, self.rows(pairs), self.pad_token_id)
        _common(batch, pairs, self.extra_columns)
        return batch


class PackedCollator(PrefixSharedCollator):
    """Prefix-shared pair segments packed into rows of at most ``pack_tokens`` tokens.

    ``pack_tokens <= 0`` packs into rows as wide as the batch's longest pair: no row grows
    wider than prefix sharing needs, but short pairs share rows instead of padding. A pair
    longer than the budget gets a row of its own.
    """

    layout = "packed"

    def __init__(
        self, pad_token_id: int, extra_columns: Sequence[str] = (), pack_tokens: int = 0
    ) -> None:
        super().__init__(pad_token_id, extra_columns)
        self.pack_tokens = pack_tokens

    def rows(self, pairs: Sequence[TokenizedPair]) -> list[list[int]]:
        return shared_rows([pair_length(pair) for pair in pairs], "packed", self.pack_tokens)


def shared_rows(lengths: Sequence[int], layout: str, pack_tokens: int) -> list[list[int]]:
    """Which items (by index) share each row: one a row (``prefix``), or, ``packed``, packed
    first-fit decreasing into rows of ``pack_tokens`` tokens (at least the longest item)."""
    if layout != "packed":
        return [[index] for index in range(len(lengths))]
    return first_fit_decreasing(lengths, max(pack_tokens, max(lengths)))


def first_fit_decreasing(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Bin-pack item indices by length: longest first, each into the first row with room."""
    order = sorted(range(len(lengths)), key=lambda index: -lengths[index])
    rows: list[list[int]] = []
    room: list[int] = []
    for index in order:
        for row, free in enumerate(room):
            if lengths[index] <= free:
                rows[row].append(index)
                room[row] -= lengths[index]
                break
        else:
            rows.append([index])
            room.append(budget - lengths[index])
    return rows


def build_segment_batch(
    pairs: Sequence[TokenizedPair], rows: Sequence[Sequence[int]], pad_token_id: int
) -> dict[str, Any]:
    """Tensors of the prefix-shared/packed layouts for ``pairs`` placed in ``rows``: a pair is
    a prompt with two responses, chosen (output sequence ``i``) and rejected (``B + i``)."""
    count = len(pairs)
    return build_response_segments(
        [(pair.prompt_ids, [pair.chosen_ids, pair.rejected_ids]) for pair in pairs],
        rows,
        pad_token_id,
        sequence_of=lambda index, response: index + response * count,
        sequence_count=2 * count,
    )


def build_response_segments(
    items: Sequence[tuple[list[int], Sequence[list[int]]]],
    rows: Sequence[Sequence[int]],
    pad_token_id: int,
    sequence_of: Callable[[int, int], int],
    sequence_count: int,
) -> dict[str, Any]:
    """Segments ``[prompt | response 1 | ... | response N]`` of ``items`` (prompt ids and
    response ids) placed in ``rows`` (item indices per row): a prompt trunk with one branch per
    response, forked at the prompt's end (:func:`build_tree_segments`). Response ``j`` of item
    ``i`` is output sequence ``sequence_of(i, j)`` of ``sequence_count``."""
    segments = [
        Segment(
            prompt_ids,
            [
                Branch(len(prompt_ids), response, sequence_of(index, number))
                for number, response in enumerate(responses)
            ],
        )
        for index, (prompt_ids, responses) in enumerate(items)
    ]
    return build_tree_segments(segments, rows, pad_token_id, sequence_count)


@dataclass
class TrunkSpan:
    """Trunk tokens ``start:end`` scored in place, as output sequence ``sequence``."""

    start: int
    end: int
    sequence: int


@dataclass
class Branch:
    """Tokens placed after the trunk that continue it from ``fork`` (they see the trunk before
    ``fork`` and themselves), scored as output sequence ``sequence``."""

    fork: int
    ids: list[int]
    sequence: int


@dataclass
class Segment:
    """One segment of a shared row: a trunk (part 0) and, in scoring order, the spans of it
    that are scored and the branches after it (branch ``k`` is part ``k``, from 1)."""

    trunk_ids: list[int]
    pieces: list[TrunkSpan | Branch]

    @property
    def length(self) -> int:
        return len(self.trunk_ids) + sum(
            len(piece.ids) for piece in self.pieces if isinstance(piece, Branch)
        )


def build_tree_segments(
    segments: Sequence[Segment],
    rows: Sequence[Sequence[int]],
    pad_token_id: int,
    sequence_count: int,
) -> dict[str, Any]:
    """Tensors of the shared-row layouts for ``segments`` placed in ``rows``.

    A branch's tokens get the positions they have in their own sequence (continuing from its
    fork) and are predicted by the hidden state before them: the branch's previous token, or
    the trunk token before its fork for its first one (with a fork at 0 the first token has no
    predecessor, as in the padded layout). ``forks`` (per token) is in the batch only when a
    branch forks before its trunk's end (a per-turn tree); without it every branch sees its
    whole trunk, which then ends where the branches fork (a prompt and its responses).
    """
    import torch

    width = max(sum(segments[index].length for index in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    segment_ids = torch.full(shape, -1, dtype=torch.long)
    parts = torch.zeros(shape, dtype=torch.long)
    forks = torch.full(shape, width, dtype=torch.long)
    forked_early = False
    scored: dict[str, list[int]] = {"rows": [], "positions": [], "targets": [], "index": []}

    def score(row: int, position: int, target: int, sequence: int) -> None:
        scored["rows"].append(row)
        scored["positions"].append(position)
        scored["targets"].append(target)
        scored["index"].append(sequence)

    for row, members in enumerate(rows):
        offset = 0
        for number, index in enumerate(members):
            segment = segments[index]
            trunk_ids = segment.trunk_ids
            trunk = len(trunk_ids)
            input_ids[row, offset : offset + trunk] = torch.tensor(trunk_ids, dtype=torch.long)
            position_ids[row, offset : offset + trunk] = torch.arange(trunk)
            start = offset + trunk
            part = 0
            for piece in segment.pieces:
                if isinstance(piece, TrunkSpan):
                    for j in range(max(piece.start, 1), piece.end):
                        score(row, offset + j - 1, trunk_ids[j], piece.sequence)
                    continue
                part += 1
                ids, fork, length = piece.ids, piece.fork, len(piece.ids)
                input_ids[row, start : start + length] = torch.tensor(ids, dtype=torch.long)
                position_ids[row, start : start + length] = torch.arange(fork, fork + length)
                parts[row, start : start + length] = part
                if fork < trunk:
                    forks[row, start : start + length] = offset + fork
                    forked_early = True
                for j in range(0 if fork else 1, length):
                    score(row, start + j - 1 if j else offset + fork - 1, ids[j], piece.sequence)
                start += length
            segment_ids[row, offset:start] = number
            offset = start
    batch: dict[str, Any] = {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "segment_ids": segment_ids,
        "parts": parts,
        "score_rows": torch.tensor(scored["rows"], dtype=torch.long),
        "score_positions": torch.tensor(scored["positions"], dtype=torch.long),
        "score_targets": torch.tensor(scored["targets"], dtype=torch.long),
        "score_index": torch.tensor(scored["index"], dtype=torch.long),
        "sequence_count": sequence_count,
    }
    if forked_early:
        batch["forks"] = forks
    return batch


def make_collator(
    layout: str, pad_token_id: int, extra_columns: Sequence[str] = (), pack_tokens: int = 0
) -> Any:
    """The collator for a resolved layout name (``padded``, ``prefix`` or ``packed``)."""
    if layout == "prefix":
        return PrefixSharedCollator(pad_token_id, extra_columns)
    if layout == "packed":
        return PackedCollator(pad_token_id, extra_columns, pack_tokens)
    if layout == "padded":
        return PaddedCollator(pad_token_id, extra_columns)
    raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def choose_layout(requested: str, model: Any, longest_row: int | None = None) -> tuple[str, str]:
    """The layout to use for ``requested`` (``auto``, ``padded``, ``prefix``, ``packed``) with
    ``model``, and why a custom-mask layout fell back to padded (empty when it did not)."""
    if requested not in ("auto", *LAYOUTS):
        from prefopt.errors import ConfigError

        raise ConfigError(
            f"data.layout must be one of auto, {', '.join(LAYOUTS)}, got '{requested}'"
        )
    if requested == "padded":
        return "padded", ""
    from prefopt.modeling.attention_masks import custom_mask_support

    supported, reason = custom_mask_support(model, longest_row)
    if not supported:
        return "padded", reason
    return ("packed" if requested == "auto" else requested), ""
