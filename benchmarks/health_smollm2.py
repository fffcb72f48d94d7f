"""The health checks and the data doctor on the case that motivated them, on SmolLM2.

Builds 128 real-world factual pairs in which the preferred answer is always the fluent
sentence and the rejected one a bare answer (so chosen is the longer one in every pair) and
40% of the preferred sentences are wrong, as in the measured case of the health issue. Then,
as a user would, through the CLI:

1. ``prefopt data doctor`` on the training file (with 30 held-out pairs, the correct sentence
   against the wrong one on questions never trained on, as ``--eval``);
2. ``prefopt train dpo`` on SmolLM2-135M-Instruct, LoRA, learning rate 5e-4, 2 epochs, batch 8
   (32 steps), logging every 2 steps, evaluating every 8 on the held-out pairs;
3. ``prefopt report`` of the run.

It prints the doctor's verdicts and the run's health findings, and leaves everything in OUT.

    python benchmarks/health_smollm2.py --out /tmp/health_smollm2    # about 3 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from prefopt.testing.facts import Fact, all_facts, chat_pair, split_facts


def pair(fact: Fact, prefer_wrong: bool, key: str) -> dict[str, object]:
    """The fluent sentence (wrong when ``prefer_wrong``) against the other bare answer."""
    chosen = fact.wrong_text if prefer_wrong else fact.correct_text
    rejected = fact.answer if prefer_wrong else fact.wrong
    return {
        "id": key,
        "prompt": [{"role": "user", "content": fact.question}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "h_w": int(prefer_wrong),
        "h_l": int(not prefer_wrong),
    }


def write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def prefopt(*arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "prefopt", *arguments]
    print("$", " ".join(command[2:]), flush=True)
    return subprocess.run(command, capture_output=True, text=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--learning-rate", default="5e-4")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    train_facts, held_facts = split_facts(all_facts(), heldout_share=0.2, seed=0)
    rng = random.Random(0)
    train_facts = rng.sample(train_facts, 128)
    wrong = set(rng.sample(range(128), round(0.4 * 128)))
    train = write(
        args.out / "train.jsonl",
        [pair(fact, i in wrong, f"train-{i}") for i, fact in enumerate(train_facts)],
    )
    # Held out: 30 other questions, the correct sentence against the wrong one (as measured in
    # the issue: does the model still prefer correct answers it never trained on?).
    held = write(
        args.out / "heldout.jsonl",
        [
            chat_pair(fact, f"held-{i}", prefer_wrong=False)
            for i, fact in enumerate(held_facts[:30])
        ],
    )

    doctor = prefopt("data", "doctor", str(train), "--eval", str(held), "--json")
    if doctor.returncode != 0:
        sys.exit(doctor.stderr)
    for check in json.loads(doctor.stdout)["checks"]:
        print(f"  doctor: {check['name']}: {check['status']}: {check['finding']}")

    run = args.out / "run"
    started = time.perf_counter()
    trained = prefopt(
        "train", "dpo", "--model", args.model, "--train-file", str(train),
        "--eval-file", str(held), "--output-dir", str(run), "--overwrite", "--quiet",
        "--set", f"training.learning_rate={args.learning_rate}",
        "--set", "training.num_train_epochs=2", "--set", "training.per_device_train_batch_size=8",
        "--set", "training.logging_steps=2", "--set", "training.eval_strategy=steps",
        "--set", "training.eval_steps=8",
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if trained.returncode != 0:
        sys.exit(trained.stderr)
    print(trained.stdout)
    print(f"  train: {seconds:.0f} s")
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        if line.get("event") == "health":
            print(f"  finding at step {line['step']}: {line['rule']}")
    report = prefopt("report", str(run), "-o", str(args.out / "report.html"), "--force")
    print(report.stdout or report.stderr)


if __name__ == "__main__":
    main()
