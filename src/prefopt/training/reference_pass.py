"""The separate reference pass of ``reference.mode: cached``: every pair's reference
log-probs, in length order, without gradients, before training (see
:mod:`prefopt.training.reference_cache`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

from prefopt.data.collate import pair_length
from prefopt.data.tokenize import TokenizedPair


def compute_reference_logps(
    pairs: Sequence[TokenizedPair],
    logps_fn: Callable[[dict[str, Any]], Any],
    collator: Callable[[Sequence[TokenizedPair]], dict[str, Any]],
    batch_size: int,
    device: Any,
    bf16: bool = False,
    progress: bool = False,
    label: str = "reference log-probs",
) -> Any:
    """``(N, 2)`` float64 (chosen, rejected) log-probs of ``pairs`` under ``logps_fn``.

    Pairs run in length order (less padding) without gradients, under bf16 autocast when the
    training does, so cached values match what an online reference would give.
    """
    import numpy as np
    import torch

    device = torch.device(device)
    order = sorted(range(len(pairs)), key=lambda index: pair_length(pairs[index]))
    values = np.zeros((len(pairs), 2), dtype=np.float64)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    bar = _Progress(len(pairs), label) if progress else None
    try:
        for start in range(0, len(order), batch_size):
            members = order[start : start + batch_size]
            batch = _to_device(collator([_without_reference(pairs[i]) for i in members]), device)
            with torch.no_grad(), autocast:
                logps = logps_fn(batch).detach().to("cpu", torch.float64).numpy()
            half = len(members)
            values[members, 0] = logps[:half]
            values[members, 1] = logps[half:]
            if bar is not None:
                bar.advance(half)
    finally:
        if bar is not None:
            bar.close()
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
