"""``prefopt demo``: the whole story on the embedded tiny model, offline, in a few minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefopt.cli.common import State, console, quiet_libraries, run_command


@run_command
def demo(
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="Keep data and runs here (default: a temporary folder)."),
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="DPO steps.")] = 150,
    seed: Annotated[int, typer.Option("--seed", help="Seed for data and training.")] = 0,
) -> None:
    """Train DPO on the embedded tiny model and measure held-out preference accuracy
    before and after. Needs no network."""
    quiet_libraries()
    from prefopt.demo import run_demo

    out = console()
    result = run_demo(workdir, steps=steps, seed=seed, quiet=State.quiet, say=out.print)
    out.print(
        f"[bold]accuracy {result.accuracy_before:.1%} → {result.accuracy_after:.1%}[/] "
        f"on {result.eval_pairs} held-out pairs, {result.steps} steps, {result.seconds:.0f} s"
    )
