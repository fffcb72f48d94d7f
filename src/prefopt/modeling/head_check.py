"""The first-batch self-check: does the lean LM-head path give the model's own log-probs?

The lean path (:mod:`prefopt.modeling.logprobs`) applies the LM head, and the logit transform
the config announces, to the scored positions only. An architecture that does something more
after its head, announced by no config field prefopt knows, would get wrong log-probs and a
wrong loss, silently. So before training, a few pairs of the first batch are scored both ways,
on the same rows (same layout, same attention): the lean path, and the model's own forward
with its full logits. The gap is measured per token::

    gap = max over sequences |lean − full| / tokens        (nats per token)

and compared with a tolerance for the compute dtype: ``1e-3`` in fp32 (the two paths agree to
~1e-6 there), ``5e-2`` in bf16/fp16 (the model's own path rounds its logits and its transform
to 8 bits of mantissa; a wrong transform is off by far more). A gap beyond it switches the model
to the full-logits path (:func:`self_check`, the one place training and ``prefopt eval`` call;
:func:`prefopt.modeling.logprobs.use_full_logits`): the numbers are then the model's own, at
the memory cost of full logits, and one notice says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from prefopt.modeling.logprobs import lean_path_parts, sequence_logps, unwrap, use_full_logits

log = logging.getLogger("prefopt")

#: Largest tolerated gap, nats per token, by the dtype the model computes in.
TOLERANCE = {"float32": 1e-3, "float64": 1e-6, "bfloat16": 5e-2, "float16": 5e-2}


@dataclass(frozen=True)
class HeadCheck:
    """The outcome of one self-check: the largest per-token gap and the tolerance it met or
    missed."""

    architecture: str
    gap: float
    tolerance: float

    @property
    def agrees(self) -> bool:
        return self.gap <= self.tolerance

    def notice(self) -> str:
        return (
            f"{self.architecture}: the lean LM-head path differs from the model's own forward "
            f"by {self.gap:.3g} nats per token on the first batch (tolerance "
            f"{self.tolerance:g}); scoring with full logits instead (exact, more memory)"
        )


def compute_dtype_name(model: Any) -> str:
    """The dtype the model's forward computes in here: the autocast dtype when autocast is on,
    else its floating-point parameters' dtype."""
    import torch

    parameter = next(
        (p for p in unwrap(model).parameters() if p.is_floating_point()),
        None,
    )
    device_type = parameter.device.type if parameter is not None else "cpu"
    if torch.is_autocast_enabled(device_type):
        return str(torch.get_autocast_dtype(device_type)).removeprefix("torch.")
    return str(parameter.dtype if parameter is not None else torch.float32).removeprefix("torch.")


def check_lean_head(model: Any, batch: dict[str, Any]) -> HeadCheck | None:
    """Score ``batch`` through the lean path and through the model's own full logits; ``None``
    when the model takes the full-logits path anyway (nothing to check).

    Runs without gradients and in eval mode (restored afterwards), on the device of the
    model's parameters, under whatever autocast the caller has entered.
    """
    import torch

    if lean_path_parts(model) is None:
        return None
    inner = unwrap(model)
    device = next(inner.parameters()).device
    moved = {key: _to_device(value, device) for key, value in batch.items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            lean, lengths = sequence_logps(model, moved)
            full, _ = sequence_logps(model, moved, lean=False)
    finally:
        model.train(was_training)
    per_token = (lean - full).abs() / lengths.clamp_min(1).to(lean.dtype)
    gap = float(per_token.max()) if per_token.numel() else 0.0
    if gap != gap:  # NaN: a broken head is no agreement
        gap = float("inf")
    dtype = compute_dtype_name(model)
    return HeadCheck(type(inner).__name__, gap, TOLERANCE.get(dtype, 5e-2))


def self_check(models: list[Any], batch: dict[str, Any]) -> HeadCheck | None:
    """:func:`check_lean_head` on ``models[0]`` (the policy); on a disagreement every model
    given (the policy, a frozen reference copy; ``None`` entries skipped) scores with full
    logits from now on, and one notice says so."""
    outcome = check_lean_head(models[0], batch)
    if outcome is not None and not outcome.agrees:
        log.warning("%s", outcome.notice())
        for model in models:
            if model is not None:
                use_full_logits(model)
    return outcome


def _to_device(value: Any, device: Any) -> Any:
    if hasattr(value, "to"):
        return value.to(device)
    if isinstance(value, dict):
        return {key: _to_device(item, device) for key, item in value.items()}
    return value
