"""``prefopt sweep SWEEP.yaml``: train a grid of models × settings one job after another."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from prefopt.cli.common import State, console, error, quiet_libraries, run_command
from prefopt.console import styled


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
        line = styled("[bold]job {}/{}[/] {} -> {}", job.index + 1, total, job.name, job.output_dir)
        out.print(line + how, markup=True)

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
    """The job table of ``--dry-run``: what every job shares (models, output folder and run
    name patterns) in a header, then one row a job (index, name, swept values, status), so 40
    jobs fit an 80-column terminal in 40 rows."""
    from prefopt.cli.tables import print_rows
    from prefopt.training.sweep import job_finished

    show = console()
    show.print(f"sweep {plan.path}: {plan.spec.name}, {len(plan.jobs)} jobs", soft_wrap=True)
    models = {job.model.short: job.model.id for job in plan.jobs}
    for short, model_id in models.items():
        show.print(f"  model {short}: {model_id}", soft_wrap=True)
    folders, runs = _shared_patterns(plan)
    if folders:
        show.print(f"  output: {folders}", soft_wrap=True)
    if runs:
        show.print(f"  run name: {runs}", soft_wrap=True)
    columns = ["#", "job", "values", "status"]
    if not folders:
        columns.insert(3, "output")
    if not runs:
        columns.insert(3, "run name")
    rows = []
    for job in plan.jobs:
        values = ", ".join(
            f"{key.removeprefix('algorithm.')}={value}" for key, value in job.values.items()
        )
        cells = {
            "#": str(job.index),
            "job": job.name,
            "values": values or "-",
            "run name": job.run_name,
            "output": str(job.output_dir),
            "status": "finished" if job_finished(job.output_dir) else "pending",
        }
        rows.append([cells[column] for column in columns])
    print_rows(show, "jobs", columns, rows)


def _shared_patterns(plan: Any) -> tuple[str, str]:
    """``<root>/<job>`` and ``<prefix><job>`` when every job's output folder and run name
    follow them (the usual case), else ``""`` (the table then shows them per job)."""
    folders = all(job.output_dir == plan.output_root / job.name for job in plan.jobs)
    first = plan.jobs[0] if plan.jobs else None
    prefix = ""
    if first is not None and first.run_name.endswith(first.name):
        prefix = first.run_name[: -len(first.name)]
    runs = first is not None and all(job.run_name == prefix + job.name for job in plan.jobs)
    return (
        f"{plan.output_root}/<job>" if folders else "",
        f"{prefix}<job>" if runs else "",
    )


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
