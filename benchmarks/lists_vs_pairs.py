"""Lists in one row vs. the same data as pairs: 4 responses per prompt, 6 pairs each.

The ≈20M-parameter Llama of benchmarks/bench_data.py, prompt-heavy texts (≈200-token prompts,
≈60-token answers), 4 responses per prompt ranked 1–4. Three ways to train DPO on all 6 pairs
of every prompt, the same pairs per step (``--lists`` prompts a step), LoRA r16 all-linear,
fp32, the reference recomputed every step by all three:

- ``prefopt lists``: the list file, ``lists.pairs=all``: one row per prompt (prompt once, four
  answers), the 6 pairs indexed into its 4 log-probs;
- ``prefopt pairs``: the 6 pairs per prompt as a pair file (``prefopt data pairs --pairing all``),
  prefopt's packed pair layout (prompt once per pair);
- ``TRL``: the same pair file with TRL's DPOTrainer (benchmarks/trl_dpo_script.py): two padded
  rows per pair.

Reported per way: the tokens the model runs per step (from the tokenized data: a list's row;
a pair's prompt + both answers; TRL's two rows, each prompt + the longer answer, before batch
padding), the whole command's wall time and, for prefopt, its training loop (the run's own
timing). ``--repeats`` alternating repeats, medians, the load average beside every run.

    python benchmarks/lists_vs_pairs.py                 # 5 repeats, about 10 minutes on 2 cores
    python benchmarks/lists_vs_pairs.py --repeats 1 --steps 1 --prompts 8   # does it run
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

from bench_data import build_model, make_rows, write_rows
from whole_command import load_note, timed_process

WAYS = ("prefopt lists", "prefopt pairs", "TRL")
SCRIPT = Path(__file__).with_name("trl_dpo_script.py")


def list_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` prompts with 4 responses each (two prompt-heavy pair rows give the texts)."""
    rows = make_rows(2 * count, "prompt-heavy", seed)
    return [
        {"prompt": a["prompt"], "responses": [a["chosen"], a["rejected"], b["chosen"],
         b["rejected"]], "ranking": [1, 2, 3, 4]}
        for a, b in zip(rows[::2], rows[1::2], strict=True)
    ]  # fmt: skip


def pair_rows(lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from prefopt.data.lists import to_pair_records

    return [
        {key: pair[key] for key in ("prompt", "chosen", "rejected")}
        for row in lists
        for pair in to_pair_records(row, "all")
    ]


def tokens_per_step(model: Path, lists: list[dict[str, Any]], per_step: int) -> dict[str, float]:
    """Tokens a step runs through the model in each way (means over the data)."""
    from transformers import AutoTokenizer

    from prefopt.data.list_tokenize import tokenize_lists
    from prefopt.data.tokenize import TokenizationSettings

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenized, _ = tokenize_lists(enumerate(lists, 1), tokenizer, TokenizationSettings())
    from prefopt.data.lists import pairs_of

    row = pair = padded = 0
    for item in tokenized:
        prompt = len(item.prompt_ids)
        sizes = [len(ids) for ids in item.response_ids]
        row += prompt + sum(sizes)
        for a, b in pairs_of(item.quality, "all"):
            pair += prompt + sizes[a] + sizes[b]
            padded += 2 * (prompt + max(sizes[a], sizes[b]))
    scale = per_step / len(tokenized)
    # policy and reference: each way runs its tokens twice a step (the reference online)
    return {
        "prefopt lists": 2 * row * scale,
        "prefopt pairs": 2 * pair * scale,
        "TRL": 2 * padded * scale,
    }


def command(way: str, opts: argparse.Namespace, model: Path, data: Path, out: Path) -> list[str]:
    pairs_per_step = 6 * opts.lists
    if way == "TRL":
        return [
            sys.executable,
            str(SCRIPT),
            "--model",
            str(model),
            "--data",
            str(data),
            "--output",
            str(out),
            "--steps",
            str(opts.steps),
            "--batch",
            str(pairs_per_step),
        ]
    batch = opts.lists if way == "prefopt lists" else pairs_per_step
    sets = {
        "training.per_device_train_batch_size": batch, "training.logging_steps": opts.steps,
        "training.save_strategy": "no", "training.bf16": "false", "reference.mode": "online",
        "lists.pairs": "all", "data.prep_cache": "false",
    }  # fmt: skip
    found = Path(sys.executable).with_name("prefopt")
    base = [str(found)] if found.exists() else [sys.executable, "-m", "prefopt"]
    settings = [item for key, value in sets.items() for item in ("--set", f"{key}={value}")]
    return [*base, "train", "dpo", "--model", str(model), "--train-file", str(data),
            "--output-dir", str(out), "--max-steps", str(opts.steps), "-q", *settings]  # fmt: skip


def run_once(
    way: str, opts: argparse.Namespace, work: Path, files: dict[str, Path]
) -> dict[str, Any]:
    fresh = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    env = {**os.environ, "PREFOPT_CACHE_DIR": str(fresh / "cache"),
           "HF_DATASETS_CACHE": str(fresh / "hf"), "HF_HUB_OFFLINE": "1"}  # fmt: skip
    data = files["lists"] if way == "prefopt lists" else files["pairs"]
    result = timed_process(command(way, opts, files["model"], data, fresh / "out"), env)
    result.pop("stdout", None)
    metrics = fresh / "out" / "metrics.jsonl"
    if metrics.is_file():
        summary = json.loads(metrics.read_text().splitlines()[-1])["summary"]
        result["loop_s"] = summary["timing"]["train"]
    return result


def main(opts: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="lists-vs-pairs-"))
    model = build_model(work / "model")
    lists = list_rows(opts.prompts, seed=0)
    files = {
        "model": model,
        "lists": write_rows(work / "lists.jsonl", lists),
        "pairs": write_rows(work / "pairs.jsonl", pair_rows(lists)),
    }
    tokens = tokens_per_step(model, lists, opts.lists)
    runs: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    for repeat in range(opts.repeats):
        order = WAYS if repeat % 2 == 0 else WAYS[::-1]
        for way in order:
            result = run_once(way, opts, work, files)
            runs[way].append(result)
            loop = f", loop {result['loop_s']:.1f} s" if "loop_s" in result else ""
            print(f"  {way:14s} {result['wall_s']:6.1f} s{loop}  ({load_note(result)})", flush=True)
    print(f"\n{opts.prompts} prompts × 4 responses; {opts.lists} prompts (= {6 * opts.lists} pairs)"
          f" a step, {opts.steps} steps; medians of {opts.repeats}")  # fmt: skip
    print(f"{'way':14s} {'tokens/step':>12s} {'command s':>10s} {'loop s':>8s} {'× lists':>8s}")
    base = statistics.median(r["wall_s"] for r in runs["prefopt lists"])
    table = {}
    for way in WAYS:
        wall = statistics.median(r["wall_s"] for r in runs[way])
        loops = [r["loop_s"] for r in runs[way] if "loop_s" in r]
        loop = statistics.median(loops) if loops else None
        table[way] = {"tokens_per_step": tokens[way], "wall_s": wall, "loop_s": loop,
                      "walls": [round(r["wall_s"], 2) for r in runs[way]]}  # fmt: skip
        loop_text = f"{loop:8.2f}" if loop is not None else f"{'–':>8s}"
        print(f"{way:14s} {tokens[way]:12,.0f} {wall:10.2f} {loop_text} {wall / base:8.2f}")
    lists_loop, pairs_loop = table["prefopt lists"]["loop_s"], table["prefopt pairs"]["loop_s"]
    if lists_loop and pairs_loop:
        print(f"training loop, pairs / lists: {pairs_loop / lists_loop:.2f}×; tokens "
              f"{tokens['prefopt pairs'] / tokens['prefopt lists']:.2f}×")  # fmt: skip
    print(json.dumps(table))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--lists", type=int, default=4, help="prompts per step (6× pairs)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse())
