"""What the reference cache needs to know of a training sample, whatever its kind: a pair
(:class:`~prefopt.data.tokenize.TokenizedPair`), a list of ranked responses
(:class:`~prefopt.data.list_tokenize.TokenizedList`) or a per-turn conversation
(:class:`~prefopt.data.turns.TokenizedTurns`).

:class:`SampleDataset` serves samples of one kind to a trainer.

A sample's reference *values* are the summed log-probs of its scored sequences, in a fixed
order: a pair's chosen then rejected completion, a list's responses, a conversation's chosen
answers turn by turn and then its rejected ones. The collators say which value each output
sequence of a batch is (:func:`prefopt.data.collate.add_sequence_columns`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from array import array
from collections.abc import Sequence
from typing import Any

from prefopt.data.list_tokenize import TokenizedList
from prefopt.data.prep_cache import pairs_fingerprint
from prefopt.data.tokenize import TokenizedPair
from prefopt.data.turns import TokenizedTurns


def value_count(sample: Any) -> int:
    """How many reference values ``sample`` has (its scored sequences)."""
    if isinstance(sample, TokenizedList):
        return len(sample.response_ids)
    if isinstance(sample, TokenizedTurns):
        return 2 * len(sample.turns)
    return 2


def sample_length(sample: Any) -> int:
    """Tokens ``sample`` occupies in one row (the reference pass batches by it)."""
    from prefopt.data.collate import pair_length
    from prefopt.data.list_collate import list_length
    from prefopt.data.turns import turns_length

    if isinstance(sample, TokenizedList):
        return list_length(sample)
    if isinstance(sample, TokenizedTurns):
        return turns_length(sample)
    return pair_length(sample)


def _token_parts(sample: Any) -> list[list[int]]:
    if isinstance(sample, TokenizedList):
        return [sample.prompt_ids, *sample.response_ids]
    if isinstance(sample, TokenizedTurns):
        spans = [value for turn in sample.turns for value in (turn.start, turn.end)]
        return [sample.trunk_ids, spans, *(turn.rejected_ids for turn in sample.turns)]
    return [sample.prompt_ids, sample.chosen_ids, sample.rejected_ids]


def samples_fingerprint(samples: Sequence[Any]) -> str:
    """sha256 of the token ids of ``samples`` (in order): what their reference log-probs
    depend on. Pairs keep the fingerprint they always had, so existing cache entries hold."""
    if all(isinstance(sample, TokenizedPair) for sample in samples):
        return pairs_fingerprint(samples)
    hasher = hashlib.sha256()
    for sample in samples:
        parts = _token_parts(sample)
        hasher.update(type(sample).__name__.encode())
        hasher.update(array("i", [len(part) for part in parts]).tobytes())
        for part in parts:
            hasher.update(array("i", part).tobytes())
    return hasher.hexdigest()


def without_reference(sample: Any) -> Any:
    """``sample`` with no cached values (so a batch of it asks the reference)."""
    return sample if sample.reference is None else dataclasses.replace(sample, reference=None)


def entry_shape(samples: Sequence[Any]) -> tuple[int, ...]:
    """The shape of a cache entry for ``samples``: ``(N, 2)`` for pairs (as always), else the
    values of every sample one after the other."""
    if all(isinstance(sample, TokenizedPair) for sample in samples):
        return (len(samples), 2)
    return (sum(value_count(sample) for sample in samples),)


class SampleDataset:
    """Tokenized samples of one kind (``kind``: ``pairs``, ``lists`` or ``conversations``) as a
    map-style dataset; the collator builds the tensors."""

    kind = "pairs"

    def __init__(self, samples: list[Any]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        return self.samples[index]

    @property
    def lengths(self) -> list[int]:
        """Tokens per sample in one row, for length-grouped sampling and packing."""
        return [sample_length(sample) for sample in self.samples]
