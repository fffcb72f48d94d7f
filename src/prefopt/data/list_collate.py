"""Collation of tokenized lists (a prompt and N responses) into model inputs.

The layouts are the pairs' (:mod:`prefopt.data.collate`), generalised to N responses:

- ``padded``: one right-padded row ``prompt + response`` per response;
- ``prefix``: one row per list, ``[prompt | response 1 | ... | response N]``: the prompt runs
  once, every response attends to the prompt and to itself only, with the positions it would
  have in its own sequence;
- ``packed``: such list segments packed several to a row up to a token budget.

Output sequences are numbered list by list: response ``j`` of list ``i`` is sequence
``list_offsets[i] + j``. Besides the layout's tensors a batch carries ``list_offsets`` (L + 1,),
``list_ranks`` (S,) (each response's rank in its list among the distinct quality values, 0 the
best, ties sharing one: integers, so no float cast of the batch can merge or split a tie), the
pairs of ``pairing`` as ``pair_better``/``pair_worse`` (P,) sequence indices with their list
``pair_sample`` (P,) and score gaps ``pair_gap`` (P,) (computed here from the exact values),
``samples`` (the number of lists, L, for gathering pairs across processes),
``flags`` (S,) when every list has hallucination flags, and the reference cache's columns
(:func:`prefopt.data.collate.add_sequence_columns`; a list's values are its responses').
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate
from typing import Any

from prefopt.data.collate import (
    LAYOUTS,
    add_sequence_columns,
    build_response_segments,
    shared_rows,
)
from prefopt.data.list_tokenize import TokenizedList
from prefopt.data.lists import dense_ranks, pairs_of


def list_length(item: TokenizedList, layout: str = "prefix") -> int:
    """Tokens a list occupies in ``layout`` (``padded``: its longest row)."""
    if layout == "padded":
        return len(item.prompt_ids) + max(len(ids) for ids in item.response_ids)
    return len(item.prompt_ids) + sum(len(ids) for ids in item.response_ids)


class ListCollator:
    """Collate lists into ``layout`` (``padded``, ``prefix`` or ``packed``)."""

    def __init__(
        self, layout: str, pad_token_id: int, pack_tokens: int = 0, pairing: str = "best-worst"
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
        self.layout = layout
        self.pad_token_id = pad_token_id
        self.pack_tokens = pack_tokens
        self.pairing = pairing

    def rows(self, lists: Sequence[TokenizedList]) -> list[list[int]]:
        """Which lists (indices into ``lists``) share each row (prefix and packed)."""
        return shared_rows([list_length(item) for item in lists], self.layout, self.pack_tokens)

    def __call__(self, lists: Sequence[TokenizedList]) -> dict[str, Any]:
        import torch

        offsets = [0, *accumulate(len(item.response_ids) for item in lists)]
        if self.layout == "padded":
            batch = self._padded(lists)
        else:
            batch = build_response_segments(
                [(item.prompt_ids, item.response_ids) for item in lists],
                self.rows(lists),
                self.pad_token_id,
                sequence_of=lambda index, response: offsets[index] + response,
                sequence_count=offsets[-1],
            )
        batch["list_offsets"] = torch.tensor(offsets, dtype=torch.long)
        batch["list_ranks"] = torch.tensor(
            [rank for item in lists for rank in dense_ranks(item.quality)], dtype=torch.long
        )
        better, worse, owner, gap = [], [], [], []
        for number, (item, start) in enumerate(zip(lists, offsets, strict=False)):
            for a, b in pairs_of(item.quality, self.pairing):
                better.append(start + a)
                worse.append(start + b)
                owner.append(number)
                gap.append(item.quality[a] - item.quality[b])
        batch["pair_better"] = torch.tensor(better, dtype=torch.long)
        batch["pair_worse"] = torch.tensor(worse, dtype=torch.long)
        batch["pair_sample"] = torch.tensor(owner, dtype=torch.long)
        batch["samples"] = torch.tensor(len(lists))
        batch["pair_gap"] = torch.tensor(gap, dtype=torch.float32)
        if lists and all(item.flags is not None for item in lists):
            batch["flags"] = torch.tensor(
                [flag for item in lists for flag in item.flags or ()], dtype=torch.float32
            )
        slots = [
            (number, k) for number, item in enumerate(lists) for k in range(len(item.response_ids))
        ]
        add_sequence_columns(batch, lists, slots)
        return batch

    def _padded(self, lists: Sequence[TokenizedList]) -> dict[str, Any]:
        import torch

        sequences = [
            (item.prompt_ids + response, len(item.prompt_ids))
            for item in lists
            for response in item.response_ids
        ]
        width = max(len(ids) for ids, _ in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        completion_mask = torch.zeros((len(sequences), width), dtype=torch.bool)
        for row, (ids, prompt) in enumerate(sequences):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
            completion_mask[row, prompt : len(ids)] = True
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "completion_mask": completion_mask,
        }
