"""Where reference log-probs come from: one protocol, three implementations.

- :class:`AdapterOffReference`: the policy with its LoRA adapter switched off, which is
  exactly the frozen base (no second copy of the weights in memory).
- :class:`FrozenCopyReference`: a separate frozen model, for full fine-tuning.
- :class:`CachedReference`: values read from the persistent cache
  (:mod:`prefopt.training.reference_cache`), which every batch then carries as
  ``reference_logps``; until the cache holds them it asks one of the other two and, in the
  first epoch, fills the cache from those very values.

:func:`choose_reference` is the one place that picks among them. The trainer sees only
:class:`Reference`: ``logps`` for a batch, ``prepare`` before training (the cache is read or
filled there), ``end_of_epoch`` when an epoch ends. The online references run without
gradients and in eval mode (no dropout), so a reference log-prob depends only on the weights
and the tokens.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from prefopt.config import RunConfig
    from prefopt.data.tokenize import TokenizedPair
    from prefopt.training.reference_fill import ReferenceFill

LogpsFn = Callable[[Any, dict[str, Any]], tuple[Any, Any]]


class Reference:
    """Reference log-probs for a batch, computed with the trainer's own log-prob function.

    ``logps`` returns ``(2B,)`` log-probs, chosen sequences first, as the policy's are.
    """

    #: A frozen model this reference holds (to shard, to cast), or ``None``.
    model: Any = None

    def logps(self, policy: Any, inputs: dict[str, Any], logps_fn: LogpsFn) -> Any:
        raise NotImplementedError

    def prepare(
        self,
        trainer: Any,
        train: list[TokenizedPair],
        evaluation: list[TokenizedPair] | None,
        quiet: bool = False,
    ) -> None:
        """Called once the trainer exists, before training starts (nothing to do online)."""

    def end_of_epoch(self, trainer: Any) -> None:
        """Called on every process when a training epoch ends (nothing to do online)."""


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def peft_model_of(model: Any) -> Any:
    """The PEFT model inside whatever wrappers (DDP, accelerate) hold it."""
    while not hasattr(model, "disable_adapter") and hasattr(model, "module"):
        model = model.module
    return model


class AdapterOffReference(Reference):
    """Reference = the policy model with its PEFT adapter disabled."""

    def logps(self, policy: Any, inputs: dict[str, Any], logps_fn: LogpsFn) -> Any:
        with torch.no_grad(), _eval_mode(policy), peft_model_of(policy).disable_adapter():
            logps, _ = logps_fn(policy, inputs)
        return logps.detach()


class FrozenCopyReference(Reference):
    """Reference = a separate frozen model (full fine-tuning)."""

    def __init__(self, model: Any) -> None:
        self.model = model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    def logps(self, policy: Any, inputs: dict[str, Any], logps_fn: LogpsFn) -> Any:
        with torch.no_grad():
            logps, _ = logps_fn(self.model, inputs)
        return logps.detach()


class CachedReference(Reference):
    """Reference log-probs from the persistent cache, keyed by model, tokens and precision.

    ``prepare`` attaches stored (or, in ``cached`` mode, freshly computed) values to the pairs,
    or plans to fill the training entry from the first epoch (``auto`` mode without an entry).
    Batches whose pairs all carry values are answered from them; the others go to ``online``,
    whose first-epoch values are recorded for the fill. ``online`` is dropped (a frozen copy's
    memory freed) as soon as no later batch can need it.
    """

    def __init__(self, online: Reference, config: RunConfig) -> None:
        self.online: Reference | None = online
        self.config = config
        self.fill: ReferenceFill | None = None

    @property
    def model(self) -> Any:
        return None if self.online is None else self.online.model

    def logps(self, policy: Any, inputs: dict[str, Any], logps_fn: LogpsFn) -> Any:
        cached = inputs.get("reference_logps")
        if cached is not None:
            return cached
        if self.online is None:
            raise RuntimeError("a batch without cached reference log-probs after the release")
        values = self.online.logps(policy, inputs, logps_fn)
        if self.fill is not None and policy.training and "pair_index" in inputs:
            self.fill.record(inputs["pair_index"], values)
        return values

    def prepare(
        self,
        trainer: Any,
        train: list[TokenizedPair],
        evaluation: list[TokenizedPair] | None,
        quiet: bool = False,
    ) -> None:
        from prefopt.training.reference_cache import provide_for_run

        assert self.online is not None, "prepare runs once, before any release"
        plan = provide_for_run(trainer, self.config, train, evaluation, self.online, quiet)
        if plan.attached:  # every pair carries its reference log-probs
            self.release()
        self.fill = plan.fill

    def end_of_epoch(self, trainer: Any) -> None:
        """Once the recorded values cover the training data (every process's share), they go
        into the cache and onto the pairs; the online reference goes when nothing else needs it:
        eval pairs may, and data loader workers hold their own copies of the pairs."""
        from prefopt.training.reference_fill import gather_objects

        if self.fill is None or not self.fill.complete(gather_objects):
            return
        self.fill = None
        if trainer.eval_dataset is None and trainer.args.dataloader_num_workers == 0:
            self.release()

    def release(self) -> None:
        """Drop the online reference: every batch from now on carries cached values."""
        self.online = None
        gc.collect()


def choose_reference(config: RunConfig, frozen_copy: Any = None) -> Reference:
    """The run's reference: the frozen copy when there is one (full fine-tuning), else the
    adapter switched off; behind the cache unless ``reference.mode`` is ``online``."""
    from prefopt.training.reference_cache import check_mode

    online: Reference = (
        FrozenCopyReference(frozen_copy) if frozen_copy is not None else AdapterOffReference()
    )
    if check_mode(config.reference.mode) == "online":
        return online
    return CachedReference(online, config)
