"""Score preference pairs under a model: summed completion log-probs, batched, no gradients.

These are the same numbers training uses (same tokenization, EOS included, same layout), so
an offline margin equals the margin the loss saw. The first batch goes through the same
self-check as a training run (:mod:`prefopt.modeling.head_check`): a model whose lean LM-head
path disagrees with its own forward is scored with full logits, with one notice.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prefopt.data.collate import PaddedCollator
from prefopt.data.tokenize import TokenizedPair
from prefopt.modeling.head_check import self_check
from prefopt.modeling.logprobs import sequence_logps


def pair_logps(
    model: Any,
    pairs: Sequence[TokenizedPair],
    pad_token_id: int,
    batch_size: int = 16,
    on_batch: Any = None,
) -> tuple[Any, Any]:
    """``(chosen_logps, rejected_logps)``, each a float tensor of shape (N,), in eval mode."""
    import torch

    chosen, rejected = [], []
    collator = PaddedCollator(pad_token_id)
    for chunk, _, logps in scored_batches(model, pairs, collator, batch_size, on_batch):
        chosen.append(logps[: len(chunk)].float().cpu())
        rejected.append(logps[len(chunk) :].float().cpu())
    return torch.cat(chosen), torch.cat(rejected)


def scored_batches(
    model: Any, items: Sequence[Any], collator: Any, batch_size: int = 16, on_batch: Any = None
) -> Iterator[tuple[Sequence[Any], dict[str, Any], Any]]:
    """``(chunk, batch, logps)`` for ``items`` in chunks of ``batch_size``: each chunk collated
    and scored on the model's device, in eval mode, without gradients (the model's mode is
    restored after). The first chunk's first two items go through the self-check first."""
    import torch

    from prefopt.modeling.sdpa_gqa import native_gqa_on_cpu

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), native_gqa_on_cpu(device.type):
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                batch = collator(chunk)
                inputs = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
                if "sequence_count" in batch:
                    inputs["sequence_count"] = batch["sequence_count"]
                if start == 0:  # two items: the full logits of a whole batch may not fit
                    probe = collator(chunk[:2])
                    self_check([model], {k: v for k, v in probe.items() if k != "extras"})
                logps, _ = sequence_logps(model, inputs)
                yield chunk, batch, logps
                if on_batch is not None:
                    on_batch(len(chunk))
    finally:
        if was_training:
            model.train()
