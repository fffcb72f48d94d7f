"""The separate reference pass of ``reference.mode: cached``: every pair's reference
log-probs, without gradients, in length order (see :mod:`prefopt.training.reference_cache`).

The pass runs when training begins, after the model has been prepared for its engine (DDP,
FSDP2, DeepSpeed), on every process at once: the pairs in length order are cut into batches,
batch ``k`` goes to process ``k mod world size``, and the processes' values are gathered.
Each batch holds the same pairs as on one process, so the values are the same, and no process
waits at a barrier while another scores the whole data set. Under FSDP and ZeRO-3 a forward is
a collective, so a process with one batch fewer scores a stand-in batch whose result it drops:
every process runs the same number of forwards.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

from prefopt.data.collate import pair_length
from prefopt.data.tokenize import TokenizedPair

Values = dict[int, tuple[float, float]]


def batches_in_length_order(pairs: Sequence[TokenizedPair], batch_size: int) -> list[list[int]]:
    """The pass's batches: indices of ``pairs`` in length order (less padding), in chunks."""
    order = sorted(range(len(pairs)), key=lambda index: pair_length(pairs[index]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def score_shard(
    pairs: Sequence[TokenizedPair],
    logps_fn: Callable[[dict[str, Any]], Any],
    collator: Callable[[Sequence[TokenizedPair]], dict[str, Any]],
    batch_size: int,
    device: Any,
    *,
    rank: int = 0,
    world_size: int = 1,
    bf16: bool = False,
    progress: bool = False,
    label: str = "reference log-probs",
) -> Values:
    """This process's share of the pass: ``{pair index: (chosen, rejected)}`` for the batches
    ``rank, rank + world_size, ...``, under bf16 autocast when the training uses it (so cached
    values match what an online reference would give)."""
    import torch

    device = torch.device(device)
    batches = batches_in_length_order(pairs, batch_size)
    mine = batches[rank::world_size]
    rounds = -(-len(batches) // world_size)  # every process runs as many forwards
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    bar = _Progress(len(pairs), label) if progress else None
    values: Values = {}
    try:
        for round_index in range(rounds):
            members = mine[round_index] if round_index < len(mine) else batches[0]
            batch = _to_device(collator([_without_reference(pairs[i]) for i in members]), device)
            with torch.no_grad(), autocast:
                logps = logps_fn(batch).detach().to("cpu", torch.float64).tolist()
            if round_index >= len(mine):
                continue  # the stand-in batch of a process with one batch fewer
            half = len(members)
            for position, index in enumerate(members):
                values[index] = (logps[position], logps[half + position])
            if bar is not None:
                bar.advance(half * world_size)
    finally:
        if bar is not None:
            bar.close()
    return values


def compute_reference_logps(
    pairs: Sequence[TokenizedPair],
    logps_fn: Callable[[dict[str, Any]], Any],
    collator: Callable[[Sequence[TokenizedPair]], dict[str, Any]],
    batch_size: int,
    device: Any,
    bf16: bool = False,
    progress: bool = False,
    label: str = "reference log-probs",
    gather: Callable[[Values], list[Values]] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Any:
    """``(N, 2)`` float64 (chosen, rejected) log-probs of ``pairs`` under ``logps_fn``: this
    process's :func:`score_shard`, merged with the others' by ``gather`` (every process's
    values, this one's included; one process needs none)."""
    import numpy as np

    shard = score_shard(
        pairs, logps_fn, collator, batch_size, device,
        rank=rank, world_size=world_size, bf16=bf16, progress=progress, label=label,
    )  # fmt: skip
    merged: Values = {}
    for part in gather(shard) if gather is not None else [shard]:
        merged.update(part)
    values = np.zeros((len(pairs), 2), dtype=np.float64)
    for index, (chosen, rejected) in merged.items():
        values[index] = (chosen, rejected)
    return values


def _without_reference(pair: TokenizedPair) -> TokenizedPair:
    if pair.reference is None:
        return pair
    return TokenizedPair(pair.prompt_ids, pair.chosen_ids, pair.rejected_ids, pair.extras)


def _to_device(batch: Any, device: Any) -> Any:
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    return batch.to(device) if hasattr(batch, "to") else batch


class _Progress:
    """A rich progress bar on a terminal; nothing otherwise (a summary line is logged)."""

    def __init__(self, total: int, label: str) -> None:
        self._bar: Any = None
        if sys.stderr.isatty():
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._bar.start()
            self._task = self._bar.add_task(label, total=total)

    def advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
