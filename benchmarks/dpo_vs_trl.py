"""prefopt vs TRL's DPOTrainer: training pairs/s, peak memory, a 5-Δ sweep, data preparation.

Builds a ≈20M-parameter Llama-style model locally (the tiny BPE tokenizer of
``prefopt.testing``, 8 layers, hidden 384, vocabulary 10240) and synthetic pairs of two shapes:
prompt-heavy (≈200-token prompts, ≈60-token answers) and completion-heavy (≈50 / ≈250). Both
tools train the same data with the same LoRA (r 16, alpha 32, all linear layers, no dropout),
precision, batch size and number of steps, no gradient checkpointing. Every measured run is a
separate subprocess (peak memory = its ``ru_maxrss``); runs alternate between the tools and
each measurement is repeated, medians reported.

- Training throughput: pairs trained / (reference pass + training loop) seconds. prefopt's
  number includes computing (and caching) the reference log-probs of the run's pairs from an
  empty cache; TRL recomputes the reference in every step (its default).
- Sweep: five prefopt ``factual`` runs with Δ = 0, 2.5, 5, 7.5, 10 sharing the reference and
  preparation caches against five TRL DPO runs; whole-process wall time of each run.
- Preparation: reading + validating + tokenizing N prompt-heavy pairs, cold and cached, against
  TRL's ``load_dataset`` + ``DPOTrainer._prepare_dataset`` (fresh datasets cache).

Run: ``python benchmarks/dpo_vs_trl.py`` (a few minutes; ``--steps``, ``--repeats``,
``--prep-pairs`` for longer runs, ``--skip-train/--skip-sweep/--skip-prep`` for parts).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPES = {  # words per field (mean); the tiny tokenizer gives ≈1.1 tokens a word
    "prompt-heavy": (182, 55),
    "completion-heavy": (45, 228),
}
MODEL = {
    "hidden_size": 384,
    "num_layers": 8,
    "num_heads": 6,
    "num_kv_heads": 2,
    "intermediate_size": 1024,
}
VOCAB = 10240
DELTAS = (0.0, 2.5, 5.0, 7.5, 10.0)
SWEEP = "prompt-heavy"


# -- setup ---------------------------------------------------------------------------------
def build_model(folder: Path) -> Path:
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoModelForCausalLM

    from prefopt.testing import build_tiny_tokenizer, tiny_model_config

    tokenizer = build_tiny_tokenizer()
    config = tiny_model_config("llama", vocab_size=VOCAB, tokenizer=tokenizer, **MODEL)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def make_rows(count: int, shape: str, seed: int) -> list[dict[str, Any]]:
    from prefopt.testing import COLOURS, HOMES, creature_names

    words = creature_names(24) + COLOURS + HOMES
    words += ["the", "a", "is", "of", "in", "and", "lives", "where", "what", "colour", "me"]
    rng = random.Random(seed)
    prompt_words, answer_words = SHAPES[shape]

    def text(mean: int) -> str:
        return " ".join(
            rng.choice(words) for _ in range(rng.randint(int(mean * 0.85), int(mean * 1.15)))
        )

    return [
        {
            "prompt": text(prompt_words),
            "chosen": text(answer_words),
            "rejected": text(answer_words),
            "h_w": 0,
            "h_l": rng.choice((0, 1)),
        }
        for _ in range(count)
    ]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


# -- workers (run in subprocesses) ----------------------------------------------------------
def warm_imports() -> None:
    """Import what PEFT pulls in lazily (bitsandbytes compiles kernels on import), so neither
    tool's timed section pays a one-time import."""
    import importlib.util

    import peft  # noqa: F401

    if importlib.util.find_spec("bitsandbytes") is not None:
        import bitsandbytes  # noqa: F401


def worker_prefopt(opts: argparse.Namespace) -> dict[str, Any]:
    from prefopt.cli.common import quiet_libraries
    from prefopt.config import resolve_run_config
    from prefopt.registry import get_algorithm
    from prefopt.training import reference_cache, run
    from prefopt.training.trainer import PreferenceTrainer

    timings: dict[str, float] = {
        "reference_s": 0.0,
        "train_s": 0.0,
        "reference_cpu_s": 0.0,
        "train_cpu_s": 0.0,
    }

    def timed(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                timings[f"{name}_s"] += time.perf_counter() - started
                timings[f"{name}_cpu_s"] += time.process_time() - cpu

        return wrapper

    # Time the reference pass and the training loop, as the Trainer's train() sees it.
    reference_cache.provide_for_run = timed("reference", reference_cache.provide_for_run)
    PreferenceTrainer.train = timed("train", PreferenceTrainer.train)
    spec = get_algorithm(opts.algorithm)
    flags = {
        "model.name_or_path": opts.model,
        "data.train": opts.data,
        "training.output_dir": opts.output,
        "training.max_steps": opts.steps,
        "training.per_device_train_batch_size": opts.batch,
        "training.logging_steps": opts.steps,
        "training.save_strategy": "no",
        "training.learning_rate": 5e-5,
    }
    if opts.algorithm == "factual":
        flags["algorithm.delta"] = opts.delta
    sets = [f"model.precision={opts.precision}", f"data.layout={opts.layout}"]
    sets += [f"reference.mode={opts.reference}"]
    config = resolve_run_config(spec, None, flags, sets)
    quiet_libraries()
    warm_imports()
    result = run.train(config, spec, quiet=True)
    return {**timings, "loss": result.final_metrics.get("loss")}


def worker_trl(opts: argparse.Namespace) -> dict[str, Any]:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from prefopt.cli.common import quiet_libraries
    from prefopt.modeling.logprobs import resolve_bf16

    quiet_libraries()
    warm_imports()
    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(opts.model)
    model = AutoModelForCausalLM.from_pretrained(
        opts.model, dtype=torch.float32, attn_implementation="sdpa"
    )
    bf16 = resolve_bf16(opts.precision, {})
    config = DPOConfig(
        output_dir=opts.output,
        per_device_train_batch_size=opts.batch,
        max_steps=opts.steps,
        logging_steps=opts.steps,
        save_strategy="no",
        report_to="none",
        learning_rate=5e-5,
        beta=0.1,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=False,
        disable_tqdm=True,
        seed=42,
        precompute_ref_log_probs=opts.trl_precompute,
    )
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    data = datasets.load_dataset("json", data_files=opts.data, split="train")
    data = data.remove_columns(["h_w", "h_l"])
    reference = {"s": 0.0, "cpu_s": 0.0}
    precompute = DPOTrainer._precompute_ref_logps

    def timed_precompute(self: Any, *args: Any, **kwargs: Any) -> Any:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return precompute(self, *args, **kwargs)
        finally:
            reference["s"] += time.perf_counter() - started
            reference["cpu_s"] += time.process_time() - cpu

    DPOTrainer._precompute_ref_logps = timed_precompute  # type: ignore[method-assign]
    trainer = DPOTrainer(
        model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=lora
    )
    started, cpu = time.perf_counter(), time.process_time()
    output = trainer.train()
    return {
        "reference_s": reference["s"],
        "train_s": time.perf_counter() - started,
        "reference_cpu_s": reference["cpu_s"],
        "train_cpu_s": time.process_time() - cpu,
        "loss": output.training_loss,
    }


def worker_prep(opts: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoTokenizer

    import prefopt.training.callbacks  # noqa: F401  (torch and transformers: loaded in any run)

    tokenizer = AutoTokenizer.from_pretrained(opts.model)
    if opts.tool == "trl":
        import datasets
        from trl import DPOConfig, DPOTrainer

        datasets.disable_progress_bars()
        config = DPOConfig(output_dir=opts.output, report_to="none", use_cpu=True, bf16=False)
        trainer = DPOTrainer.__new__(DPOTrainer)  # only the preparation, no model
        trainer._tokenizer = tokenizer
        started = time.perf_counter()
        data = datasets.load_dataset("json", data_files=opts.data, split="train")
        data = DPOTrainer._prepare_dataset(trainer, data, tokenizer, config, "train")
        return {"prep_s": time.perf_counter() - started, "pairs": len(data)}
    from prefopt.config import resolve_run_config
    from prefopt.registry import get_algorithm
    from prefopt.training.run import load_pairs

    spec = get_algorithm("dpo")
    config = resolve_run_config(
        spec, None, {"model.name_or_path": opts.model, "data.train": opts.data}
    )
    results = {}
    for attempt in ("cold", "cached"):
        started = time.perf_counter()
        pairs, _ = load_pairs(opts.data, "train", tokenizer, config, spec)
        results[f"prep_{attempt}_s"] = time.perf_counter() - started
    return {**results, "pairs": len(pairs)}


def run_worker(kind: str, env: dict[str, str], **options: Any) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; adds wall time and peak RSS."""
    command = [sys.executable, __file__, "--worker", kind]
    for name, value in options.items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):
            command += [flag] if value else []
        else:
            command += [flag, str(value)]
    started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    result["cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


def worker_main(opts: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    function = {"prefopt": worker_prefopt, "trl": worker_trl, "prep": worker_prep}[opts.worker]
    result = function(opts)
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


# -- the comparison ------------------------------------------------------------------------
def median(runs: list[dict[str, Any]], metric: str) -> float:
    return statistics.median(run[metric] for run in runs)


def compare_training(opts: argparse.Namespace, work: Path, env: dict[str, str]) -> dict[str, Any]:
    pairs = opts.steps * opts.batch
    common = {"model": work / "model", "steps": opts.steps, "batch": opts.batch}
    common.update(precision=opts.precision, output=work / "out")
    ours = {"layout": opts.layout, "reference": opts.reference_mode, "algorithm": "dpo"}
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for repeat in range(opts.repeats):
        for shape in opts.shapes:
            data = write_rows(work / f"{shape}.jsonl", make_rows(pairs, shape, seed=1))
            for tool in ("trl", "prefopt") if repeat % 2 == 0 else ("prefopt", "trl"):
                cold = {**env, "PREFOPT_CACHE_DIR": tempfile.mkdtemp(prefix="cache-", dir=work)}
                extra = ours if tool == "prefopt" else {"trl_precompute": opts.trl_precompute}
                result = run_worker(tool, cold, data=data, **common, **extra)
                result["pairs_per_s"] = pairs / (result["reference_s"] + result["train_s"])
                cpu = result["reference_cpu_s"] + result["train_cpu_s"]
                result["pairs_per_cpu_s"] = pairs / cpu
                results.setdefault((tool, shape), []).append(result)
                print(
                    f"  {shape:17s} {tool:8s} {result['pairs_per_s']:6.2f} pairs/s "
                    f"{result['pairs_per_cpu_s']:6.2f} pairs/CPU-s  "
                    f"peak {result['maxrss_mb']:5.0f} MB  "
                    f"(reference {result['reference_s']:.1f} s, train {result['train_s']:.1f} s)",
                    flush=True,
                )
    report: dict[str, Any] = {}
    print(f"\ntraining, {opts.steps} steps x {opts.batch} pairs, median of {opts.repeats}:")
    for shape in opts.shapes:
        row: dict[str, float] = {}
        for tool in ("trl", "prefopt"):
            for metric in ("pairs_per_s", "pairs_per_cpu_s", "maxrss_mb"):
                row[f"{tool}_{metric}"] = median(results[(tool, shape)], metric)
        row["ratio"] = row["prefopt_pairs_per_s"] / row["trl_pairs_per_s"]
        row["cpu_ratio"] = row["prefopt_pairs_per_cpu_s"] / row["trl_pairs_per_cpu_s"]
        # Each repeat runs the two tools back to back, so a repeat's ratio sees one load level.
        paired = zip(results[("prefopt", shape)], results[("trl", shape)], strict=True)
        row["paired_ratio"] = statistics.median(
            mine["pairs_per_s"] / trl["pairs_per_s"] for mine, trl in paired
        )
        print(
            f"  {shape:17s} pairs/s TRL {row['trl_pairs_per_s']:.2f}, "
            f"prefopt {row['prefopt_pairs_per_s']:.2f} -> {row['ratio']:.2f}x   "
            f"pairs/CPU-s TRL {row['trl_pairs_per_cpu_s']:.2f}, "
            f"prefopt {row['prefopt_pairs_per_cpu_s']:.2f} -> {row['cpu_ratio']:.2f}x   "
            f"median of paired ratios {row['paired_ratio']:.2f}x   "
            f"peak RSS TRL {row['trl_maxrss_mb']:.0f} MB, prefopt {row['prefopt_maxrss_mb']:.0f} MB"
        )
        report[shape] = row
    return report


def compare_sweep(opts: argparse.Namespace, work: Path, env: dict[str, str]) -> dict[str, Any]:
    data = write_rows(work / "sweep.jsonl", make_rows(opts.sweep_steps * opts.batch, SWEEP, 2))
    env = {**env, "PREFOPT_CACHE_DIR": tempfile.mkdtemp(prefix="sweep-cache-", dir=work)}
    common = {"model": work / "model", "steps": opts.sweep_steps, "batch": opts.batch}
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
    common = {"data": data, "model": work / "model", "output": work / "out"}
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
    model = build_model(work / "model")
    print(
        f"model: {model} (20.5M parameters), precision {opts.precision}, "
        f"{opts.threads} thread(s) a run, load average {os.getloadavg()}"
    )
    threads = str(opts.threads)
    env = {"HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": threads}
    env.update(MKL_NUM_THREADS=threads, HF_DATASETS_CACHE=str(work / "hf-datasets"))
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
    parser.add_argument("--repeats", type=int, default=1, help="runs per tool and shape")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--layout", default="auto", help="prefopt's data.layout")
    parser.add_argument("--reference-mode", default="cached", help="prefopt's reference.mode")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per run (1 keeps timings stable on a shared machine)",
    )
    parser.add_argument("--sweep-steps", type=int, default=2, help="steps of each sweep run")
    parser.add_argument("--prep-pairs", type=int, default=5000, help="pairs to prepare")
    parser.add_argument("--prep-repeats", type=int, default=1)
    parser.add_argument(
        "--trl-precompute",
        action="store_true",
        help="TRL with precompute_ref_log_probs=True (its own, datasets-cached reference pass)",
    )
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--skip-prep", action="store_true")
    parser.add_argument("--workdir", default=None, help="keep the model and data here")
    parser.add_argument("--json-out", default=None)
    # worker-only options
    parser.add_argument("--worker", choices=["prefopt", "trl", "prep"], help=argparse.SUPPRESS)
    for name in ("model", "data", "output", "tool", "algorithm", "reference"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    parser.add_argument("--delta", type=float, default=0.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = parse()
    if options.worker:
        worker_main(options)
    else:
        main(options)
