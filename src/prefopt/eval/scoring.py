"""Score preference pairs under a model: summed completion log-probs, batched, no gradients.

These are the same numbers training uses (same tokenization, EOS included, same layout), so
an offline margin equals the margin the loss saw. The first batch goes through the same
self-check as a training run (:mod:`prefopt.modeling.head_check`): a model whose lean LM-head
path disagrees with its own forward is scored with full logits, with one notice.
"""

from __future__ import annotations

from collections.abc import Sequence
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

    from prefopt.modeling.sdpa_gqa import native_gqa_on_cpu

    collator = PaddedCollator(pad_token_id)
    device = next(model.parameters()).device
    chosen, rejected = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), native_gqa_on_cpu(device.type):
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start : start + batch_size]
                batch = collator(chunk)
                inputs = {k: v.to(device) for k, v in batch.items() if k != "extras"}
                if start == 0:  # two pairs: the full logits of a whole batch may not fit
                    probe = collator(chunk[:2])
                    self_check([model], {k: v for k, v in probe.items() if k != "extras"})
                logps, _ = sequence_logps(model, inputs)
                half = len(chunk)
                chosen.append(logps[:half].float().cpu())
                rejected.append(logps[half:].float().cpu())
                if on_batch is not None:
                    on_batch(len(chunk))
    finally:
        if was_training:
            model.train()
    return torch.cat(chosen), torch.cat(rejected)
