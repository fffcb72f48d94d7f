"""The lm-evaluation-harness's results as ``prefopt eval harness`` keeps and shows them.

The harness reports each task's metrics under ``metric,filter`` keys (``acc,none``,
``exact_match,strict-match``) with strings for missing values; prefopt keeps them as
``metric`` (``metric[filter]`` for filters other than ``none``) with numbers or ``None``, and
flattens them to ``task/metric`` for ``prefopt eval compare``. Pure data, no lm-eval import.
"""

from __future__ import annotations

import math
from typing import Any

# Keys of a task's harness results that are not metrics.
_NOT_METRICS = ("name", "alias", "sample_len", "samples")


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """The part of the harness's results worth keeping, JSON-clean (numbers, ``None``)."""
    groups = raw.get("groups") or {}
    return {
        "tasks": {name: _metrics(values) for name, values in raw["results"].items()},
        "groups": {name: _metrics(values) for name, values in groups.items()},
        "group_subtasks": raw.get("group_subtasks") or {},
        "n_samples": raw.get("n-samples") or {},
        "n_shot": raw.get("n-shot") or {},
        "versions": {name: _clean(v) for name, v in (raw.get("versions") or {}).items()},
        "higher_is_better": raw.get("higher_is_better") or {},
    }


def _metrics(values: dict[str, Any]) -> dict[str, Any]:
    """``{"acc,none": 0.3, "acc_stderr,none": 0.1}`` → ``{"acc": 0.3, "acc_stderr": 0.1}``
    (``metric[filter]`` when the filter is not ``none``)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in _NOT_METRICS:
            continue
        metric, _, filter_name = key.partition(",")
        name = metric if filter_name in ("", "none") else f"{metric}[{filter_name}]"
        out[name] = _clean(value)
    return out


def _clean(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None if value == "N/A" else str(value)
    if math.isnan(number):
        return None
    return int(number) if isinstance(value, int) else number


def shown(summary: dict[str, Any]) -> list[str]:
    """Names worth a table row: the groups with aggregate metrics (the outermost ones) and
    the tasks none of them covers."""
    children = summary["group_subtasks"]
    aggregated = [name for name, values in summary["groups"].items() if values]
    covered: set[str] = set()
    pending = [child for name in aggregated for child in children.get(name, [])]
    while pending:  # every descendant of an aggregated group, subgroups' tasks included
        name = pending.pop()
        if name not in covered:
            covered.add(name)
            pending += children.get(name, [])
    names = [name for name in aggregated if name not in covered]
    return names + [name for name in summary["tasks"] if name not in covered]


def flat_metrics(summary: dict[str, Any], names: list[str] | None = None) -> dict[str, Any]:
    """``{"task/metric": value}`` for the tasks and groups in ``names`` (default: all);
    standard errors left out."""
    entries = {**summary["tasks"], **summary["groups"]}
    flat: dict[str, Any] = {}
    for name in names if names is not None else list(entries):
        for metric, value in entries.get(name, {}).items():
            if "_stderr" not in metric and isinstance(value, int | float):
                flat[f"{name}/{metric}"] = value
    return flat


def delta(run: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any] | None:
    if base is None:
        return None
    return {name: value - base[name] for name, value in run.items() if name in base}


def table_rows(document: dict[str, Any]) -> list[tuple[str, str, Any, Any, Any]]:
    """``(task, metric, base, run, delta)`` for the headline metrics; values may be ``None``."""
    base = document.get("base_metrics") or {}
    changes = document.get("delta") or {}
    rows = []
    for name in document["headline"]:
        task, _, metric = name.partition("/")
        rows.append((task, metric, base.get(name), document["metrics"][name], changes.get(name)))
    return rows


def stderr(document: dict[str, Any], role: str, task: str, metric: str) -> Any:
    """The harness's standard error of ``metric`` on ``task`` for ``role``, if it gave one."""
    summary = (document.get("results") or {}).get(role)
    if not summary:
        return None
    entry = summary["tasks"].get(task) or summary["groups"].get(task) or {}
    base, bracket, rest = metric.partition("[")
    return entry.get(f"{base}_stderr{bracket}{rest}")


def sample_rows(role: str, samples: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per example the harness logged (``log_samples``): the model's role, task,
    document id, target, the responses after filtering (for a multiple-choice task the
    log-likelihood of each choice and whether it is the greedy continuation) and the
    example's metrics."""
    rows = []
    for task, examples in samples.items():
        for example in examples:
            rows.append(
                {
                    "model": role,
                    "task": task,
                    "doc_id": example.get("doc_id"),
                    "target": _json_value(example.get("target")),
                    "filter": example.get("filter"),
                    "responses": _json_value(example.get("filtered_resps")),
                    "metrics": {
                        name: _clean(example.get(name)) for name in example.get("metrics") or []
                    },
                }
            )
    return rows


def _json_value(value: Any) -> Any:
    """Tuples (the harness's ``(loglikelihood, is_greedy)``) as lists, numbers as floats."""
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, str | bool) or value is None:
        return value
    return _clean(value)
