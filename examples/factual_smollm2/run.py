"""The Factual-DPO claim in miniature, on SmolLM2-135M-Instruct, through the prefopt CLI.

From real-world facts (``facts.py``) this builds a preference set in which a share of the
training pairs prefers a fluent but wrong answer (``h_w = 1, h_l = 0``) and the others the
correct one (``h_w = 0, h_l = 1``), plus held-out pairs and questions on *other* facts. From
the same base it then trains, with the same steps, learning rate, β and seed:

- ``dpo``: DPO on the pairs as labelled;
- ``dpo_flipped``: DPO on the pairs put in the factual orientation (``prefopt data flip``);
- ``factual/smollm2_delta<Δ>``: Factual-DPO on the flipped pairs, one run per Δ (``prefopt sweep``);

and evaluates every model and the base on the held-out set: preference accuracy and the
hallucination-preference rate (``prefopt eval pairs``), and the answer accuracy of greedy
generations (``prefopt eval generate``) scored by the rule-based gold judge (``prefopt eval
judge --judge gold``). Every step is a ``python -m prefopt ...`` subprocess, the commands a user
would type (they are written to ``OUT/commands.sh``). Outputs in ``OUT``: ``results.md`` (table
and setup), ``results.json``, ``factual_smollm2.png`` (``prefopt eval compare --plot``).

    python examples/factual_smollm2/run.py --out runs/factual_smollm2   # 26 min on 2 busy cores
    python examples/factual_smollm2/run.py --quick --out /tmp/fs_quick   # a few minutes

Measured results and their reading: docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prefopt.testing.facts import Fact, all_facts, chat_pair, split_facts, training_pairs

MODEL_SHORT = "smollm2"
PLOT_METRICS = ("accuracy", "hallucination_preference_rate", "hallucination_rate")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def build_data(
    folder: Path, train: list[Fact], heldout: list[Fact], wrong_share: float, seed: int
) -> dict[str, Any]:
    """Train pairs (a seeded ``wrong_share`` prefer the wrong answer), held-out pairs in the
    factual orientation and held-out questions with their gold answers."""
    rows = training_pairs(train, wrong_share, seed)
    write_jsonl(folder / "train.jsonl", rows)
    write_jsonl(
        folder / "heldout_pairs.jsonl",
        [chat_pair(fact, f"heldout-{i}", False) for i, fact in enumerate(heldout)],
    )
    questions = [
        {
            "id": f"heldout-{i}",
            "category": fact.category,
            "prompt": [{"role": "user", "content": fact.question}],
            "gold": fact.answer,
            "aliases": list(fact.aliases),
        }
        for i, fact in enumerate(heldout)
    ]
    write_jsonl(folder / "heldout_questions.jsonl", questions)
    return {
        "train_pairs": len(rows),
        "train_prefer_wrong": sum(row["h_w"] == 1 for row in rows),
        "heldout_questions": len(heldout),
    }


class Cli:
    """Runs ``python -m prefopt ARGS``, logs each command and its wall time."""

    def __init__(self, out: Path, verbose: bool) -> None:
        self.out = out
        self.verbose = verbose
        self.commands: list[str] = []
        self.timings: list[dict[str, Any]] = []
        self.env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="160", PYTHONWARNINGS="ignore")

    def __call__(self, *args: str | Path) -> str:
        words = [str(a) for a in args]
        line = "prefopt " + " ".join(shlex.quote(w) for w in words)
        self.commands.append(line)
        print(f"$ {line}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "prefopt", *words],
            capture_output=True,
            text=True,
            env=self.env,
        )
        seconds = time.perf_counter() - start
        self.timings.append({"command": line, "seconds": round(seconds, 1)})
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit(f"failed (exit {proc.returncode}) after {seconds:.0f} s: {line}")
        if self.verbose:
            print(proc.stdout, flush=True)
        return proc.stdout

    def save(self) -> None:
        script = "#!/bin/sh\n# the prefopt commands run.py ran, in order\nset -e\n"
        write_atomic(self.out / "commands.sh", script + "\n".join(self.commands) + "\n")


def train_sets(args: argparse.Namespace) -> dict[str, Any]:
    """The run settings every model shares (same steps, learning rate, batch, seed)."""
    return {
        "training.max_steps": args.steps,
        "training.per_device_train_batch_size": args.batch_size,
        "training.learning_rate": args.lr,
        "training.seed": args.seed,
        "training.logging_steps": max(1, args.steps // 10),
        "training.save_strategy": "no",
        "training.report_to": "none",
    }


def set_flags(values: dict[str, Any]) -> list[str]:
    return [word for key, value in values.items() for word in ("--set", f"{key}={value}")]


def sweep_file(args: argparse.Namespace, model: str, data: Path, root: Path) -> dict[str, Any]:
    base: dict[str, Any] = {"data": {"train": str(data)}, "algorithm": {"beta": args.beta}}
    for key, value in train_sets(args).items():
        section, name = key.split(".")
        base.setdefault(section, {})[name] = value
    return {
        "algorithm": "factual",
        "output_root": str(root),
        "models": [{"id": model, "short": MODEL_SHORT}],
        "deltas": list(args.deltas),
        "base": base,
    }


def read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def last_train_metrics(folder: Path) -> dict[str, Any]:
    """The last logged training step of a run (loss, reward margin, reward accuracy)."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return {}
    steps = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    logged = [s for s in steps if "loss" in s and "step" in s]
    if not logged:
        return {}
    last = logged[-1]
    keys = ("step", "loss", "rewards/margins", "rewards/accuracies")
    return {k: last[k] for k in keys if k in last}


def model_row(name: str, folder: Path, delta: float | None) -> dict[str, Any]:
    pairs = read_json(folder / "eval_results.json")
    judged = read_json(folder / "judge_results.json")
    scores = [json.loads(line) for line in (folder / "heldout_scores.jsonl").open()]
    prefer_wrong = sum(1 for s in scores if s["reward_margin"] < 0) / len(scores)
    metrics = pairs["metrics"]
    return {
        "model": name,
        "algorithm": (pairs.get("run") or {}).get("algorithm") or "base",
        "delta": delta,
        "pairs": pairs["pairs"],
        "preference_accuracy": metrics["accuracy"],
        "reward_prefers_wrong": prefer_wrong,
        "logp_accuracy": metrics["logp_accuracy"],
        "hallucination_preference_rate": metrics["hallucination_preference_rate"],
        "answers": judged["metrics"]["answers"],
        "answer_accuracy": 1.0 - judged["metrics"]["hallucination_rate"],
        "margin": metrics["margin"],
        "reward_margin": metrics["reward_margin"],
        "train": last_train_metrics(folder),
    }


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def results_markdown(summary: dict[str, Any]) -> str:
    setup = summary["setup"]
    deltas = ", ".join(f"{d:g}" for d in setup["deltas"])
    lines = [
        "# Factual-DPO in miniature: SmolLM2-135M-Instruct",
        "",
        f"Command: `{summary['command']}`",
        "",
        f"- data: {setup['train_pairs']} training pairs ({setup['train_prefer_wrong']} prefer the "
        f"fluent wrong answer, h_w = 1), {setup['heldout_questions']} held-out questions on "
        "other facts (pairs in the factual orientation, and questions with gold answers)",
        f"- training: {setup['steps']} steps × batch {setup['batch_size']}, learning rate "
        f"{setup['lr']}, β = {setup['beta']}, Δ ∈ {{{deltas}}}, seed {setup['seed']}, "
        "LoRA defaults, model.precision=auto",
        f"- generation: greedy, at most {setup['max_new_tokens']} new tokens, bfloat16; "
        "scored by the gold judge",
        f"- machine: {setup['machine']}; load average {setup['load_before']} before, "
        f"{setup['load_after']} after; wall time {summary['wall_seconds'] / 60:.1f} min",
        "",
        "| model | algorithm | Δ | pref. accuracy ↑ | reward prefers wrong ↓ "
        "| logp accuracy ↑ | halluc.-pref. rate ↓ | answer accuracy ↑ | held-out margin "
        "| train loss | train margin |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["models"]:
        train = row["train"]
        lines.append(
            f"| {row['model']} | {row['algorithm']} | {fmt(row['delta'], 0)} "
            f"| {fmt(row['preference_accuracy'])} | {fmt(row['reward_prefers_wrong'])} "
            f"| {fmt(row['logp_accuracy'])} | {fmt(row['hallucination_preference_rate'])} "
            f"| {fmt(row['answer_accuracy'])} | {fmt(row['margin'])} | {fmt(train.get('loss'))} "
            f"| {fmt(train.get('rewards/margins'))} |"
        )
    lines += [
        "",
        "pref. accuracy: share of held-out pairs whose implicit reward β·log(π/π_ref) prefers "
        "the correct answer (base: reference-free, β·log π); reward prefers wrong: the share "
        "where it prefers the wrong one; logp accuracy and halluc.-pref. rate: the same "
        "question asked of the policy's own per-token log-probs (no reference); answer "
        "accuracy: greedy answers judged correct by the gold judge; held-out margin: mean "
        "m = (log π(correct) − log π(wrong)) − (the same under the reference), in nats "
        "(base: without a reference); train loss/margin: the "
        "last logged training step. dpo_flipped is Factual-DPO at Δ = 0 (the same loss, data "
        "and seed).",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few facts and steps (a test)")
    parser.add_argument("--out", type=Path, default=Path("runs/factual_smollm2"))
    parser.add_argument("--model", help="base model (default: the cached SmolLM2 folder)")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default 40; quick 2)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4, help="learning rate (LoRA)")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument(
        "--deltas",
        type=float,
        nargs="+",
        help="Factual-DPO margins (default 2 5 10 20; quick 5); Δ = 0 is dpo_flipped exactly",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wrong-share", type=float, default=0.28)
    parser.add_argument("--heldout-share", type=float, default=0.2)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--force", action="store_true", help="replace an existing OUT")
    parser.add_argument("--verbose", action="store_true", help="print every command's output")
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.quick else 40)
    args.deltas = args.deltas or ([5.0] if args.quick else [2.0, 5.0, 10.0, 20.0])
    if args.quick:
        args.batch_size = min(args.batch_size, 4)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    out: Path = args.out.resolve()
    if out.exists() and any(out.iterdir()):
        if not args.force:
            raise SystemExit(f"{out} exists; use --force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        from prefopt.testing import smollm2_dir  # the example may use the test kit's model

        model = str(smollm2_dir())

    train_facts, heldout_facts = split_facts(all_facts(), args.heldout_share, args.seed)
    if args.quick:
        train_facts, heldout_facts = train_facts[::20][:16], heldout_facts[::10][:6]
    data = out / "data"
    sizes = build_data(data, train_facts, heldout_facts, args.wrong_share, args.seed)
    print(f"data: {sizes} in {data}", flush=True)

    cli = Cli(out, args.verbose)
    models = out / "models"
    sets = set_flags(train_sets(args))
    cli("data", "flip", data / "train.jsonl", "-o", data / "train_flipped.jsonl")
    common = ["--model", model, "--beta", str(args.beta), *sets, "-q"]
    cli("train", "dpo", "--train-file", data / "train.jsonl", "-o", models / "dpo", *common)
    cli(
        "train", "dpo", "--train-file", data / "train_flipped.jsonl",
        "-o", models / "dpo_flipped", *common,
    )  # fmt: skip
    sweep = sweep_file(args, model, data / "train_flipped.jsonl", models / "factual")
    write_atomic(out / "factual_sweep.yaml", json.dumps(sweep, indent=2) + "\n")  # JSON is YAML
    cli("sweep", out / "factual_sweep.yaml", "-q")

    evaluated: list[tuple[str, Path, float | None]] = [
        ("base", models / "base", None),
        ("dpo", models / "dpo", None),
        ("dpo_flipped", models / "dpo_flipped", 0.0),  # Factual-DPO at Δ = 0, bit for bit
    ]
    for delta in args.deltas:
        job = f"{MODEL_SHORT}_delta{delta:g}"
        evaluated.append((f"factual_delta{delta:g}", models / "factual" / job, delta))
    for name, folder, _ in evaluated:
        target = model if name == "base" else folder
        folder.mkdir(parents=True, exist_ok=True)
        cli(
            "eval", "pairs", target, "--data", data / "heldout_pairs.jsonl",
            "--length-normalize", "--results", folder / "eval_results.json",
            "--out", folder / "heldout_scores.jsonl", "--force",
            *(["--beta", str(args.beta)] if name == "base" else []),
        )  # fmt: skip
        cli(
            "eval", "generate", target, "--prompts", data / "heldout_questions.jsonl",
            "--out", folder / "answers.jsonl", "--max-new-tokens", str(args.max_new_tokens),
            "--batch-size", "16", "--dtype", "bfloat16", "--force",
        )  # fmt: skip
        cli(
            "eval", "judge", "--judge", "gold", "--answers", folder / "answers.jsonl",
            "--results", folder / "judge_results.json", "--force",
        )  # fmt: skip
    plot = out / "factual_smollm2.png"
    metric_flags = [word for m in PLOT_METRICS for word in ("--metric", m)]
    table = cli(
        "eval", "compare", *[folder for _, folder, _ in evaluated], *metric_flags,
        "--x", "name", "--plot", plot,
    )  # fmt: skip
    cli.save()

    summary = {
        "command": "python examples/factual_smollm2/run.py "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "setup": {
            **sizes,
            "model": model,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "beta": args.beta,
            "deltas": args.deltas,
            "seed": args.seed,
            "max_new_tokens": args.max_new_tokens,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"
            + (", GPU" if shutil.which("nvidia-smi") else ", no GPU"),
            "load_before": load_before,
            "load_after": [round(x, 2) for x in os.getloadavg()],
        },
        "models": [model_row(name, folder, delta) for name, folder, delta in evaluated],
        "compare_table": table,
        "plot": str(plot),
        "timings": cli.timings,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_atomic(out / "results.json", json.dumps(summary, indent=2) + "\n")
    write_atomic(out / "results.md", results_markdown(summary))
    print(results_markdown(summary))
    print(f"results: {out / 'results.md'}, {out / 'results.json'}, {plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
