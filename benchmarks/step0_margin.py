"""Step 0 of a DPO run, by reference mode: the loss and the mean |reward margin| before any
update (both should be ln 2 and 0: the policy is the reference there).

For each model (the tiny Llama; SmolLM2-135M-Instruct with ``--real``) and each reference mode,
one LoRA DPO step on 16 real-world fact chat pairs (``prefopt.testing.facts``, of uneven
lengths), batch 4, under ``--precision`` (default bf16, where the reference's batches matter;
fp32 agrees in every mode). The modes: ``online``; ``cached`` (a separate reference pass before
training); ``auto`` on a fresh cache (the first epoch's own reference fills it); ``auto`` again,
reading the entry that run wrote.

    python benchmarks/step0_margin.py [--real] [--precision bf16|fp32]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

PAIRS, BATCH, BETA = 16, 4, 0.1


def step0(
    model_dir: Path, data: Path, out: Path, mode: str, cache: Path, steps: int, precision: str
) -> dict:
    """Train ``steps`` steps; the first batch's loss and mean |margin| (before any update)."""
    from prefopt.cli.common import quiet_libraries
    from prefopt.config_layers import resolve_run_config
    from prefopt.registry import get_algorithm
    from prefopt.training.run import train

    seen: dict[str, float] = {}
    dpo = get_algorithm("dpo")

    def make_loss(config: Any, ctx: Any = None) -> Any:
        loss = dpo.make_loss(config, ctx)

        def first_batch(batch: Any) -> Any:
            output = loss(batch)
            if not seen:
                margins = BETA * (batch.chosen_log_ratio() - batch.rejected_log_ratio())
                seen["loss"] = float(output.loss.detach())
                seen["mean_abs_margin"] = float(margins.abs().mean().detach())
            return output

        return first_batch

    spec = dataclasses.replace(dpo, make_loss=make_loss)
    flags = {
        "model.name_or_path": str(model_dir),
        "data.train": str(data),
        "training.output_dir": str(out),
        "training.max_steps": steps,
        "training.per_device_train_batch_size": BATCH,
        "training.save_strategy": "no",
        "algorithm.beta": BETA,
    }
    sets = [
        f"reference.mode={mode}",
        f"reference.cache_dir={cache}",
        f"model.precision={precision}",
    ]
    config = resolve_run_config(spec, None, flags, sets)
    quiet_libraries()
    train(config, spec, quiet=True)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="also SmolLM2-135M-Instruct")
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    options = parser.parse_args()
    from prefopt.testing import tiny_model_dir, write_pairs
    from prefopt.testing.facts import all_facts, training_pairs

    models = {"tiny Llama": tiny_model_dir()}
    if options.real:
        from prefopt.testing import smollm2_dir

        models["SmolLM2-135M-Instruct"] = smollm2_dir()
    print(f"precision: {options.precision}")
    print(f"{'model':24} {'reference':28} {'step-0 loss':>12} {'- ln 2':>10} {'mean |margin|':>14}")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        rows = training_pairs(all_facts()[::7][:PAIRS], wrong_share=0.25)
        data = write_pairs(root / "pairs.jsonl", rows)
        for label, model_dir in models.items():
            cache = root / f"cache-{len(label)}"
            runs = [
                ("online", "online", root / "c0", 1),
                ("cached (separate pass)", "cached", root / "c1", 1),
                ("auto, fresh (fills)", "auto", cache, PAIRS // BATCH),
                ("auto, reads that entry", "auto", cache, 1),
            ]
            for index, (name, mode, cache_dir, steps) in enumerate(runs):
                out = root / f"run-{label}-{index}"
                result = step0(model_dir, data, out, mode, cache_dir, steps, options.precision)
                gap = result["loss"] - math.log(2)
                print(
                    f"{label:24} {name:28} {result['loss']:12.6f} {gap:10.2e} "
                    f"{result['mean_abs_margin']:14.2e}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
