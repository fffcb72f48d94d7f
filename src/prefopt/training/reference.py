"""Where reference log-probs come from.

- :class:`DisabledAdapterReference`: the policy with its LoRA adapter switched off, which is
  exactly the frozen base (no second copy of the weights in memory).
- :class:`FrozenCopyReference`: a separate frozen model, for full fine-tuning.

Both run without gradients and in eval mode (no dropout), so a reference log-prob depends only
on the weights and the tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

LogpsFn = Callable[[Any, dict[str, Any]], tuple[Any, Any]]


class ReferenceModel:
    """Computes reference log-probs for a batch with the trainer's own log-prob function."""

    def logps(self, policy: Any, inputs: dict[str, Any], logps_fn: LogpsFn) -> Any:
        raise NotImplementedError


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


class DisabledAdapterReference(ReferenceModel):
    """Reference = the policy model with its PEFT adapter disabled."""

    def __init__(self, unwrap: Callable[[Any], Any]) -> None:
        self._unwrap = unwrap

    def logps(self, policy: Any, inputs: dict[str, Any], logps_fn: LogpsFn) -> Any:
        peft_model = self._unwrap(policy)
        with torch.no_grad(), _eval_mode(policy), peft_model.disable_adapter():
            logps, _ = logps_fn(policy, inputs)
        return logps.detach()


class FrozenCopyReference(ReferenceModel):
    """Reference = a separate frozen model (full fine-tuning)."""

    def __init__(self, model: Any) -> None:
        self.model = model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    def logps(self, policy: Any, inputs: dict[str, Any], logps_fn: LogpsFn) -> Any:
        with torch.no_grad():
            logps, _ = logps_fn(self.model, inputs)
        return logps.detach()
