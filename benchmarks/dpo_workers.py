"""What benchmarks/dpo_vs_trl.py runs in its subprocesses, one measurement each.

``python benchmarks/dpo_workers.py prefopt|trl|prep --model M --data F ...`` prints one JSON
object: the reference pass's and the training loop's wall and CPU seconds (timed inside the
tool, around its own functions), peak RSS and, on CUDA, peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from typing import Any

from trl_dpo_script import make_trainer


def warm_imports() -> None:
    """Import what PEFT pulls in lazily (bitsandbytes compiles kernels on import), so neither
    tool's timed section pays a one-time import."""
    import importlib.util

    import peft  # noqa: F401

    if importlib.util.find_spec("bitsandbytes") is not None:
        import bitsandbytes  # noqa: F401


def worker_prefopt(opts: argparse.Namespace) -> dict[str, Any]:
    from prefopt.cli.common import quiet_libraries
    from prefopt.config_layers import resolve_run_config
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
    from trl import DPOTrainer

    from prefopt.cli.common import quiet_libraries
    from prefopt.modeling.precision import resolve_precision

    quiet_libraries()
    warm_imports()
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
    bf16 = resolve_precision(opts.precision, {}).bf16
    trainer = make_trainer(
        opts.model, opts.data, opts.output, opts.steps, opts.batch, bf16, opts.trl_precompute
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
    from prefopt.config_layers import resolve_run_config
    from prefopt.registry import get_algorithm
    from prefopt.training.pair_data import load_pairs

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


def worker_main(opts: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    function = {"prefopt": worker_prefopt, "trl": worker_trl, "prep": worker_prep}[opts.worker]
    result = function(opts)
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("worker", choices=["prefopt", "trl", "prep"])
    for name in ("model", "data", "output", "tool", "algorithm", "reference", "layout"):
        parser.add_argument(f"--{name}")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--delta", type=float, default=0.0)
    parser.add_argument("--trl-precompute", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    worker_main(parse())
