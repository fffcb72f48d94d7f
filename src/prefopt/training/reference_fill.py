"""Fill the reference cache from the first epoch's own online reference forward.

A separate reference pass scores the pairs in other batches than training does, and under bf16
autocast a different batch rounds differently: the reference log-probs then differ from the
policy's by a few 1e-3 at step 0, and the first loss is not ln 2 (0.6938, margins −0.0014, on
16 fact pairs with SmolLM2-135M-Instruct: ``benchmarks/step0_margin.py``). So with
``reference.mode: auto`` and no cache entry yet, the first epoch computes the reference online,
in the very batches the policy sees, and this recorder keeps each pair's values by its
``pair_index``. At the end of an epoch, once every pair has been seen (on any rank), the values
go into the cache entry and onto the pairs, so later epochs, resumes, later runs and every job
of a sweep read them instead of running the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Values = dict[int, tuple[float, float]]


class ReferenceFill:
    """Per-pair reference log-probs recorded during training, for a data set of ``count``
    pairs; ``on_complete(values)`` receives the ``(count, 2)`` array once every pair is in."""

    def __init__(self, count: int, on_complete: Callable[[Any], None]) -> None:
        self.count = count
        self.values: Values = {}
        self._on_complete = on_complete

    def record(self, pair_index: Any, reference_logps: Any) -> None:
        """Keep the reference log-probs of one batch: ``pair_index`` (B,), ``reference_logps``
        (2B,) with the chosen sequences first, as the trainer computes them."""
        half = int(pair_index.shape[0])
        logps = reference_logps.detach().to("cpu").double().tolist()
        for position, index in enumerate(pair_index.tolist()):
            self.values[int(index)] = (logps[position], logps[half + position])

    def complete(self, gather: Callable[[Values], list[Values]]) -> bool:
        """Merge every process's values (``gather`` returns them all, this one's included);
        when they cover the data set, hand them on and return ``True``."""
        import numpy as np

        merged: Values = {}
        for part in gather(self.values):
            merged.update(part)
        if len(merged) < self.count or any(i not in merged for i in range(self.count)):
            return False
        values = np.array([merged[index] for index in range(self.count)], dtype=np.float64)
        self._on_complete(values)
        self.values = {}
        return True


def gather_objects(value: Any) -> list[Any]:
    """Every process's ``value`` (a list of one on a single process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return [part for part in gathered if part is not None]


def every_process(flag: bool) -> bool:
    """Whether ``flag`` holds on every process: a decision each process takes from its own
    files (a cache entry on a machine-local disk) must be the same everywhere, or the
    processes enter different collectives and wait for each other forever."""
    return all(gather_objects(bool(flag)))
