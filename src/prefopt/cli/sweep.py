"""``prefopt sweep SWEEP.yaml``: train a grid of models × settings one job after another."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from prefopt.cli.common import State, console, error, quiet_libraries, run_command


@run_command
def sweep(
    config: Annotated[
        Path,
        typer.Argument(
            metavar="SWEEP.yaml",
            help="Sweep file: algorithm, models, deltas/grid, base, output_root.",
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the job table and exit; trains nothing.")
    ] = False,
    index: Annotated[
        int | None,
        typer.Option(
            "--index", help="Run job I alone (0-based, as in --dry-run), e.g. $SLURM_ARRAY_TASK_ID."
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress display, only job lines.")
    ] = False,
) -> None:
    """Train a grid of models × algorithm settings (e.g. Factual-DPO over Δ), one job after
    another in this process; finished jobs are skipped, a summary table ends the run."""
    from prefopt.training.sweep import load_sweep, run_sweep

    plan = load_sweep(config)
    if index is not None and not 0 <= index < len(plan.jobs):
        raise _usage(f"--index {index}: the sweep has jobs 0 to {len(plan.jobs) - 1}")
    if dry_run:
        print_plan(plan)
        return
    quiet_libraries()
    out = console()
    total = len(plan.jobs)

    def on_start(job: Any, resume: bool) -> None:
        how = " (resuming from its last checkpoint)" if resume else ""
        out.print(f"[bold]job {job.index + 1}/{total}[/] {job.name} -> {job.output_dir}{how}")

    def on_end(outcome: Any) -> None:
        if outcome.status == "skipped":
            out.print(f"job {outcome.job.index + 1}/{total} {outcome.job.name}: already finished")
        elif outcome.status == "failed":
            error(f"job {outcome.job.index} ({outcome.job.name}) failed: {outcome.error}")

    outcomes = run_sweep(
        plan, index=index, quiet=quiet or State.quiet, on_start=on_start, on_end=on_end
    )
    print_summary(outcomes)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise typer.Exit(2 if all(o.usage_error for o in failed) else 1)


def _usage(message: str) -> Exception:
    from prefopt.errors import UsageError

    return UsageError(message)


def print_plan(plan: Any) -> None:
    from prefopt.cli.tables import print_rows
    from prefopt.training.sweep import job_finished

    rows = []
    for job in plan.jobs:
        values = ", ".join(
            f"{key.removeprefix('algorithm.')}={value}" for key, value in job.values.items()
        )
        status = "finished" if job_finished(job.output_dir) else "pending"
        rows.append(
            [
                str(job.index),
                job.name,
                job.model.id,
                values or "-",
                job.run_name,
                str(job.output_dir),
                status,
            ]
        )
    title = f"sweep {plan.path}: {plan.spec.name}, {len(plan.jobs)} jobs"
    columns = ("#", "job", "model", "values", "run name", "output", "status")
    print_rows(console(), title, columns, rows)


def print_summary(outcomes: list[Any]) -> None:
    from prefopt.cli.tables import print_rows

    rows = []
    for outcome in outcomes:
        loss = outcome.metrics.get("loss")
        steps = outcome.result.steps if outcome.result is not None else None
        rows.append(
            [
                str(outcome.job.index),
                outcome.job.name,
                outcome.status,
                "-" if steps is None else str(steps),
                f"{loss:.4f}" if isinstance(loss, (int, float)) else "-",
                f"{outcome.seconds:.0f}s" if outcome.status != "skipped" else "-",
                str(outcome.job.output_dir),
            ]
        )
    columns = ("#", "job", "status", "steps", "loss", "time", "output")
    print_rows(console(), "sweep summary", columns, rows)
