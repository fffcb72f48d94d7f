"""prefopt's CUDA paths on one GPU, in one process, in five minutes or less.

    python benchmarks/gpu_check.py            # on the GPU machine (no network needed)
    python benchmarks/gpu_check.py --dry-run  # anywhere: every step that can run on the CPU

Each step's result is appended to ``$OUT/gpu_check.jsonl`` (else ``gpu_check_out/``) as soon
as it finishes, so a timeout loses only the step it interrupted. A step is skipped when the
time left is under its estimate. The models are put on the device explicitly (no
``torch.set_default_device``), so a placement bug shows as one.

Steps: versions and the device; the architecture matrix in bf16 (lean LM head against the
model's own logits, with a 152k-vocabulary Qwen2 shape, Granite and Gemma 2); every layout on
sdpa, eager and flex_attention against the padded layout (FlexAttention's recompiles
counted), for pairs, lists of responses and per-turn conversations; one
``prefopt.train("dpo")`` on defaults (step-1 loss ln 2, finite gradients, host syncs over 2
steps); QLoRA for 2 steps; batched greedy generation against one prompt at a time; and
``benchmarks/dpo_vs_trl.py`` for prefopt vs TRL pairs/s and peak memory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 290.0
#: (step, seconds it is expected to take on the GPU machine); skipped with less time left.
ESTIMATES = {
    "versions": 5,
    "architectures": 40,
    "layouts": 40,
    "shared_rows": 20,
    "train_defaults": 30,
    "qlora": 30,
    "generation": 15,
    "vs_trl": 120,
}


class Check:
    """Runs steps under one deadline and writes each result the moment it is known."""

    def __init__(self, out: Path, device: str, dry: bool) -> None:
        self.out = out / "gpu_check.jsonl"
        self.device = device
        self.dry = dry
        self.started = time.perf_counter()
        self.failed = 0
        out.mkdir(parents=True, exist_ok=True)
        self.out.write_text("", encoding="utf-8")

    def left(self) -> float:
        return BUDGET_S - (time.perf_counter() - self.started)

    def step(self, name: str, function: Callable[[Check], dict[str, Any]]) -> None:
        record: dict[str, Any] = {"step": name, "device": self.device, "dry_run": self.dry}
        if self.left() < ESTIMATES[name]:
            record.update(status="skipped", reason=f"{self.left():.0f} s left")
        else:
            began = time.perf_counter()
            try:
                record.update(status="ok", **function(self))
            except Exception as exc:  # one failing step must not cost the others
                self.failed += 1
                record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
                record["traceback"] = traceback.format_exc(limit=6)
            record["seconds"] = round(time.perf_counter() - began, 2)
        with self.out.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
        print(json.dumps({k: v for k, v in record.items() if k != "traceback"}, default=str))


# -- steps ---------------------------------------------------------------------------------
def versions(check: Check) -> dict[str, Any]:
    import importlib

    import torch

    found: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("prefopt", "transformers", "peft", "accelerate", "trl", "bitsandbytes"):
        try:
            found[name] = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError:
            found[name] = None
    if check.device == "cuda":
        found["gpu"] = torch.cuda.get_device_name(0)
        found["bf16"] = torch.cuda.is_bf16_supported()
        found["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return found


def _pairs_batch(layout: str, device: str) -> Any:
    from prefopt.data.collate import make_collator
    from prefopt.testing.architectures import matrix_pairs, tiny_tokenizer

    batch = make_collator(layout, tiny_tokenizer().pad_token_id)(matrix_pairs())
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


def architectures(check: Check) -> dict[str, Any]:
    """Lean against full-logits log-probs under bf16 autocast, per family (max |Δ| in nats)."""
    import torch

    from prefopt.modeling.logprobs import sequence_logps
    from prefopt.testing.architectures import ARCHITECTURES, build_architecture_model

    names = [a.name for a in ARCHITECTURES]
    if check.dry:
        names = [n for n in names if any(k in n for k in ("llama", "qwen2", "granite", "gemma"))]
    batch = _pairs_batch("padded", check.device)
    result: dict[str, Any] = {}
    for name in names:
        try:
            model = build_architecture_model(name, None).to(check.device)
        except ValueError as exc:
            result[name] = f"not built: {exc}"
            continue
        with torch.no_grad(), torch.autocast(check.device, dtype=torch.bfloat16):
            lean, _ = sequence_logps(model, batch)
            full, _ = sequence_logps(model, batch, lean=False)
        result[name] = float((lean - full).abs().max())
    result["qwen2-152k-vocab"] = _large_vocabulary(check)
    return {"max_abs_lean_minus_full": result}


def _large_vocabulary(check: Check) -> float:
    """A Qwen2 shape with its real 151,936-token vocabulary: the lean head's chunks at scale."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from prefopt.modeling.logprobs import sequence_logps

    config = Qwen2Config(
        vocab_size=151_936, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(check.device).eval()
    rows = 2 if check.dry else 8
    ids = torch.randint(0, 151_936, (rows, 96), device=check.device)
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "completion_mask": torch.cat(
            [torch.zeros(rows, 32, dtype=torch.long), torch.ones(rows, 64, dtype=torch.long)], 1
        ).to(check.device),
    }
    with torch.no_grad(), torch.autocast(check.device, dtype=torch.bfloat16):
        lean, _ = sequence_logps(model, batch)
        full, _ = sequence_logps(model, batch, lean=False)
    return float((lean - full).abs().max())


def layouts(check: Check) -> dict[str, Any]:
    """prefix and packed against padded, per attention implementation (fp32, max |Δ|), and
    FlexAttention's dynamo recompiles over the lot."""
    import torch

    from prefopt.modeling.logprobs import sequence_logps
    from prefopt.testing.architectures import build_architecture_model

    attentions = ["sdpa", "eager"] + ([] if check.dry else ["flex_attention"])
    result: dict[str, Any] = {}
    from torch._dynamo.utils import counters  # FlexAttention's create_block_mask is compiled

    for attention in attentions:
        model = build_architecture_model("llama", attention).to(check.device)
        with torch.no_grad():
            padded, _ = sequence_logps(model, _pairs_batch("padded", check.device))
            for layout in ("prefix", "packed"):
                other, _ = sequence_logps(model, _pairs_batch(layout, check.device))
                result[f"{attention}/{layout}"] = float((other - padded).abs().max())
    result["dynamo_recompiles"] = sum(counters["recompiles"].values())
    return {"max_abs_vs_padded": result}


def _on(batch: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


def shared_rows(check: Check) -> dict[str, Any]:
    """Lists of 2-4 responses and conversations of 1-3 preference turns (the tree mask with
    per-token forks) in the prefix and packed layouts against their padded layout (one row
    per response; each turn as its own pair), per attention implementation (fp32, max |Δ|)."""
    import torch

    from prefopt.data.list_collate import ListCollator
    from prefopt.data.list_tokenize import tokenize_lists
    from prefopt.data.tokenize import TokenizationSettings
    from prefopt.data.turns import TurnCollator, tokenize_turns
    from prefopt.modeling.logprobs import sequence_logps
    from prefopt.testing import synthetic_conversations, synthetic_lists
    from prefopt.testing.architectures import build_architecture_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    pad, settings = tokenizer.pad_token_id, TokenizationSettings()
    lists, _ = tokenize_lists(enumerate(synthetic_lists(6, seed=1), 1), tokenizer, settings)
    turns, _ = tokenize_turns(list(enumerate(synthetic_conversations(6, seed=2), 1)),
                              tokenizer, settings)  # fmt: skip
    kinds = {"lists": (ListCollator, lists), "turns": (TurnCollator, turns)}
    attentions = ["sdpa", "eager"] + ([] if check.dry else ["flex_attention"])
    result: dict[str, Any] = {}
    for attention in attentions:
        model = build_architecture_model("llama", attention).to(check.device)
        with torch.no_grad():
            for kind, (collator, items) in kinds.items():
                padded, _ = sequence_logps(model, _on(collator("padded", pad)(items), check.device))
                for layout in ("prefix", "packed"):
                    batch = _on(collator(layout, pad)(items), check.device)
                    other, _ = sequence_logps(model, batch)
                    result[f"{attention}/{kind}/{layout}"] = float((other - padded).abs().max())
    return {"max_abs_vs_padded": result}


def _tiny_run_files(folder: Path) -> tuple[Path, Path]:
    from prefopt.testing import synthetic_pairs, tiny_model_dir, write_pairs

    model = tiny_model_dir(folder / "model", arch="llama")
    data = write_pairs(folder / "pairs.jsonl", synthetic_pairs(32))
    return model, data


def train_defaults(check: Check) -> dict[str, Any]:
    """``prefopt.train("dpo")`` on defaults: step 1 at ln 2, finite gradients, host syncs."""
    import warnings

    import torch

    import prefopt

    folder = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    model, data = _tiny_run_files(folder)
    syncs = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if check.device == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            run = prefopt.train(
                "dpo", model=model, train_file=data, output_dir=folder / "run", max_steps=2,
                training={"logging_steps": 1}, **{"reference.cache_dir": str(folder / "cache")},
            )  # fmt: skip
        finally:
            if check.device == "cuda":
                torch.cuda.set_sync_debug_mode("default")
        syncs = sum("synchroniz" in str(w.message).lower() for w in caught)
    lines = (folder / "run" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in lines if '"loss"' in line]
    return {
        "first_loss_minus_ln2": steps[0]["loss"] - math.log(2),
        "grad_norms_finite": all(math.isfinite(s["grad_norm"]) for s in steps),
        "host_syncs_2_steps": syncs if check.device == "cuda" else None,
        "utilization": run.utilization,
    }


def qlora(check: Check) -> dict[str, Any]:
    import importlib.util

    import prefopt

    if importlib.util.find_spec("bitsandbytes") is None:
        return {"skipped": "bitsandbytes is not installed"}
    folder = Path(tempfile.mkdtemp(prefix="gpu-check-qlora-"))
    model, data = _tiny_run_files(folder)
    run = prefopt.train(
        "dpo", model=model, train_file=data, output_dir=folder / "run", max_steps=2,
        training={"logging_steps": 1}, **{"model.load_in_4bit": True},
    )  # fmt: skip
    return {"steps": run.steps, "final_loss": run.final_metrics.get("loss")}


def generation(check: Check) -> dict[str, Any]:
    """Greedy answers of a left-padded batch against the same prompts one at a time."""
    from prefopt.eval.generate import GenerationSettings, generate_batch
    from prefopt.testing.architectures import build_architecture_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = build_architecture_model("llama", "sdpa").to(check.device)
    prompts = [tokenizer.encode(text) for text in ("a zora is", "the long question of a", "x")]
    settings = GenerationSettings(max_new_tokens=12)
    batched = [answer for answer, _, _ in generate_batch(model, tokenizer, prompts, settings, 0)]
    alone = [generate_batch(model, tokenizer, [p], settings, 0)[0][0] for p in prompts]
    return {"equal": batched == alone, "batched": batched, "one_at_a_time": alone}


def vs_trl(check: Check) -> dict[str, Any]:
    """``benchmarks/dpo_vs_trl.py``: prefopt vs TRL pairs/s and peak memory."""
    out = Path(tempfile.mkdtemp(prefix="gpu-check-bench-")) / "bench.json"
    small = ["--steps", "1", "--batch", "2", "--repeats", "1", "--shapes", "prompt-heavy"]
    size = small if check.dry else ["--steps", "4", "--batch", "8", "--repeats", "1"]
    command = [
        sys.executable, str(ROOT / "benchmarks" / "dpo_vs_trl.py"), *size, "--skip-prep",
        "--skip-sweep", "--skip-whole-command", "--json-out", str(out),
    ]  # fmt: skip
    if check.device == "cuda":
        command += ["--device", "cuda"]
    limit = max(10.0, check.left() - 5)
    done = subprocess.run(command, capture_output=True, text=True, timeout=limit)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-800:])
    return {"report": json.loads(out.read_text()) if out.is_file() else done.stdout[-2000:]}


STEPS: list[tuple[str, Callable[[Check], dict[str, Any]]]] = [
    ("versions", versions),
    ("architectures", architectures),
    ("layouts", layouts),
    ("shared_rows", shared_rows),
    ("train_defaults", train_defaults),
    ("qlora", qlora),
    ("generation", generation),
    ("vs_trl", vs_trl),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, small")
    parser.add_argument("--only", nargs="+", choices=[name for name, _ in STEPS])
    opts = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = "cpu"
    if not opts.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device: run with --dry-run on a CPU", file=sys.stderr)
            return 2
        device = "cuda"
    check = Check(Path(os.environ.get("OUT") or ROOT / "gpu_check_out"), device, opts.dry_run)
    for name, function in STEPS:
        if opts.only is None or name in opts.only:
            check.step(name, function)
    print(f"results: {check.out} ({check.failed} failed)")
    return 1 if check.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
