"""Per-pair values gathered across data-parallel processes that hold different numbers of pairs.

A batch of pairs has the same number of rows on every process, so ``accelerator.gather`` can
concatenate them. A batch of lists or conversations does not: each process takes the same
number of lists (the sampler's unit), but a list of four gives six pairs under
``lists.pairs=all`` and a conversation as many pairs as it has preference turns. Collectives
need equal shapes, so each tensor is padded to the largest count, gathered, and cut back to
each process's own rows (:func:`gather_uneven`).

At the end of an evaluation the sampler repeats samples so that every process gets a full
batch; ``accelerate``'s ``gather_for_metrics`` drops the repeated rows by counting rows as
samples, which pairs of lists are not. :class:`BatchPairGather` drops them by sample instead:
the repeated samples are the last of the global batch, in process order.
"""

from __future__ import annotations

from typing import Any

import torch


def _sizes(accelerator: Any, count: int, device: Any) -> list[int]:
    return accelerator.gather(torch.tensor([count], device=device)).tolist()


def _gather_padded(accelerator: Any, tensor: Any, sizes: list[int]) -> Any:
    """``tensor`` (n, ...) from every process, padded to ``max(sizes)`` for the collective and
    cut back, concatenated in process order."""
    width = max(sizes)
    missing = width - tensor.shape[0]
    if missing:
        tensor = torch.cat([tensor, tensor.new_zeros((missing, *tensor.shape[1:]))])
    gathered = accelerator.gather(tensor.contiguous())
    return torch.cat([gathered[rank * width : rank * width + size] for rank, size in
                      enumerate(sizes)])  # fmt: skip


def gather_uneven(accelerator: Any, tensor: Any) -> Any:
    """Concatenate ``tensor`` (n, ...) across processes in rank order, whatever each process's
    ``n``; on one process ``tensor`` itself."""
    if accelerator.num_processes == 1:
        return tensor
    return _gather_padded(accelerator, tensor, _sizes(accelerator, tensor.shape[0], tensor.device))


def local_sizes(accelerator: Any, count: int) -> list[int]:
    """Every process's ``count``, in rank order."""
    if accelerator.num_processes == 1:
        return [count]
    return _sizes(accelerator, count, accelerator.device)


class BatchPairGather:
    """Gathers one batch's per-pair values for the logged metrics.

    ``pair_sample`` (B,) says which of this process's ``samples`` samples (lists or
    conversations) each pair comes from. The process counts and, at the end of an evaluation
    with repeated samples, which gathered pairs to keep are settled once per batch; each call
    then costs one collective. In training (``evaluation`` false) nothing is left out: the
    repeated samples of the last batch are trained on, and with gradient accumulation the
    whole last window is fetched before its first step, so the end-of-data flag would also
    fall on its earlier batches, which repeat nothing."""

    def __init__(
        self, accelerator: Any, pair_sample: Any, samples: int, evaluation: bool = True
    ) -> None:
        self.accelerator = accelerator
        self.keep: Any = None
        if accelerator.num_processes == 1:
            return
        self.sizes = _sizes(accelerator, pair_sample.shape[0], pair_sample.device)
        state = accelerator.gradient_state
        if evaluation and state.end_of_dataloader and state.remainder > 0:
            first = accelerator.process_index * samples  # this process's first global sample
            global_sample = _gather_padded(accelerator, pair_sample + first, self.sizes)
            self.keep = global_sample < state.remainder

    def __call__(self, tensor: Any) -> Any:
        if self.accelerator.num_processes == 1:
            return tensor
        gathered = _gather_padded(self.accelerator, tensor, self.sizes)
        return gathered if self.keep is None else gathered[self.keep.to(gathered.device)]
