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
(B,) and, when every pair has cached reference log-probs, ``reference_logps`` (2B,) float64;
when every pair knows its place in the data set, ``pair_index`` (B,).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    references = [pair.reference for pair in pairs]
    if references and all(reference is not None for reference in references):
        chosen = [reference[0] for reference in references if reference is not None]
        rejected = [reference[1] for reference in references if reference is not None]
        batch["reference_logps"] = torch.tensor(chosen + rejected, dtype=torch.float64)
    indices = [pair.index for pair in pairs]
    if indices and all(index is not None for index in indices):
        batch["pair_index"] = torch.tensor(indices, dtype=torch.long)


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
        lengths = [pair_length(pair) for pair in pairs]
        budget = max(self.pack_tokens, max(lengths))
        return first_fit_decreasing(lengths, budget)


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
    response ids) placed in ``rows`` (item indices per row).

    Response ``j`` (0-based) is part ``j + 1``; its tokens continue the prompt's positions, as
    in its own ``prompt + response`` sequence, and the mask (part 0 seen by all, a response
    part by itself only) hides the other responses. Response ``j`` of item ``i`` is output
    sequence ``sequence_of(i, j)`` of ``sequence_count``.
    """
    import torch

    width = max(sum(segment_length(items[index]) for index in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    segment_ids = torch.full(shape, -1, dtype=torch.long)
    parts = torch.zeros(shape, dtype=torch.long)
    score_rows: list[int] = []
    score_positions: list[int] = []
    score_targets: list[int] = []
    score_index: list[int] = []
    for row, members in enumerate(rows):
        offset = 0
        for segment, index in enumerate(members):
            prompt_ids, responses = items[index]
            prompt = len(prompt_ids)
            input_ids[row, offset : offset + prompt] = torch.tensor(prompt_ids, dtype=torch.long)
            position_ids[row, offset : offset + prompt] = torch.arange(prompt)
            start = offset + prompt
            # Token j of a response is predicted by the hidden state before it: the response's
            # previous token, or the prompt's last one for its first token. With an empty prompt
            # the first token has no predecessor (as in the padded layout).
            first = 0 if prompt else 1
            for number, response in enumerate(responses):
                length = len(response)
                input_ids[row, start : start + length] = torch.tensor(response, dtype=torch.long)
                position_ids[row, start : start + length] = torch.arange(prompt, prompt + length)
                parts[row, start : start + length] = number + 1
                for j in range(first, length):
                    score_positions.append(start + j - 1 if j else offset + prompt - 1)
                    score_targets.append(response[j])
                score_index.extend([sequence_of(index, number)] * (length - first))
                score_rows.extend([row] * (length - first))
                start += length
            segment_ids[row, offset:start] = segment
            offset = start
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "segment_ids": segment_ids,
        "parts": parts,
        "score_rows": torch.tensor(score_rows, dtype=torch.long),
        "score_positions": torch.tensor(score_positions, dtype=torch.long),
        "score_targets": torch.tensor(score_targets, dtype=torch.long),
        "score_index": torch.tensor(score_index, dtype=torch.long),
        "sequence_count": sequence_count,
    }


def segment_length(item: tuple[list[int], Sequence[list[int]]]) -> int:
    """Tokens of a prompt and all its responses in one segment."""
    prompt_ids, responses = item
    return len(prompt_ids) + sum(len(response) for response in responses)


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
