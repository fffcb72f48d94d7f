"""Mix: a weighted sum of registered losses (DPO + NLL as in RPO, MPO's DPO + BCO + SFT, ...).

Any algorithm in the registry can be a part, built-in or from a plugin: each part is built by
its own spec from its own options and sees the same :class:`~prefopt.api.PreferenceBatch`.
With parts k = 1..K, weights w_k ≥ 0 and L_k the scalar loss part k returns::

    loss         = Σ_k w_k · L_k
    per_pair_i   = Σ_k w_k · per_pair_k,i
    weights_i    = max_k weights_k,i          (a pair counts if any part trains on it)

so the gradient is the weighted sum of the parts' gradients. MPO (Wang et al., "Enhancing
the Reasoning Ability of Multimodal Large Language Models via Mixed Preference Optimization",
2024, https://arxiv.org/abs/2411.10442) is ``dpo=0.8, bco-pair=0.2, nll=1``; RPO (Pang et al.,
https://arxiv.org/abs/2404.19733) is ``dpo=1, nll=1`` (the same as ``dpo --rpo-alpha 1``).

Configuration: ``algorithm.losses`` is a list of parts. In YAML each part is a mapping with
``name``, ``weight`` (default 1) and the part's own options inline::

    algorithm:
      losses:
        - {name: dpo, weight: 0.8, beta: 0.2}
        - {name: bco-pair, weight: 0.2}
        - {name: nll, weight: 1.0}

On the command line each part is ``NAME=WEIGHT`` with options after colons
(``--loss dpo=0.8:beta=0.2 --loss nll=1``; ``--loss NAME`` means weight 1), or the whole list
as YAML: ``--set 'algorithm.losses=[{name: dpo, weight: 0.8, beta: 0.2}, {name: nll}]'``.
The resolved config stores every option of every part. A part's options named ``name`` or
``weight`` cannot be set (those keys belong to the mix); a part's run defaults (e.g. rank1's
LoRA rank) are not applied.

The run: the reference is computed if any part needs it, and a part that does not need one
gets the batch without reference log-probs (as it would alone). The extra columns are the
union of the parts' and every part's ``validate_records`` runs. Parts with their own trainer
or runner (SFT) and mixes of mixes are refused.

Metrics: each part's loss as ``PREFIX/loss`` (mean over processes) and its metrics under
``PREFIX/`` (a part's ``ns/x`` becomes ``PREFIX/x``), PREFIX the part's name (``dpo#2`` for
the second ``dpo``). The ``rewards/*`` metrics are those of the first part that reports
implicit rewards. State: the state of every stateful part (β-DPO, dynamic-β, bco-pair) is
saved with checkpoints under its prefix and restored on resume.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import prefopt
from prefopt.algorithms.common import format_number
from prefopt.api import SINGLE_PROCESS, AlgorithmSpec, LossContext, LossOutput, PreferenceBatch
from prefopt.errors import UsageError

RESERVED_KEYS = ("name", "weight")


@dataclass
class MixConfig:
    losses: list[Any] = field(
        default_factory=list,
        metadata={
            "help": "A part of the mixture, NAME=WEIGHT[:OPTION=VALUE...], e.g. --loss dpo=0.8 "
            "--loss nll=1 (repeatable; YAML: algorithm.losses).",
            "flag": "loss",
            "repeatable": True,
            "metavar": "NAME=WEIGHT",
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.losses, (str, Mapping)):
            self.losses = [self.losses]
        self.losses = [resolved_entry(part) for part in _resolve(self.losses)]


@dataclass
class Part:
    """One part of a mixture: its spec, its own config, its weight and its metric prefix."""

    prefix: str
    spec: AlgorithmSpec
    config: Any
    weight: float


# -- parsing -------------------------------------------------------------------------------
def parse_part_text(text: str) -> dict[str, Any]:
    """``"dpo=0.8:beta=0.2"`` -> ``{"name": "dpo", "weight": "0.8", "beta": 0.2}``."""
    from prefopt.config_values import parse_scalar

    head, *options = text.strip().split(":")
    name, sep, weight = head.partition("=")
    entry: dict[str, Any] = {"name": name.strip()}
    if sep:
        entry["weight"] = weight.strip()
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"loss '{text}': expected OPTION=VALUE after ':', got '{option}'")
        entry[key.strip()] = parse_scalar(value.strip())
    return entry


def _as_entry(item: Any, index: int) -> dict[str, Any]:
    if isinstance(item, str):
        entry = parse_part_text(item)
    elif isinstance(item, Mapping):
        entry = dict(item)
    else:
        entry = {}
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"losses[{index}]: expected NAME=WEIGHT or a mapping with a name and a weight, "
            f"got {item!r}"
        )
    return entry


def _weight(value: Any, name: str) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or number < 0:
        raise ValueError(f"loss '{name}': weight must be a number >= 0, got {value!r}")
    return number


def _part_spec(name: str) -> AlgorithmSpec:
    from prefopt.registry import get_algorithm

    try:
        spec = get_algorithm(name)
    except UsageError as exc:
        raise ValueError(f"loss '{name}': {exc}") from None
    if spec.config_class is MixConfig:
        raise ValueError(f"loss '{name}': a mix cannot contain a mix; list its parts directly")
    if spec.runner is not None or spec.trainer_class is not None or spec.for_config is not None:
        raise ValueError(
            f"loss '{name}' trains with its own trainer or data flow and cannot be a part of a mix"
        )
    return spec


def _part_config(spec: AlgorithmSpec, options: dict[str, Any]) -> Any:
    from prefopt.config import field_types
    from prefopt.config_values import coerce

    types = {k: v for k, v in field_types(spec.config_class).items() if k not in RESERVED_KEYS}
    values = {}
    for key, value in options.items():
        if key not in types:
            close = difflib.get_close_matches(key, list(types), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            known = ", ".join(types) or "none"
            raise ValueError(f"loss '{spec.name}' has no option '{key}'.{hint} Options: {known}")
        try:
            values[key] = coerce(value, types[key], f"{spec.name}.{key}")
        except UsageError as exc:
            raise ValueError(f"loss {exc}") from None
    try:
        return spec.config_class(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"loss '{spec.name}': {exc}") from None


def _resolve(items: list[Any]) -> list[Part]:
    parts: list[Part] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        entry = _as_entry(item, index)
        name = entry.pop("name")
        weight = _weight(entry.pop("weight", 1.0), name)
        spec = _part_spec(name)
        seen[name] = seen.get(name, 0) + 1
        prefix = name if seen[name] == 1 else f"{name}#{seen[name]}"
        parts.append(Part(prefix, spec, _part_config(spec, entry), weight))
    return parts


def resolved_entry(part: Part) -> dict[str, Any]:
    """A part as the resolved config stores it: name, weight and every option."""
    options = dataclasses.asdict(part.config)
    return {
        "name": part.spec.name,
        "weight": part.weight,
        **{k: v for k, v in options.items() if k not in RESERVED_KEYS},
    }


def parts_of(config: MixConfig) -> list[Part]:
    """The parts of a mix config (each looked up in the registry and built from its options)."""
    return _resolve(list(config.losses))


# -- the loss ------------------------------------------------------------------------------
def _prefixed(prefix: str, metrics: Mapping[str, Any], into: dict[str, Any]) -> None:
    for key, value in metrics.items():
        short = key.split("/", 1)[1] if "/" in key else key
        name = f"{prefix}/{short}"
        if name in into:  # two namespaces of one part with the same leaf: keep both whole
            name = f"{prefix}/{key}"
        into[name] = value


class MixLoss:
    """``Σ_k w_k · L_k`` over the parts; stateful parts keep (and checkpoint) their state."""

    def __init__(self, parts: list[tuple[Part, Any]], ctx: LossContext | None = None) -> None:
        self.parts = parts
        self.ctx = ctx or SINGLE_PROCESS

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        import torch

        loss: Any = None
        per_pair: Any = None
        weights: Any = None
        metrics: dict[str, Any] = {}
        rewards: tuple[Any, Any] | None = None
        without_reference: PreferenceBatch | None = None
        for part, loss_fn in self.parts:
            part_batch = batch
            if not part.spec.needs_reference:
                if without_reference is None:
                    without_reference = dataclasses.replace(
                        batch, reference_chosen_logps=None, reference_rejected_logps=None
                    )
                part_batch = without_reference
            out: LossOutput = loss_fn(part_batch)
            w = part.weight
            loss = w * out.loss if loss is None else loss + w * out.loss
            per_pair = w * out.per_pair if per_pair is None else per_pair + w * out.per_pair
            weights = out.weights if weights is None else torch.maximum(weights, out.weights)
            part_loss = self.ctx.all_gather(out.loss.detach().reshape(1)).mean()
            _prefixed(part.prefix, {"loss": part_loss, **out.metrics}, metrics)
            chosen, rejected = out.chosen_rewards, out.rejected_rewards
            if rewards is None and chosen is not None and rejected is not None:
                rewards = (chosen, rejected)
        if loss is None:
            raise UsageError(NO_PARTS)
        return LossOutput(
            loss=loss,
            per_pair=per_pair,
            weights=weights,
            metrics=metrics,
            chosen_rewards=None if rewards is None else rewards[0],
            rejected_rewards=None if rewards is None else rewards[1],
        )

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{prefix: part state}`` for the parts that have state."""
        return {
            part.prefix: loss_fn.state_dict()
            for part, loss_fn in self.parts
            if callable(getattr(loss_fn, "state_dict", None))
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for part, loss_fn in self.parts:
            load = getattr(loss_fn, "load_state_dict", None)
            if callable(load) and part.prefix in state:
                load(state[part.prefix])


NO_PARTS = (
    "mix needs at least one loss: --loss NAME=WEIGHT (repeatable), or algorithm.losses "
    "in a YAML config"
)


def make_loss(config: MixConfig, ctx: LossContext | None = None) -> MixLoss:
    parts = parts_of(config)
    if not parts:
        raise UsageError(NO_PARTS)
    ctx = ctx or SINGLE_PROCESS
    return MixLoss([(part, part.spec.build_loss(part.config, ctx)) for part in parts], ctx)


# -- the run -------------------------------------------------------------------------------
def composed_spec(spec: AlgorithmSpec, config: MixConfig) -> AlgorithmSpec:
    """The mix's spec for this config's parts: the reference if any part needs it, the union
    of their extra columns, all their record checks; trained by the standard trainer."""
    parts = parts_of(config)
    if not parts:
        raise UsageError(NO_PARTS)
    columns: list[str] = []
    for part in parts:
        columns += [c for c in part.spec.extra_columns if c not in columns]
    checks = [p.spec.validate_records for p in parts if p.spec.validate_records is not None]

    def validate_records(rows: list[tuple[int, dict[str, Any]]], path: str) -> None:
        for check in checks:
            check(rows, path)

    return dataclasses.replace(
        spec,
        # The prepared-data cache keys on this name: parts with other record checks differ.
        name=f"{spec.name}({','.join(part.spec.name for part in parts)})",
        extra_columns=tuple(columns),
        needs_reference=any(part.spec.needs_reference for part in parts),
        validate_records=validate_records if checks else None,
        for_config=None,
    )


def spec_for(config: MixConfig) -> AlgorithmSpec[Any]:
    """The spec a run of this mix trains (``AlgorithmSpec.for_config``): :func:`composed_spec`."""
    return composed_spec(SPEC, config)


def run_name(config: MixConfig, model_short: str) -> str:
    parts = "+".join(f"{entry['name']}{format_number(entry['weight'])}" for entry in config.losses)
    return f"Mix_{parts}_{model_short}" if parts else f"Mix_{model_short}"


SPEC = AlgorithmSpec(
    name="mix",
    summary="A weighted sum of registered losses (--loss dpo=0.8 --loss nll=1); reference "
    "if any part needs one.",
    config_class=MixConfig,
    make_loss=make_loss,
    run_name=run_name,
    for_config=spec_for,
)


@prefopt.hookimpl
def prefopt_algorithms() -> list[AlgorithmSpec]:
    return [SPEC]
