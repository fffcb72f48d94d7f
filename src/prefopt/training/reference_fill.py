"""Fill the reference cache from the first epoch's own online reference forward.

A separate reference pass scores the pairs in other batches than training does, and under bf16
autocast a different batch rounds differently: the reference log-probs then differ from the
policy's by a few 1e-3 at step 0, and the first loss is not ln 2 (0.6938, margins −0.0014, on
16 fact pairs with SmolLM2-135M-Instruct: ``benchmarks/step0_margin.py``). So with
``reference.mode: auto`` and no cache entry yet, the first epoch computes the reference online,
in the very batches the policy sees, and this recorder keeps each sample's values (a pair's,
a list's, a conversation's) by its ``sample_index``. At the end of an epoch, once every sample
has been seen (on any rank), the values go into the cache entry and onto the samples, so later
epochs, resumes, later runs and every job of a sweep read them instead of running the
reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Values = dict[int, tuple[float, ...]]


class ReferenceFill:
    """Per-sample reference log-probs recorded during training, for a data set whose sample
    ``i`` has ``counts[i]`` values (2 for a pair: :mod:`prefopt.data.samples`);
    ``on_complete(values)`` receives them, every sample's values one after the other (a float64
    vector), once every sample is in."""

    def __init__(self, counts: list[int], on_complete: Callable[[Any], None]) -> None:
        self.counts = counts
        self.values: Values = {}
        self._on_complete = on_complete

    @property
    def count(self) -> int:
        return len(self.counts)

    def record(self, inputs: dict[str, Any], reference_logps: Any) -> None:
        """Keep the reference log-probs of one batch (one per output sequence), placed by the
        batch's ``sample_index``, ``sequence_item`` and ``sequence_slot``."""
        samples = inputs["sample_index"].tolist()
        logps = reference_logps.detach().to("cpu").double().tolist()
        slots: dict[int, list[float]] = {}
        items = inputs["sequence_item"].tolist()
        for value, item, slot in zip(logps, items, inputs["sequence_slot"].tolist(), strict=True):
            index = samples[item]
            slots.setdefault(index, [0.0] * self.counts[index])[slot] = value
        self.values.update((index, tuple(values)) for index, values in slots.items())

    def complete(self, gather: Callable[[Values], list[Values]]) -> bool:
        """Merge every process's values (``gather`` returns them all, this one's included);
        when they cover the data set, hand them on and return ``True``."""
        import numpy as np

        merged: Values = {}
        for part in gather(self.values):
            merged.update(part)
        if len(merged) < self.count or any(i not in merged for i in range(self.count)):
            return False
        values = np.array(
            [value for index in range(self.count) for value in merged[index]], dtype=np.float64
        )
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
