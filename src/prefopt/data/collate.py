"""Collation of tokenized pairs into model inputs; the layout is a seam.

``PaddedCollator`` builds the plain layout: 2B right-padded rows, the B chosen sequences
``prompt + chosen`` first and then the B rejected ones ``prompt + rejected``. ``completion_mask``
marks the completion tokens whose log-probs are summed; per-pair ``extras`` travel as float
tensors of shape (B,).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefopt.data.tokenize import TokenizedPair


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
        for row, (ids, prompt_length) in enumerate(zip(sequences, prompt_lengths)):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
            completion_mask[row, prompt_length : len(ids)] = True
        batch: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "completion_mask": completion_mask,
        }
        batch["extras"] = {
            name: torch.tensor([pair.extras[name] for pair in pairs], dtype=torch.float32)
            for name in self.extra_columns
        }
        return batch
