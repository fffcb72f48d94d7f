"""Whole-command timing for benchmarks/dpo_vs_trl.py: what a user waits for.

``prefopt train dpo`` run as a user runs it, and the equivalent TRL script
(benchmarks/trl_dpo_script.py), each a fresh process with an empty prefopt cache, an empty
datasets cache and a new output folder, timed from the start of the process to its exit:
imports, model loading, data preparation, the reference pass, training and saving all count.
Every run records the 1-minute load average before and after it and is flagged *busy* when
either is above the machine's CPU count, since another job then took time from it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("trl_dpo_script.py")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - no affinity call
        return os.cpu_count() or 1


def load_average() -> float:
    return os.getloadavg()[0]


def is_busy(*loads: float) -> bool:
    """A run's machine was busy when the load average beside it exceeded the CPU count."""
    return max(loads) > cpu_count()


def timed_process(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``command`` to its exit: wall and CPU seconds (its children too), the load average
    before and after, and the busy flag. A failing command raises with its stderr's end."""
    load_before = load_average()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_after = load_average()
    if proc.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {
        "wall_s": wall,
        "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "load_before": load_before,
        "load_after": load_after,
        "busy": is_busy(load_before, load_after),
        "stdout": proc.stdout,
    }


def load_note(run: dict[str, Any]) -> str:
    flag = "  BUSY" if run["busy"] else ""
    return f"load {run['load_before']:.2f} -> {run['load_after']:.2f}{flag}"


def prefopt_train_command(opts: Any, model: Path, data: Path, output: Path) -> list[str]:
    """``prefopt train dpo`` with the benchmark's settings, as a user would type it."""
    found = shutil.which("prefopt", path=str(Path(sys.executable).parent))
    sets = {
        "training.per_device_train_batch_size": opts.batch,
        "training.logging_steps": opts.steps,
        "training.save_strategy": "no",
        "training.learning_rate": 5e-5,
        "model.precision": opts.precision,
        "data.layout": opts.layout,
        "reference.mode": opts.reference_mode,
    }
    command = [found] if found else [sys.executable, "-m", "prefopt"]
    command += ["train", "dpo", "--model", str(model), "--train-file", str(data)]
    command += ["--output-dir", str(output), "--max-steps", str(opts.steps), "--quiet"]
    for key, value in sets.items():
        command += ["--set", f"{key}={value}"]
    return command


def trl_script_command(opts: Any, model: Path, data: Path, output: Path, bf16: bool) -> list[str]:
    command = [sys.executable, str(SCRIPT), "--model", str(model), "--data", str(data)]
    command += ["--output", str(output), "--steps", str(opts.steps), "--batch", str(opts.batch)]
    command += ["--bf16"] if bf16 else []
    command += ["--precompute"] if opts.trl_precompute else []
    return command


def run_whole_command(
    tool: str, opts: Any, work: Path, env: dict[str, str], data: Path, bf16: bool
) -> dict[str, Any]:
    """One whole-command run of ``tool`` with fresh caches and a new output folder."""
    fresh = tempfile.mkdtemp(prefix=f"whole-{tool}-", dir=work)
    env = {**env, "PREFOPT_CACHE_DIR": f"{fresh}/cache", "HF_DATASETS_CACHE": f"{fresh}/hf"}
    output = Path(fresh) / "out"
    if tool == "prefopt":
        command = prefopt_train_command(opts, opts.model_path, data, output)
    else:
        command = trl_script_command(opts, opts.model_path, data, output, bf16)
    result = timed_process(command, env)
    if tool == "prefopt":
        result["timing"] = run_timing(output / "metrics.jsonl")
        result["utilization"] = run_summary(output / "metrics.jsonl").get("utilization") or {}
    shutil.rmtree(fresh, ignore_errors=True)
    return result


def run_summary(metrics: Path) -> dict[str, Any]:
    """The closing ``{"summary": ...}`` line of a run's metrics.jsonl (``{}`` if none)."""
    try:
        last = metrics.read_text(encoding="utf-8").strip().splitlines()[-1]
        return dict(json.loads(last)["summary"])
    except (OSError, IndexError, KeyError, TypeError, ValueError):
        return {}


def run_timing(metrics: Path) -> dict[str, float]:
    """prefopt's own seconds per phase (startup, tokenize, model, reference, train, save, ...)
    from the closing ``{"summary": {"timing": ...}}`` line of a run's metrics.jsonl."""
    timing = run_summary(metrics).get("timing")
    return dict(timing) if isinstance(timing, dict) else {}


def timing_note(timing: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.1f}" for name, seconds in timing.items() if seconds >= 0.05)


def summarize(shape: str, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians, the ratio of medians (TRL's time over prefopt's: how many times faster
    prefopt is), the median of paired ratios, and the same over the runs not flagged busy."""
    row: dict[str, Any] = {}
    for tool in ("trl", "prefopt"):
        row[f"{tool}_wall_s"] = statistics.median(run["wall_s"] for run in runs[tool])
        row[f"{tool}_walls"] = [round(run["wall_s"], 2) for run in runs[tool]]
    row["ratio"] = row["trl_wall_s"] / row["prefopt_wall_s"]
    pairs = list(zip(runs["prefopt"], runs["trl"], strict=True))
    row["paired_ratios"] = [round(trl["wall_s"] / ours["wall_s"], 3) for ours, trl in pairs]
    row["paired_ratio"] = statistics.median(row["paired_ratios"])
    quiet = [
        trl["wall_s"] / ours["wall_s"] for ours, trl in pairs if not (ours["busy"] or trl["busy"])
    ]
    row["busy_repeats"] = len(pairs) - len(quiet)
    timings = [run["timing"] for run in runs["prefopt"] if run.get("timing")]
    phases = dict.fromkeys(name for timing in timings for name in timing)
    row["prefopt_timing_median_s"] = {
        name: statistics.median(timing.get(name, 0.0) for timing in timings) for name in phases
    }
    row["quiet_paired_ratio"] = statistics.median(quiet) if quiet else None
    quiet_note = (
        f", {row['quiet_paired_ratio']:.2f}x over the {len(quiet)} quiet ones" if quiet else ""
    )
    print(
        f"  {shape:17s} whole command, median wall: TRL {row['trl_wall_s']:.1f} s, prefopt "
        f"{row['prefopt_wall_s']:.1f} s -> prefopt {row['ratio']:.2f}x faster; paired ratios "
        f"{row['paired_ratios']} (median {row['paired_ratio']:.2f}x); "
        f"{row['busy_repeats']} of {len(pairs)} repeats busy{quiet_note}"
    )
    if row["prefopt_timing_median_s"]:
        phases_note = timing_note(row["prefopt_timing_median_s"])
        print(f"  {'':17s} prefopt's phases, median s: {phases_note}")
    figures = [run["utilization"] for run in runs["prefopt"] if run.get("utilization")]
    shares = [figure["mfu"] for figure in figures if figure.get("mfu") is not None]
    if shares:
        row["prefopt_mfu_median"] = statistics.median(shares)
        achieved = statistics.median(figure["achieved_tflops_per_s"] for figure in figures)
        peak = figures[0]["peak_tflops_per_s"]
        print(
            f"  {'':17s} prefopt's model FLOPs utilisation, median: "
            f"{100 * row['prefopt_mfu_median']:.1f}% ({achieved:.3g} of {peak:.3g} TFLOP/s, "
            f"{figures[0]['peak_source']}; training loop only)"
        )
    return row
