"""``prefopt report``: one self-contained HTML page about one or several runs.

The page reads what a run leaves in its folder: ``metrics.jsonl`` (the logged steps, the
health findings, the closing summary with timing and utilisation), ``prefopt_config.yaml``
and the evaluation results (``eval_results.json``, ``judge_results.json``,
``harness_results.json``). It shows, for all runs overlaid (a Δ sweep side by side):

- the curves: loss, reward margins and accuracies (train solid, eval dashed), the log-probs of
  chosen and rejected answers under the policy (solid) and the reference (dashed), β, learning
  rate, gradient norm and throughput;
- the health findings with their advice (:mod:`prefopt.training.health`);
- the evaluation results, the timing breakdown and each run's config.

Everything is inline (SVG charts from :mod:`prefopt.eval.svg_chart`, CSS, no script): the
file opens offline, can be mailed, and shows the same in any browser.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from prefopt.errors import UsageError
from prefopt.eval.svg_chart import PALETTE, LegendEntry, Series, line_chart

METRICS = "metrics.jsonl"
#: The legend's colour for a kind of curve (train, eval, ...) when colours stand for runs.
GREY = "#555555"
CONFIG = "prefopt_config.yaml"

#: The charts: id, title, y label, and the curves: (logged key, dashed, what it is).
CHARTS: tuple[tuple[str, str, str, tuple[tuple[str, bool, str], ...]], ...] = (
    ("loss", "Loss", "loss", (("loss", False, "train"), ("eval_loss", True, "eval"))),
    (
        "margins",
        "Reward margin (chosen − rejected)",
        "reward",
        (("rewards/margins", False, "train"), ("eval_rewards/margins", True, "eval")),
    ),
    (
        "accuracies",
        "Reward accuracy",
        "share of pairs",
        (("rewards/accuracies", False, "train"), ("eval_rewards/accuracies", True, "eval")),
    ),
    (
        "chosen",
        "Chosen log-probs: policy vs reference",
        "nats per answer",
        (("logps/chosen", False, "policy"), ("logps/ref_chosen", True, "reference")),
    ),
    (
        "rejected",
        "Rejected log-probs: policy vs reference",
        "nats per answer",
        (("logps/rejected", False, "policy"), ("logps/ref_rejected", True, "reference")),
    ),
    ("beta", "β", "β", (("beta", False, ""),)),
    ("learning_rate", "Learning rate", "learning rate", (("learning_rate", False, ""),)),
    ("grad_norm", "Gradient norm", "norm", (("grad_norm", False, ""),)),
    ("throughput", "Throughput", "pairs / s", (("pairs_per_second", False, ""),)),
)


@dataclass
class RunRecord:
    """What one run folder says about the run."""

    path: Path
    name: str
    config_text: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    logs: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    #: The number of a last line cut short (a run still writing, or killed), left out.
    torn_line: int = 0

    def series(self, key: str) -> list[tuple[float, float | None]]:
        """``(step, value)`` of every logged step that has ``key``."""
        points = []
        for log in self.logs:
            if key in log:
                value = log[key]
                number = float(value) if isinstance(value, (int, float)) else None
                points.append((float(log["step"]), number))
        return points

    def last(self, key: str) -> Any:
        for log in reversed(self.logs):
            if key in log:
                return log[key]
        return None


def run_folders(paths: list[Path]) -> list[Path]:
    """Each path as a run folder (it has ``metrics.jsonl``), or a folder of runs (a sweep's
    output folder: its sub-folders that are runs, by name)."""
    found: list[Path] = []
    for path in paths:
        if (path / METRICS).is_file():
            found.append(path)
        elif path.is_dir():
            inside = sorted((p for p in path.iterdir() if (p / METRICS).is_file()), key=natural_key)
            if not inside:
                raise UsageError(f"{path}: no {METRICS} here or in its sub-folders: not a run")
            found.extend(inside)
        else:
            raise UsageError(f"no such run folder: {path}")
    return found


def natural_key(path: Path) -> list[Any]:
    """``delta5`` before ``delta20``: digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def load_run(path: Path) -> RunRecord:
    """The run in ``path``; a damaged ``metrics.jsonl`` line is named, as data errors are."""
    import yaml

    record = RunRecord(path, path.resolve().name)
    metrics = path / METRICS
    lines = metrics.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # a line cut short: a run still writing, or killed
                record.torn_line = number
                continue
            raise UsageError(f"{metrics}:{number}: invalid JSON ({exc.msg})") from None
        if "summary" in item:
            record.summary = item["summary"]
        elif item.get("event") == "health":
            record.findings.append(item)
        elif "step" in item:
            record.logs.append(item)
    config = path / CONFIG
    if config.is_file():
        record.config_text = config.read_text(encoding="utf-8")
        loaded = yaml.safe_load(record.config_text)
        record.config = loaded if isinstance(loaded, dict) else {}
    record.results = _results(path)
    return record


def _results(path: Path) -> dict[str, Any]:
    from prefopt.eval.compare import has_results, load_result_set

    folder_has_results = path.is_dir() and has_results(path)
    return load_result_set(path).metrics if folder_has_results else {}


# -- the page --------------------------------------------------------------------------------
def distinct_names(runs: list[RunRecord]) -> None:
    """Runs in folders of the same name (``a/delta5``, ``b/delta5``) get their parent's name
    in front (``a/delta5``), so that each keeps its own label and colour."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.name] = counts.get(run.name, 0) + 1
    for run in runs:
        if counts[run.name] > 1:
            run.name = f"{run.path.resolve().parent.name}/{run.name}"
    seen: dict[str, int] = {}
    for run in runs:  # still the same (a/x and a/x given twice): number them
        seen[run.name] = seen.get(run.name, 0) + 1
        if seen[run.name] > 1:
            run.name = f"{run.name} #{seen[run.name]}"


def build_report(runs: list[RunRecord], title: str = "prefopt report") -> str:
    distinct_names(runs)
    colors = {run.name: PALETTE[index % len(PALETTE)] for index, run in enumerate(runs)}
    charts = [_chart(spec, runs, colors) for spec in CHARTS]
    drawn = [chart for chart in charts if chart]
    curves = (
        f'<div class="charts">{"".join(drawn)}</div>'
        if drawn
        else '<p class="meta">No logged training step yet (training.logging_steps is larger than '
        "the steps run, or the run stopped before its first log).</p>"
    )
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{len(runs)} run{"s" if len(runs) != 1 else ""} · generated '
        f"{generated} by prefopt</p>",
        _overview(runs, colors),
        "<h2>Health</h2>",
        _findings(runs),
        "<h2>Curves</h2>",
        curves,
        _evaluation(runs),
        "<h2>Timing</h2>",
        _timing(runs),
        "<h2>Configuration</h2>",
        _configs(runs),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _chart(
    spec: tuple[str, str, str, tuple[tuple[str, bool, str], ...]],
    runs: list[RunRecord],
    colors: dict[str, str],
) -> str:
    """One chart; its legend names each run by colour (several runs) and each kind of curve by
    its line (solid train, dashed eval or reference)."""
    chart_id, title, y_label, curves = spec
    series = []
    kinds: dict[str, bool] = {}
    for run in runs:
        for key, dashed, what in curves:
            points = run.series(key)
            if any(value is not None for _, value in points):
                label = " · ".join(part for part in (run.name, what) if part)
                series.append(Series(label, points, colors[run.name], dashed))
                if what:
                    kinds[what] = dashed
    if not series:
        return ""  # nothing logged it (β of a plain DPO run): no empty chart
    shown = [run for run in runs if any(s.color == colors[run.name] for s in series)]
    several = len(runs) > 1
    legend = [LegendEntry(run.name, colors[run.name]) for run in shown] if several else []
    ink = GREY if several else colors[runs[0].name]
    if len(kinds) > 1 or not several:
        legend += [LegendEntry(what, ink, dashed) for what, dashed in kinds.items()]
    return f"<figure>{line_chart(title, series, 'step', y_label, chart_id, legend)}</figure>"


def _overview(runs: list[RunRecord], colors: dict[str, str]) -> str:
    rows = []
    for run in runs:
        model = (run.config.get("model") or {}).get("name_or_path") or "?"
        steps = run.summary.get("global_step") or (run.logs[-1]["step"] if run.logs else 0)
        cells = [
            f'<span class="swatch" style="background:{colors[run.name]}"></span>{escape(run.name)}',
            escape(str(run.config.get("algorithm_name", "?"))),
            escape(str(model)),
            str(steps),
            _number(run.last("loss")),
            _number(run.last("rewards/accuracies")),
            _number(run.last("eval_rewards/accuracies")),
            str(len(run.findings)),
        ]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    head = "".join(
        f"<th>{name}</th>"
        for name in (
            "run", "algorithm", "model", "steps", "final loss", "train accuracy",
            "eval accuracy", "findings",
        )
    )  # fmt: skip
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _findings(runs: list[RunRecord]) -> str:
    torn = "".join(
        f'<p class="meta">{escape(run.name)}: the last line of metrics.jsonl (line '
        f"{run.torn_line}) is cut short and was left out: the run is still writing it, or was "
        "stopped.</p>"
        for run in runs
        if run.torn_line
    )
    if not any(run.findings for run in runs):
        return torn + '<p class="ok">No health finding in any run.</p>'
    items = []
    for run in runs:
        for finding in run.findings:
            items.append(
                f'<li><span class="rule">{escape(str(finding.get("rule", "")))}</span> '
                f'<span class="where">{escape(run.name)}, step {finding.get("step")}</span>'
                f"<p>{escape(str(finding.get('message', '')))}.</p>"
                f'<p class="advice">{_code(str(finding.get("advice", "")))}</p></li>'
            )
    return torn + f'<ul class="findings">{"".join(items)}</ul>'


def _evaluation(runs: list[RunRecord]) -> str:
    names: list[str] = []
    for run in runs:
        names += [name for name in run.results if name not in names]
    if not names:
        return ""
    from prefopt.eval.compare import format_value

    head = "<th>metric</th>" + "".join(f"<th>{escape(run.name)}</th>" for run in runs)
    rows = []
    for name in names:
        cells = "".join(f"<td>{escape(format_value(run.results.get(name)))}</td>" for run in runs)
        rows.append(f"<tr><td>{escape(name)}</td>{cells}</tr>")
    return (
        "<h2>Evaluation</h2>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _timing(runs: list[RunRecord]) -> str:
    phases: list[str] = []
    for run in runs:
        phases += [p for p in (run.summary.get("timing") or {}) if p not in phases]
    if not phases:
        return '<p class="meta">No timing recorded (the runs did not finish).</p>'
    head = "<th>seconds</th>" + "".join(f"<th>{escape(run.name)}</th>" for run in runs)
    rows = []
    for phase in phases:
        cells = "".join(
            f"<td>{_number((run.summary.get('timing') or {}).get(phase))}</td>" for run in runs
        )
        rows.append(f"<tr><td>{escape(phase)}</td>{cells}</tr>")
    extra = [
        ("precision", lambda run: escape(str(run.summary.get("precision", "–")))),
        ("MFU", lambda run: _share((run.summary.get("utilization") or {}).get("mfu"))),
    ]
    for label, cell in extra:
        rows.append(f"<tr><td>{label}</td>{''.join(f'<td>{cell(run)}</td>' for run in runs)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _configs(runs: list[RunRecord]) -> str:
    blocks = []
    for run in runs:
        text = run.config_text or "(no prefopt_config.yaml in the run folder)"
        blocks.append(
            f'<details><summary>{escape(run.name)} <span class="where">{escape(str(run.path))}'
            f"</span></summary><pre>{escape(text)}</pre></details>"
        )
    return "".join(blocks)


def _code(text: str) -> str:
    """Escaped text with its `backquoted` commands as ``<code>``."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    return f"{value:.4g}"


def _share(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "–"


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d1d1f;margin:24px auto;
max-width:1120px;padding:0 16px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #ddd;
padding-bottom:4px}.meta,.where{color:#666;font-size:12px}
table{border-collapse:collapse;margin:8px 0}th,td{padding:4px 10px;border-bottom:1px solid #eee;
text-align:right}th:first-child,td:first-child{text-align:left}th{background:#f6f6f6}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:12px}
figure{margin:0;border:1px solid #e4e4e4;border-radius:6px;padding:4px}
svg.chart{width:100%;height:auto;display:block}
svg .plot{fill:#fff;stroke:#ccc}svg .grid{stroke:#eee}
svg text{font:11px system-ui,sans-serif;fill:#444}svg .chart-title{font-size:13px;font-weight:600;
fill:#1d1d1f}svg .ytick{text-anchor:end}svg .xtick,svg .xlabel{text-anchor:middle}
svg .ylabel{text-anchor:middle}svg .empty{text-anchor:middle;fill:#999}
.findings{padding-left:18px}.findings li{margin-bottom:10px}.findings p{margin:2px 0}
.rule{font-weight:600;color:#b35900}.advice{color:#333;font-style:italic}.ok{color:#2a7a2a}
code{background:#f3f3f3;padding:0 3px;border-radius:3px;font-style:normal}
details{margin:6px 0}pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}
"""
