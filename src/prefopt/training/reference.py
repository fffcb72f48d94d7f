"""Where reference log-probs come from: one protocol, three implementations.

- :class:`AdapterOffReference`: the policy with its LoRA adapter switched off, which is
  exactly the frozen base (no second copy of the weights in memory).
- :class:`FrozenCopyReference`: a separate frozen model, for full fine-tuning.
- :class:`CachedReference`: values read from the persistent cache
  (:mod:`prefopt.training.reference_cache`), which every batch then carries as
  ``reference_logps``; until the cache holds them it asks one of the other two and, in the
  first epoch, fills the cache from those very values (``auto``), or scores them in a pass when
  training begins (``cached``). Under ZeRO-3 full fine-tuning, where no frozen copy can be
  held, that pass asks the policy itself before its first step
  (:class:`StartingPolicyReference`).

:func:`choose_reference` is the one place that picks among them. The trainer sees only
:class:`Reference`: ``logps`` for a batch, ``prepare`` before training (the cache is read or
planned there), ``begin_training`` once the engine has prepared the model (a ``cached`` pass
runs there), ``end_of_epoch`` when an epoch ends. The online references run without
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
    from prefopt.training.reference_cache import MissingEntries
    from prefopt.training.reference_fill import ReferenceFill

LogpsFn = Callable[[Any, dict[str, Any]], tuple[Any, Any]]


class Reference:
    """Reference log-probs for a batch, computed with the trainer's own log-prob function.

    ``logps`` returns ``(2B,)`` log-probs, chosen sequences first, as the policy's are.
    """

    #: A frozen model this reference holds (to shard, to cast), or ``None``.
    model: Any = None
    #: Where this reference's log-probs come from, for the run's summary.
    source = "online"

    def logps(self, policy: Any, inputs: dict[str, Any], logps_fn: LogpsFn) -> Any:
        raise NotImplementedError

    def prepare(
        self,
        trainer: Any,
        train: list[Any],
        evaluation: list[Any] | None,
        quiet: bool = False,
    ) -> None:
        """Called once the trainer exists, before training starts (nothing to do online)."""

    def begin_training(self, trainer: Any) -> float:
        """Called on every process when training begins, after the model is prepared for its
        engine; returns the seconds spent (nothing to do online)."""
        return 0.0

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

    source = "online (the adapter switched off)"

    def logps(self, policy: Any, inputs: dict[str, Any], logps_fn: LogpsFn) -> Any:
        with torch.no_grad(), _eval_mode(policy), peft_model_of(policy).disable_adapter():
            logps, _ = logps_fn(policy, inputs)
        return logps.detach()


class FrozenCopyReference(Reference):
    """Reference = a separate frozen model (full fine-tuning)."""

    source = "online (a frozen copy)"

    def __init__(self, model: Any) -> None:
        self.model = model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    def logps(self, policy: Any, inputs: dict[str, Any], logps_fn: LogpsFn) -> Any:
        with torch.no_grad():
            logps, _ = logps_fn(self.model, inputs)
        return logps.detach()


class StartingPolicyReference(Reference):
    """Reference = the policy itself before its first optimizer step, for full fine-tuning
    where a frozen copy cannot be held (ZeRO-3 partitions every model loaded under it, and
    only the engine's forward gathers the weights). Only valid behind a cache that is scored
    when training begins (:class:`CachedReference` with ``cached`` mode)."""

    def logps(self, policy: Any, inputs: dict[str, Any], logps_fn: LogpsFn) -> Any:
        with torch.no_grad(), _eval_mode(policy):
            logps, _ = logps_fn(policy, inputs)
        return logps.detach()


class CachedReference(Reference):
    """Reference log-probs from the persistent cache, keyed by model, tokens and precision.

    ``prepare`` attaches stored (or, in ``cached`` mode, freshly computed) values to the samples
    (pairs, lists or conversations),
    or plans to fill the training entry from the first epoch (``auto`` mode without an entry).
    Batches whose samples all carry values are answered from them; the others go to ``online``,
    whose first-epoch values are recorded for the fill. ``online`` is dropped (a frozen copy's
    memory freed) as soon as no later batch can need it.
    """

    def __init__(self, online: Reference, config: RunConfig, mode: str | None = None) -> None:
        self.online: Reference | None = online
        self.source = online.source
        self.config = config
        self.mode = mode or config.reference.mode
        self.fill: ReferenceFill | None = None
        self.missing: MissingEntries | None = None
        self.datasets: dict[str, list[Any]] = {}
        self.quiet = False

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
        if self.fill is not None and policy.training and "sample_index" in inputs:
            self.fill.record(inputs, values)
        return values

    def prepare(
        self,
        trainer: Any,
        train: list[Any],
        evaluation: list[Any] | None,
        quiet: bool = False,
    ) -> None:
        from prefopt.modeling.logprobs import unwrap
        from prefopt.training.reference_cache import provide_for_run

        assert self.online is not None, "prepare runs once, before any release"
        self.datasets = {"train": train, **({"eval": evaluation} if evaluation else {})}
        self.quiet = quiet
        base = self.online.model if self.online.model is not None else unwrap(trainer.model)
        plan = provide_for_run(trainer, self.config, self.datasets, base, self.mode)
        if plan.attached:  # every pair carries its reference log-probs
            self.source = "cache (the entry was read)"
            self.release()
        elif plan.fill is not None:
            self.source = "online (the cache fills when a first epoch ends; none did)"
        self.fill, self.missing = plan.fill, plan.missing

    def begin_training(self, trainer: Any) -> float:
        """Score the missing entries with the model as its engine prepared it, every process
        its share (:func:`prefopt.training.reference_cache.score_missing`)."""
        from prefopt.errors import UsageError
        from prefopt.training.reference_cache import score_missing

        if self.missing is None:
            return 0.0
        if isinstance(self.online, StartingPolicyReference) and trainer.state.global_step:
            raise UsageError(
                "the reference cache entry of this run is gone, and under ZeRO-3 only the policy "
                "before its first step can score it: restore the cache folder "
                f"({self.missing.cache.folder}) or start the run anew (--overwrite)"
            )
        online, model = self.online, trainer.model_wrapped
        assert online is not None
        seconds = score_missing(
            self.missing,
            {name: self.datasets[name] for name in self.missing.keys},
            lambda batch: online.logps(model, batch, trainer.policy_logps),
            trainer.data_collator,
            trainer.args,
            self.quiet,
        )
        self.missing = None
        self.source = "cache (scored when training began)"
        self.release()
        return seconds

    def end_of_epoch(self, trainer: Any) -> None:
        """Once the recorded values cover the training data (every process's share), they go
        into the cache and onto the samples; the online reference goes when nothing else needs
        it: eval samples may, and data loader workers hold their own copies of the samples."""
        from prefopt.training.reference_fill import gather_objects

        if self.fill is None or not self.fill.complete(gather_objects):
            return
        self.fill = None
        self.source = "cache, filled by the first epoch's online reference"
        if trainer.eval_dataset is None and trainer.args.dataloader_num_workers == 0:
            self.release()

    def release(self) -> None:
        """Drop the online reference: every batch from now on carries cached values."""
        self.online = None
        gc.collect()


def choose_reference(
    config: RunConfig, frozen_copy: Any = None, starting_policy: bool = False
) -> Reference:
    """The run's reference: the frozen copy when there is one (full fine-tuning), the policy
    before its first step where no copy can be held (``starting_policy``: full fine-tuning
    under ZeRO-3, scored into the cache when training begins), else the adapter switched off;
    behind the cache unless ``reference.mode`` is ``online``."""
    from prefopt.training.reference_cache import check_mode

    if starting_policy:
        return CachedReference(StartingPolicyReference(), config, mode="cached")
    online: Reference = (
        FrozenCopyReference(frozen_copy) if frozen_copy is not None else AdapterOffReference()
    )
    if check_mode(config.reference.mode) == "online":
        return online
    return CachedReference(online, config)
