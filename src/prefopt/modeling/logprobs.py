"""Per-sequence log-probabilities of completion tokens.

For a row with token ids ``x`` and completion positions ``C`` (token indices whose log-prob
counts), the sequence log-prob is ``Σ_{t∈C} log p(x_t | x_<t)``: the logits at position
``t − 1`` predict token ``t``. Log-softmax is taken in fp32 and only at completion positions, so
memory for it grows with the number of completion tokens, not with rows × width × vocabulary.
The per-sequence sums are returned in fp64: a sum of hundreds of token log-probs loses its
last digits in fp32, and the (N,) vectors are tiny.
"""

from __future__ import annotations

from typing import Any


def gather_completion_logps(logits: Any, input_ids: Any, completion_mask: Any) -> tuple[Any, Any]:
    """Sum of completion-token log-probs per row, and the completion lengths.

    ``logits``: (N, T, V); ``input_ids``: (N, T); ``completion_mask``: (N, T) bool marking the
    tokens to score. Returns ``(logps (N,), lengths (N,))``.
    """
    import torch

    target_mask = completion_mask[:, 1:]
    rows, positions = target_mask.nonzero(as_tuple=True)
    selected = logits[:, :-1][rows, positions].float()  # (K, V) predicting tokens t = pos + 1
    targets = input_ids[:, 1:][rows, positions]
    token_logps = torch.log_softmax(selected, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    # Sums of many log-probs reach hundreds, where fp32 spacing is ~1e-5: accumulate in fp64.
    logps = torch.zeros(input_ids.shape[0], dtype=torch.float64, device=token_logps.device)
    logps = logps.index_add(0, rows, token_logps.double())
    lengths = target_mask.sum(dim=1)
    return logps, lengths


def sequence_logps(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Run ``model`` on a padded batch and return per-row completion log-probs and lengths."""
    outputs = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    )
    return gather_completion_logps(outputs.logits, batch["input_ids"], batch["completion_mask"])
