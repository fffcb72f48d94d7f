"""Sweeps: train a grid of models × algorithm settings, one job after another, in process.

A sweep file (YAML)::

    algorithm: factual               # any registered algorithm
    output_root: runs/factual-sweep  # default: runs
    models:                          # each job trains one of these
      - {id: Qwen/Qwen2.5-0.5B-Instruct, short: qwen0.5b}
    deltas: [0, 2, 4, 10]            # shorthand for grid: {delta: [...]}
    grid:                            # optional: more axes; a bare key is algorithm.<key>
      beta: [0.1, 0.2]
      training.learning_rate: [1e-6, 5e-6]
    base:                            # a run config (same schema as a train config), or a
      data: {train: pairs.jsonl}     # path to one
      training: {max_steps: 200}

Jobs are the product ``models × grid`` (models outermost, then the grid axes in the order
written). Job ``<short>_delta<Δ>`` (one ``_<key><value>`` per axis) trains into
``<output_root>/<job>`` with the algorithm's run name. Each job's config is resolved by
:func:`prefopt.config_layers.resolve_run_config` (layers: defaults < algorithm defaults < base <
the job's model and grid values) and trained by :func:`prefopt.training.run.train`, exactly
as ``prefopt train`` would. All job configs are resolved before the first job trains, so a bad
key fails in seconds, not after hours.

A job that finished writes ``prefopt_done.json`` next to its saved adapter/model; a later
invocation skips it. A job that was interrupted after a checkpoint resumes from it. Relative
paths (``output_root``, ``base`` as a file, data files) are relative to the working directory,
as for ``prefopt train --config``.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefopt.config_values import format_number
from prefopt.errors import ConfigError, UsageError

DONE_FILE = "prefopt_done.json"
#: A saved run holds one of these (adapter or full model).
MODEL_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
SWEEP_KEYS = ("algorithm", "models", "deltas", "grid", "base", "output_root")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class SweepModel:
    id: str
    short: str


@dataclass
class SweepJob:
    index: int
    name: str
    model: SweepModel
    values: dict[str, Any]
    config: Any  # RunConfig

    @property
    def output_dir(self) -> Path:
        return Path(self.config.training["output_dir"])

    @property
    def run_name(self) -> str:
        return str(self.config.training["run_name"])


@dataclass
class SweepPlan:
    path: Path
    spec: Any  # AlgorithmSpec
    output_root: Path
    jobs: list[SweepJob]


@dataclass
class JobOutcome:
    job: SweepJob
    status: str  # done | skipped | failed
    result: Any = None  # RunResult when done
    error: str | None = None
    usage_error: bool = False
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


# -- planning ------------------------------------------------------------------------------
def load_sweep(path: str | Path) -> SweepPlan:
    """Read, validate and expand a sweep file into jobs with resolved run configs."""
    from prefopt.config_layers import load_yaml
    from prefopt.registry import get_algorithm

    path = Path(path)
    raw = load_yaml(path)
    unknown = [key for key in raw if key not in SWEEP_KEYS]
    if unknown:
        raise ConfigError(
            f"{path}: unknown sweep key '{unknown[0]}' (expected {', '.join(SWEEP_KEYS)})"
        )
    if not isinstance(raw.get("algorithm"), str):
        raise ConfigError(f"{path}: algorithm: expected an algorithm name, e.g. 'factual'")
    spec = get_algorithm(raw["algorithm"])
    models = _models(raw.get("models"), path)
    axes = _axes(raw, spec, path)
    base_file, base_flags, base_sets = _base(raw.get("base"), spec, path)
    output_root = Path(str(raw.get("output_root") or "runs"))

    jobs: list[SweepJob] = []
    seen: dict[str, int] = {}
    combos = list(itertools.product(*[values for _, values in axes]))
    for model in models:
        for combo in combos:
            values = {key: value for (key, _), value in zip(axes, combo, strict=True)}
            name = model.short + "".join(
                f"_{_leaf(key)}{_name_part(value)}" for key, value in values.items()
            )
            index = len(jobs)
            if name in seen:
                raise ConfigError(
                    f"{path}: jobs {seen[name]} and {index} are both named '{name}' "
                    "(give the models distinct 'short' names)"
                )
            seen[name] = index
            config = _resolve(
                spec,
                path,
                index,
                name,
                model,
                values,
                output_root,
                base_file,
                base_flags,
                base_sets,
            )
            jobs.append(SweepJob(index, name, model, values, config))
    return SweepPlan(path, spec, output_root, jobs)


def _models(value: Any, path: Path) -> list[SweepModel]:
    from prefopt.config import model_short_name

    if not isinstance(value, list) or not value:
        raise ConfigError(f"{path}: models: expected a non-empty list of {{id, short}}")
    models = []
    for position, item in enumerate(value):
        where = f"{path}: models[{position}]"
        if isinstance(item, str):
            item = {"id": item}
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: expected a mapping with 'id' and 'short', got {item!r}")
        extra = [key for key in item if key not in ("id", "short")]
        if extra:
            raise ConfigError(f"{where}: unknown key '{extra[0]}' (expected id, short)")
        if not isinstance(item.get("id"), str) or not item["id"]:
            raise ConfigError(f"{where}: id: expected a hub id or a local folder")
        short = str(item.get("short") or model_short_name(item["id"]))
        if _SAFE_NAME.search(short):
            raise ConfigError(
                f"{where}: short: '{short}' must use only letters, digits, '.', '_' and '-'"
            )
        models.append(SweepModel(item["id"], short))
    return models


def _axes(raw: Mapping[str, Any], spec: Any, path: Path) -> list[tuple[str, list[Any]]]:
    """The grid as ``[(dotted key, values)]``; ``deltas`` is ``algorithm.delta``."""
    grid = raw.get("grid") or {}
    if not isinstance(grid, Mapping):
        raise ConfigError(f"{path}: grid: expected a mapping of parameter -> list of values")
    items: list[tuple[str, Any]] = []
    if raw.get("deltas") is not None:
        items.append(("delta", raw["deltas"]))
    items += list(grid.items())
    fields = {f for f in getattr(spec.config_class, "__dataclass_fields__", {})}
    axes: list[tuple[str, list[Any]]] = []
    for key, values in items:
        key = str(key)
        label = "deltas" if key == "delta" and "delta" not in grid else f"grid.{key}"
        dotted = key if "." in key else f"algorithm.{key}"
        if "." not in key and key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise ConfigError(
                f"{path}: {label}: algorithm '{spec.name}' has no parameter '{key}' "
                f"(its parameters: {known})"
            )
        if any(existing == dotted for existing, _ in axes):
            raise ConfigError(f"{path}: {label}: '{dotted}' is swept twice")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: {label}: expected a non-empty list of values")
        axes.append((dotted, values))
    return axes


def _base(value: Any, spec: Any, path: Path) -> tuple[str | None, dict[str, Any], list[str]]:
    """The base run config: ``(config file, flags, null-setting --set strings)``."""
    from prefopt.config_layers import ConfigBuilder

    if value is None:
        return None, {}, []
    if isinstance(value, str):
        if not Path(value).is_file():
            raise UsageError(f"{path}: base: config file not found: {value}")
        return value, {}, []
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: base: expected a run config mapping or a path to one")
    # Validate with the sweep file named in messages; the jobs then resolve the same values.
    ConfigBuilder(spec.name, spec.config_class).apply_mapping(value, f"{path}: base")
    flags: dict[str, Any] = {}
    sets: list[str] = []
    for section, content in value.items():
        if section == "algorithm_name":
            continue
        if content is None:
            sets.append(f"{section}=null")
            continue
        for name, item in content.items():
            if item is None:  # flags skip None ("not given"), so nulls travel as --set
                sets.append(f"{section}.{name}=null")
            else:
                flags[f"{section}.{name}"] = item
    return None, flags, sets


def _resolve(
    spec: Any,
    path: Path,
    index: int,
    name: str,
    model: SweepModel,
    values: dict[str, Any],
    output_root: Path,
    base_file: str | None,
    base_flags: dict[str, Any],
    base_sets: list[str],
) -> Any:
    from prefopt.config_layers import resolve_run_config

    flags = dict(base_flags)
    flags["model.name_or_path"] = model.id
    flags["training.output_dir"] = str(output_root / name)
    sets = list(base_sets)
    for key, value in values.items():
        if value is None:
            sets.append(f"{key}=null")
        else:
            flags[key] = value
    try:
        config = resolve_run_config(spec, base_file, flags, sets)
    except UsageError as exc:
        raise ConfigError(f"{path}: job {index} ({name}): {exc}") from None
    config.training["run_name"] = job_run_name(spec, config, model.short, values)
    return config


def job_run_name(spec: Any, config: Any, short: str, values: Mapping[str, Any]) -> str:
    """The algorithm's run name, plus ``_<key><value>`` for swept values it does not show."""
    name = spec.run_name(config.algorithm, short) or f"{spec.name}_{short}"
    for key, value in values.items():
        part = f"{_leaf(key)}{_name_part(value)}"
        if part not in name:
            name += f"_{part}"
    return str(name)


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _name_part(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_number(value)
    if isinstance(value, (list, tuple)):
        return "-".join(_name_part(v) for v in value)
    return _SAFE_NAME.sub("-", str(value)).strip("-") or "x"


# -- running -------------------------------------------------------------------------------
def job_finished(output_dir: Path) -> bool:
    """A finished job: the completion marker next to a saved adapter or model."""
    return (output_dir / DONE_FILE).is_file() and any(
        (output_dir / name).is_file() for name in MODEL_FILES
    )


def run_sweep(
    plan: SweepPlan,
    index: int | None = None,
    quiet: bool = False,
    on_start: Callable[[SweepJob, bool], None] | None = None,
    on_end: Callable[[JobOutcome], None] | None = None,
) -> list[JobOutcome]:
    """Train the plan's jobs (or job ``index`` alone) one after another; finished jobs are
    skipped and a failed job does not stop the others."""
    from prefopt.training.checkpoints import latest_checkpoint
    from prefopt.training.run import train

    if index is not None and not 0 <= index < len(plan.jobs):
        raise UsageError(f"--index {index}: the sweep has jobs 0 to {len(plan.jobs) - 1}")
    jobs = plan.jobs if index is None else [plan.jobs[index]]
    outcomes = []
    for job in jobs:
        if job_finished(job.output_dir):
            outcome = JobOutcome(job, "skipped", metrics=_done_metrics(job.output_dir))
        else:
            resume = latest_checkpoint(job.output_dir) is not None
            if on_start is not None:
                on_start(job, resume)
            start = time.perf_counter()
            try:
                result = train(job.config, plan.spec, resume=resume, quiet=quiet)
            except UsageError as exc:
                outcome = JobOutcome(job, "failed", error=str(exc), usage_error=True)
            except Exception as exc:  # one broken job must not cost the rest of the sweep
                outcome = JobOutcome(job, "failed", error=f"{type(exc).__name__}: {exc}")
            else:
                seconds = time.perf_counter() - start
                write_done_marker(job, plan, result, seconds)
                outcome = JobOutcome(
                    job, "done", result, seconds=seconds, metrics=dict(result.final_metrics)
                )
            outcome.seconds = time.perf_counter() - start
            _release_memory()
        outcomes.append(outcome)
        if on_end is not None:
            on_end(outcome)
    return outcomes


def write_done_marker(job: SweepJob, plan: SweepPlan, result: Any, seconds: float) -> Path:
    """Write ``prefopt_done.json`` atomically (main process only)."""
    path = job.output_dir / DONE_FILE
    if int(os.environ.get("RANK", "0")) != 0:
        return path
    record = {
        "job": job.name,
        "index": job.index,
        "sweep": str(plan.path),
        "algorithm": plan.spec.name,
        "model": job.model.id,
        "values": job.values,
        "run_name": job.run_name,
        "steps": result.steps,
        "seconds": round(seconds, 3),
        "final_metrics": {k: v for k, v in result.final_metrics.items() if _is_number(v)},
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    temporary = path.with_name(f".{DONE_FILE}.tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def _done_metrics(output_dir: Path) -> dict[str, Any]:
    try:
        record = json.loads((output_dir / DONE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    metrics = record.get("final_metrics")
    return dict(metrics) if isinstance(metrics, dict) else {}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _release_memory() -> None:
    """Free the finished job's model before the next one loads (matters on GPUs)."""
    gc.collect()
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
