"""``prefopt demo``: preference learning, measured, on the embedded tiny model.

The tiny model starts from random weights and knows nothing about the synthetic world. DPO on
pairs "true answer ≻ false answer" teaches it which facts are true; the demo measures, on
held-out pairs phrased with question templates that training never used, how often the model
gives the true answer a higher log-probability than the false one, before and after training.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefopt import testing


@dataclass
class DemoResult:
    accuracy_before: float
    accuracy_after: float
    train_pairs: int
    eval_pairs: int
    steps: int
    seconds: float
    output_dir: Path


def preference_accuracy(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> float:
    """Share of pairs whose chosen answer has the higher summed log-prob under ``model``."""
    from prefopt.data.tokenize import TokenizationSettings, tokenize_pairs
    from prefopt.eval.scoring import pair_logps

    pairs, _ = tokenize_pairs(enumerate(rows, 1), tokenizer, TokenizationSettings())
    chosen, rejected = pair_logps(model, pairs, tokenizer.pad_token_id)
    return float((chosen > rejected).float().mean())


def run_demo(
    workdir: Path | None = None,
    steps: int = 150,
    train_pairs: int = 1200,
    eval_pairs: int = 200,
    seed: int = 0,
    quiet: bool = True,
    say: Any = print,
) -> DemoResult:
    from prefopt.config import resolve_run_config
    from prefopt.modeling.loading import load_model, load_tokenizer
    from prefopt.registry import get_algorithm
    from prefopt.training.run import train

    started = time.perf_counter()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="prefopt-demo-"))
    model_dir = testing.tiny_model_dir()
    train_file = testing.write_pairs(workdir / "train.jsonl", testing.synthetic_pairs(train_pairs, seed))
    held_out = testing.synthetic_pairs(eval_pairs, seed + 1, held_out=True)
    testing.write_pairs(workdir / "heldout.jsonl", held_out)
    say(f"tiny model: {model_dir}")
    say(f"data: {train_pairs} training pairs, {eval_pairs} held-out pairs in {workdir}")

    spec = get_algorithm("dpo")
    flags = {
        "model.name_or_path": str(model_dir),
        "data.train": str(train_file),
        "training.output_dir": str(workdir / "dpo"),
        "training.max_steps": steps,
    }
    sets = [
        "training.per_device_train_batch_size=8",
        "training.learning_rate=5e-3",
        "training.logging_steps=25",
        "training.save_strategy=no",
        f"training.seed={seed}",
        "training.warmup_steps=10",
        "lora.r=16",
        "lora.alpha=32",
        "algorithm.beta=0.1",
    ]
    config = resolve_run_config(spec, None, flags, sets)
    tokenizer = load_tokenizer(config.model)
    base = load_model(config.model, for_training=False)
    before = preference_accuracy(base, tokenizer, held_out)
    say(f"held-out preference accuracy before training: {before:.1%}")

    result = train(config, spec, quiet=quiet)

    from peft import PeftModel

    tuned = PeftModel.from_pretrained(load_model(config.model, for_training=False), str(result.output_dir))
    after = preference_accuracy(tuned, tokenizer, held_out)
    say(f"held-out preference accuracy after {result.steps} DPO steps: {after:.1%}")
    return DemoResult(
        before, after, train_pairs, eval_pairs, result.steps, time.perf_counter() - started, workdir
    )
