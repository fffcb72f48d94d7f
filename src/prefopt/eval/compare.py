"""``prefopt eval compare``: several runs side by side, as a table and a PNG chart.

Each input is a results file (``eval_results.json`` from ``prefopt eval``,
``judge_results.json`` from ``prefopt eval judge``, ``harness_results.json`` from ``prefopt eval
harness``) or a folder holding any of them (a run folder after evaluation). A run's identity
(name, algorithm, hyperparameters) comes from the results, or from the folder's
``prefopt_config.yaml`` / ``prefopt_merge.json``. The x axis of the chart is a hyperparameter
that varies across the runs (e.g. Δ of a sweep), or the run name.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefopt.errors import UsageError
from prefopt.paths import as_if_created

EVAL_RESULTS = "eval_results.json"
JUDGE_RESULTS = "judge_results.json"
HARNESS_RESULTS = "harness_results.json"
RESULT_FILES = (EVAL_RESULTS, JUDGE_RESULTS, HARNESS_RESULTS)
NO_RESULTS = f"{EVAL_RESULTS}, {JUDGE_RESULTS} or {HARNESS_RESULTS}"  # for messages
KINDS = ("prefopt.eval", "prefopt.judge", "prefopt.harness")
DEFAULT_METRICS = (
    "accuracy",
    "reward_margin",
    "logp_accuracy",
    "hallucination_preference_rate",
    "accuracy[Δh=1]",
    "mean_factuality",
    "hallucination_rate",
    "win_rate",
)
_GROUP_METRICS = ("accuracy", "margin", "reward_margin", "logp_accuracy")


@dataclass
class ResultSet:
    label: str
    sources: list[Path]
    run: dict[str, Any] | None
    metrics: dict[str, Any]
    headline: list[str] = field(default_factory=list)  # shown by default (harness benchmarks)

    def hyperparameter(self, name: str) -> Any:
        return ((self.run or {}).get("hyperparameters") or {}).get(name)


def _read(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if not isinstance(value, dict) or value.get("kind") not in KINDS:
        raise UsageError(f"{path}: not a prefopt results file (expected kind {' or '.join(KINDS)})")
    return value


def flatten(results: dict[str, Any]) -> dict[str, Any]:
    """The metrics of one results file as one flat mapping (``accuracy[Δh=1]`` for groups)."""
    flat = dict(results.get("metrics") or {})
    for group, values in (results.get("by_delta_h") or {}).items():
        for name in _GROUP_METRICS:
            if name in values:
                flat[f"{name}[Δh={group}]"] = values[name]
    return flat


def load_result_set(path: str | Path) -> ResultSet:
    """A folder (with ``eval_results.json`` and/or ``judge_results.json``) or one file."""
    from prefopt.modeling.merge import read_merge_record, read_run_config, run_summary

    path = Path(path)
    if path.is_dir():
        files = [path / name for name in RESULT_FILES if (path / name).is_file()]
        if not files:
            raise UsageError(f"{path}: no {NO_RESULTS}; run prefopt eval first")
        folder = path
    elif path.is_file():
        files, folder = [path], path.parent
    else:
        raise UsageError(f"no such file or folder: {path}")
    metrics: dict[str, Any] = {}
    headline: list[str] = []
    run = None
    for file in files:
        results = _read(file)
        metrics.update(flatten(results))
        headline += [name for name in results.get("headline") or [] if name in metrics]
        run = run or results.get("run")
    if run is None:
        merged = read_merge_record(folder)
        run = (merged or {}).get("run") or run_summary(read_run_config(folder))
    generic = path.is_dir() or path.name in RESULT_FILES
    label = folder.resolve().name if generic else path.stem
    return ResultSet(str(label), files, run, metrics, headline)


def has_results(path: str | Path) -> bool:
    """Whether ``path`` is a file, or a folder holding a results file (not, e.g., the
    ``-merged`` folder ``prefopt merge`` writes)."""
    path = Path(path)
    return not path.is_dir() or any((path / n).is_file() for n in RESULT_FILES)


def load_result_sets(paths: list[str | Path], skipped: list[Path] | None = None) -> list[ResultSet]:
    """The result sets of ``paths``. With ``skipped`` (a list), folders without results are
    left out and appended to it instead of refused, unless none of ``paths`` has results."""
    if skipped is not None and any(has_results(p) for p in paths):
        skipped.extend(Path(p) for p in paths if not has_results(p))
        paths = [p for p in paths if has_results(p)]
    sets = [load_result_set(p) for p in paths]
    seen: dict[str, int] = {}
    for item in sets:  # keep labels unique so table rows and chart ticks can be told apart
        count = seen.get(item.label, 0)
        seen[item.label] = count + 1
        if count:
            item.label = f"{item.label} ({count + 1})"
    return sets


def choose_metrics(sets: list[ResultSet], wanted: list[str] | None) -> list[str]:
    available = [name for s in sets for name in s.metrics]
    known = list(dict.fromkeys(available))
    if wanted:
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise UsageError(f"unknown metric {', '.join(unknown)}; available: {', '.join(known)}")
        return list(wanted)
    chosen = [name for name in DEFAULT_METRICS if name in known]
    chosen += dict.fromkeys(name for s in sets for name in s.headline if name not in chosen)
    return chosen or known[:6]


def choose_x(sets: list[ResultSet], x: str = "auto") -> str | None:
    """The hyperparameter for the x axis, or ``None`` for run names."""
    if x == "name":
        return None
    if x != "auto":
        missing = [s.label for s in sets if not _is_number(s.hyperparameter(x))]
        if missing:
            raise UsageError(f"--x {x}: no numeric hyperparameter '{x}' for {', '.join(missing)}")
        return x
    if len(sets) < 2:
        return None
    names = list((sets[0].run or {}).get("hyperparameters") or {})
    for name in names:
        values = [s.hyperparameter(name) for s in sets]
        if all(_is_number(v) for v in values) and len(set(values)) > 1:
            return name
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def ordered(sets: list[ResultSet], x: str | None) -> list[ResultSet]:
    return sorted(sets, key=lambda s: s.hyperparameter(x)) if x else list(sets)


def format_value(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def table_rows(sets: list[ResultSet], metrics: list[str], x: str | None) -> list[list[str]]:
    rows = []
    for s in ordered(sets, x):
        row = [s.label, str((s.run or {}).get("algorithm") or "–")]
        if x:
            row.append(format_value(s.hyperparameter(x)))
        row += [format_value(s.metrics.get(name)) for name in metrics]
        rows.append(row)
    return rows


def _present(value: Any) -> bool:
    return _is_number(value) and value == value  # NaN is a missing value too


def plot(sets: list[ResultSet], metrics: list[str], x: str | None, out: str | Path) -> Path:
    """One panel per metric against ``x`` (lines) or run name (bars), each value labelled; a
    run without the metric is marked "n/a" (not drawn as 0), and a metric no run has gets no
    panel. Saved atomically."""
    from prefopt.extras import require

    require("matplotlib", "plot", "a chart (--plot)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--plot: expected a .png file name, got {out}")
    rows = ordered(sets, x)
    metrics = [name for name in metrics if any(_present(s.metrics.get(name)) for s in rows)]
    if not metrics:
        raise UsageError("--plot: none of the runs has a metric to chart")
    columns = min(len(metrics), 3)
    lines = (len(metrics) + columns - 1) // columns
    figure, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.2 * lines), squeeze=False)
    for index, name in enumerate(metrics):
        axis = axes[index // columns][index % columns]
        values = [s.metrics.get(name) for s in rows]
        points = [
            (i, s, v) for i, (s, v) in enumerate(zip(rows, values, strict=True)) if _present(v)
        ]
        if x:
            xs = [s.hyperparameter(x) for _, s, _ in points]
            ys = [v for *_, v in points]
            axis.plot(xs, ys, "o-")
            for at, value in zip(xs, ys, strict=True):
                axis.annotate(f"{value:.3g}", (at, value), textcoords="offset points",
                              xytext=(0, 5), ha="center", fontsize=8)  # fmt: skip
            for s, value in zip(rows, values, strict=True):
                if not _present(value):  # at its x, on the panel's floor
                    floor = ("data", "axes fraction")
                    axis.annotate("n/a", (s.hyperparameter(x), 0), xycoords=floor,
                                  ha="center", va="bottom", fontsize=8)  # fmt: skip
            axis.set_xlabel(x)
        else:
            bars = axis.bar([i for i, _, _ in points], [v for *_, v in points])
            axis.bar_label(bars, fmt="%.3g", fontsize=8)
            for i, value in enumerate(values):
                if not _present(value):
                    axis.annotate("n/a", (i, 0), ha="center", va="bottom", fontsize=8)
            axis.set_xticks(range(len(rows)), [s.label for s in rows], rotation=30, ha="right")
        axis.set_title(name)
        axis.grid(alpha=0.3)
    for index in range(len(metrics), lines * columns):
        axes[index // columns][index % columns].set_visible(False)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        figure.savefig(tmp, dpi=110)
        as_if_created(tmp)  # mkstemp makes 0600; an output gets normal permissions
        os.replace(tmp, out)
    finally:
        plt.close(figure)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
