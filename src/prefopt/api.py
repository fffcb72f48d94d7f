"""The plugin author's surface: everything an algorithm plugin builds on.

An algorithm is an :class:`AlgorithmSpec`: a name, a config dataclass and a ``make_loss``
factory. A loss is a callable taking a :class:`PreferenceBatch` (per-pair tensors of shape
``(B,)``) and returning a :class:`LossOutput`. Nothing here imports torch, so the registry
and the CLI stay fast; tensors only appear inside the batches a loss receives.

Minimal plugin::

    from dataclasses import dataclass, field
    import prefopt
    from prefopt.api import AlgorithmSpec, LossOutput

    @dataclass
    class HingeConfig:
        beta: float = field(default=0.1, metadata={"help": "Inverse temperature."})

    def make_loss(config, ctx=None):
        def loss(batch):
            import torch
            m = batch.logits_margin()
            per_pair = torch.relu(1 - config.beta * m)
            return LossOutput(per_pair.mean(), per_pair, torch.ones_like(per_pair), {})
        return loss

    @prefopt.hookimpl
    def prefopt_algorithms():
        return [AlgorithmSpec("hinge", "Hinge loss on the DPO margin.", HingeConfig, make_loss)]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from prefopt.training.stages import RunResult, RunTrainer

#: An algorithm's config dataclass (the type its ``make_loss`` and ``run_name`` receive).
ConfigT = TypeVar("ConfigT")

#: Version of this plugin API. A plugin may declare ``PREFOPT_PLUGIN_API = "1"`` (the major
#: version it was written for) in its module; a plugin asking for another major is refused.
PLUGIN_API_VERSION = "1.2"


@dataclass
class ResponseLists:
    """The whole lists of ranked responses behind a batch's pairs (list data only), for losses
    that use the full ranking (``dpo-pl``).

    Tensors run over the batch's S responses, list by list: list ``i`` is responses
    ``offsets[i]:offsets[i + 1]`` (``offsets`` has L + 1 entries). ``quality`` is higher for
    better responses; equal values are ties. ``pair_list`` (B,) says which list each of the
    batch's pairs comes from.
    """

    policy_logps: torch.Tensor
    reference_logps: torch.Tensor | None
    lengths: torch.Tensor
    quality: torch.Tensor
    offsets: torch.Tensor
    pair_list: torch.Tensor

    def log_ratios(self) -> torch.Tensor:
        """``π − ref`` per response (``π`` alone without a reference): the unscaled reward."""
        if self.reference_logps is None:
            return self.policy_logps
        return self.policy_logps - self.reference_logps

    @property
    def count(self) -> int:
        """L, the number of lists."""
        return int(self.offsets.shape[0]) - 1


@dataclass
class PreferenceBatch:
    """Per-pair inputs of a preference loss; every tensor has shape ``(B,)``.

    Log-probabilities are summed over the completion tokens (EOS included). Reference
    log-probs are ``None`` for reference-free algorithms (``needs_reference=False``).
    ``extras`` holds the algorithm's ``extra_columns`` as float tensors (e.g. ``h_w``, ``h_l``).
    With list data the pairs are index pairs into lists of ranked responses (``lists.pairs``)
    and ``lists`` holds the whole lists; ``None`` for pair data.
    """

    policy_chosen_logps: torch.Tensor
    policy_rejected_logps: torch.Tensor
    reference_chosen_logps: torch.Tensor | None
    reference_rejected_logps: torch.Tensor | None
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    lists: ResponseLists | None = None

    def policy_log_ratio(self) -> torch.Tensor:
        """``π_c − π_r``: the policy's log-prob difference, chosen minus rejected."""
        return self.policy_chosen_logps - self.policy_rejected_logps

    def reference_log_ratio(self) -> torch.Tensor:
        """``ref_c − ref_r`` (zeros when there is no reference)."""
        if self.reference_chosen_logps is None or self.reference_rejected_logps is None:
            return self.policy_chosen_logps.new_zeros(self.policy_chosen_logps.shape)
        return self.reference_chosen_logps - self.reference_rejected_logps

    def logits_margin(self) -> torch.Tensor:
        """The DPO margin ``m = (π_c − π_r) − (ref_c − ref_r)`` per pair."""
        return self.policy_log_ratio() - self.reference_log_ratio()

    def chosen_log_ratio(self) -> torch.Tensor:
        """``π_c − ref_c`` per pair (the unscaled implicit reward of the chosen answer)."""
        if self.reference_chosen_logps is None:
            return self.policy_chosen_logps
        return self.policy_chosen_logps - self.reference_chosen_logps

    def rejected_log_ratio(self) -> torch.Tensor:
        """``π_r − ref_r`` per pair (the unscaled implicit reward of the rejected answer)."""
        if self.reference_rejected_logps is None:
            return self.policy_rejected_logps
        return self.policy_rejected_logps - self.reference_rejected_logps

    @property
    def size(self) -> int:
        return int(self.policy_chosen_logps.shape[0])


@dataclass
class LossOutput:
    """What a loss returns.

    - ``loss``: the scalar to back-propagate.
    - ``per_pair``: ``(B,)`` per-pair losses (before any selection).
    - ``weights``: ``(B,)`` per-pair weights; the selection mask for filtering algorithms,
      ones otherwise.
    - ``metrics``: extra scalars to log (floats or 0-d tensors), e.g. ``{"beta": 0.1}``.
    - ``chosen_rewards`` / ``rejected_rewards``: optional ``(B,)`` implicit rewards used for
      the ``rewards/*`` metrics; when absent the trainer uses the unscaled log-ratios.
    """

    loss: torch.Tensor
    per_pair: torch.Tensor
    weights: torch.Tensor
    metrics: dict[str, Any] = field(default_factory=dict)
    chosen_rewards: torch.Tensor | None = None
    rejected_rewards: torch.Tensor | None = None


@runtime_checkable
class Loss(Protocol):
    """A preference loss: per-pair tensors in, a :class:`LossOutput` out. A loss that keeps
    state between batches also implements :class:`StatefulLoss`."""

    def __call__(self, batch: PreferenceBatch) -> LossOutput: ...


@runtime_checkable
class StatefulLoss(Loss, Protocol):
    """A loss with state across batches (β-DPO's moving averages, dynamic-β's threshold).

    ``state_dict()`` returns plain JSON-serialisable values; they are written as
    ``prefopt_loss_state.json`` into every ``checkpoint-<step>`` and handed back to
    ``load_state_dict`` when a run resumes from it.
    """

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class LossContext:
    """What a loss may ask of the run it lives in.

    ``all_gather(t)`` concatenates a ``(B,)`` tensor across data-parallel processes (in rank
    order) so batch statistics are global; on one process it returns ``t`` unchanged. The
    processes' ``B`` may differ (lists and conversations give each a different number of
    pairs). ``rank`` is this process's index in that order. ``local_slice`` takes this
    process's rows back out of a gathered tensor; the trainer passes ``sizes`` (a callable
    giving every process's ``B`` in rank order, itself a collective) so that it finds them
    whatever the sizes; without it the sizes are taken to be equal (a test's fake context).
    """

    def __init__(
        self,
        all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
        world_size: int = 1,
        rank: int = 0,
        sizes: Callable[[int], list[int]] | None = None,
    ) -> None:
        self._all_gather = all_gather
        self._sizes = sizes
        self.world_size = world_size
        self.rank = rank

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if self._all_gather is None or self.world_size == 1:
            return tensor
        return self._all_gather(tensor)

    def local_slice(self, global_tensor: torch.Tensor, local_size: int) -> torch.Tensor:
        """This process's ``local_size`` rows of a tensor built from ``all_gather``."""
        if self._sizes is None or self.world_size == 1:
            start = self.rank * local_size
        else:
            start = sum(self._sizes(local_size)[: self.rank])
        return global_tensor[start : start + local_size]


SINGLE_PROCESS = LossContext()


def _no_run_name(config: Any, model_short: str) -> str | None:
    return None


#: ``validate_records(rows, source)``: ``rows`` are ``(line number, record)`` of one source.
RecordCheck = Callable[[list[tuple[int, dict[str, Any]]], str], None]


@dataclass
class AlgorithmSpec(Generic[ConfigT]):
    """An algorithm as the registry knows it.

    - ``name``: the CLI word (``prefopt train NAME``); lowercase letters, digits and ``-``.
    - ``summary``: one line for ``prefopt plugins list``.
    - ``config_class``: a dataclass of hyperparameters; each field becomes ``--field-name``
      and a key under ``algorithm:``; ``field(metadata={"help": ...})`` is its help text.
    - ``make_loss(config, ctx)``: builds the loss (see :class:`Loss`, :class:`StatefulLoss`)
      for the run's :class:`LossContext`.
    - ``trainer_class``: ``None`` for :class:`prefopt.training.trainer.PreferenceTrainer`, or a
      subclass, or another trainer that brings its own data
      (:class:`prefopt.training.stages.RunTrainer`, as SFT's does); a class or a
      ``"module:Class"`` string, imported only when training starts.
    - ``extra_columns``: per-pair numeric fields the loss needs; checked at data load time.
    - ``needs_reference``: ``False`` for reference-free losses (the reference pass is skipped).
    - ``defaults``: run-config overrides as dotted keys, e.g. ``{"lora.r": 1}``.
    - ``run_name``: ``(config, model_short) -> str`` default run name, or ``None``.
    - ``validate_records``: optional ``(records, path) -> None`` raising ``DataError`` or
      ``UsageError`` for data the algorithm cannot train on.
    - ``for_config``: optional ``(config) -> AlgorithmSpec``, the spec a run with this config
      trains (a mix composes its parts' reference, columns and checks).
    - ``runner``: deprecated (plugin API 1.0): ``(config, spec, resume, quiet) -> RunResult``
      replacing the whole run, without the stages' checks; bring a ``trainer_class`` instead.
    """

    name: str
    summary: str
    config_class: type[ConfigT]
    make_loss: Callable[[ConfigT, LossContext], Loss]
    trainer_class: type[RunTrainer] | str | None = None
    extra_columns: tuple[str, ...] = ()
    needs_reference: bool = True
    defaults: Mapping[str, Any] = field(default_factory=dict)
    run_name: Callable[[ConfigT, str], str | None] = _no_run_name
    validate_records: RecordCheck | None = None
    for_config: Callable[[ConfigT], AlgorithmSpec[Any]] | None = None
    runner: Callable[..., RunResult] | None = None

    def build_loss(self, config: ConfigT, ctx: LossContext | None = None) -> Loss:
        """``make_loss`` with ``ctx`` defaulting to a single-process context."""
        return self.make_loss(config, ctx or SINGLE_PROCESS)


__all__ = [
    "PLUGIN_API_VERSION",
    "ResponseLists",
    "AlgorithmSpec",
    "Loss",
    "LossContext",
    "StatefulLoss",
    "LossOutput",
    "PreferenceBatch",
    "SINGLE_PROCESS",
]
