"""The separate reference pass of ``reference.mode: cached``: every sample's reference
log-probs, without gradients, in length order (see :mod:`prefopt.training.reference_cache`).

The pass runs when training begins, after the model has been prepared for its engine (DDP,
FSDP2, DeepSpeed), on every process at once: the samples (pairs, lists or conversations) in
length order are cut into batches, batch ``k`` goes to process ``k mod world size``, and the
processes' values are gathered. Each batch holds the same samples as on one process, so the
values are the same, and no process waits at a barrier while another scores the whole data
set. Under FSDP and ZeRO-3 a forward is
a collective, so a process with one batch fewer scores a stand-in batch whose result it drops:
every process runs the same number of forwards.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

from prefopt.data.samples import entry_shape, sample_length, without_reference

Values = dict[int, tuple[float, ...]]


def batches_in_length_order(samples: Sequence[Any], batch_size: int) -> list[list[int]]:
    """The pass's batches: indices of ``samples`` in length order (less padding), in chunks."""
    order = sorted(range(len(samples)), key=lambda index: sample_length(samples[index]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def score_shard(
    samples: Sequence[Any],
    logps_fn: Callable[[dict[str, Any]], Any],
    collator: Callable[[Sequence[Any]], dict[str, Any]],
    batch_size: int,
    device: Any,
    *,
    rank: int = 0,
    world_size: int = 1,
    bf16: bool = False,
    progress: bool = False,
    label: str = "reference log-probs",
) -> Values:
    """This process's share of the pass: ``{sample index: values}`` (a pair's are (chosen,
    rejected): :mod:`prefopt.data.samples`) for the batches ``rank, rank + world_size, ...``,
    under bf16 autocast when the training uses it (so cached values match what an online
    reference would give)."""
    import torch

    device = torch.device(device)
    batches = batches_in_length_order(samples, batch_size)
    mine = batches[rank::world_size]
    rounds = -(-len(batches) // world_size)  # every process runs as many forwards
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    bar = _Progress(len(samples), label) if progress else None
    values: Values = {}
    try:
        for round_index in range(rounds):
            members = mine[round_index] if round_index < len(mine) else batches[0]
            batch = collator([without_reference(samples[i]) for i in members])
            slots = list(zip(batch["sequence_item"].tolist(), batch["sequence_slot"].tolist(),
                             strict=True))  # fmt: skip
            with torch.no_grad(), autocast:
                logps = logps_fn(_to_device(batch, device)).detach().to("cpu", torch.float64)
            if round_index >= len(mine):
                continue  # the stand-in batch of a process with one batch fewer
            scored: dict[int, dict[int, float]] = {}
            for value, (item, slot) in zip(logps.tolist(), slots, strict=True):
                scored.setdefault(members[item], {})[slot] = value
            for index, by_slot in scored.items():
                values[index] = tuple(by_slot[slot] for slot in range(len(by_slot)))
            if bar is not None:
                bar.advance(len(members) * world_size)
    finally:
        if bar is not None:
            bar.close()
    return values


def compute_reference_logps(
    samples: Sequence[Any],
    logps_fn: Callable[[dict[str, Any]], Any],
    collator: Callable[[Sequence[Any]], dict[str, Any]],
    batch_size: int,
    device: Any,
    bf16: bool = False,
    progress: bool = False,
    label: str = "reference log-probs",
    gather: Callable[[Values], list[Values]] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Any:
    """The float64 reference log-probs of ``samples`` under ``logps_fn``, shaped as their cache
    entry (``(N, 2)`` (chosen, rejected) for pairs, every sample's values in a row otherwise:
    :func:`prefopt.data.samples.entry_shape`): this process's :func:`score_shard`, merged with
    the others' by ``gather`` (every process's values, this one's included; one process needs
    none)."""
    import numpy as np

    shard = score_shard(
        samples, logps_fn, collator, batch_size, device,
        rank=rank, world_size=world_size, bf16=bf16, progress=progress, label=label,
    )  # fmt: skip
    merged: Values = {}
    for part in gather(shard) if gather is not None else [shard]:
        merged.update(part)
    flat = [value for index in range(len(samples)) for value in merged[index]]
    return np.array(flat, dtype=np.float64).reshape(entry_shape(samples))


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
