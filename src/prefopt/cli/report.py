"""``prefopt report``: one self-contained HTML page about one or several runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefopt.cli.common import console, run_command

REPORT_HELP = (
    "Write one HTML file about one or several runs: the curves (loss, margins, accuracies, "
    "chosen and rejected log-probs against the reference, β, learning rate, gradient norm, "
    "throughput) with the runs overlaid, the health findings with their advice, the "
    "evaluation results, the timing and each config. Everything is inline: it opens offline."
)


@run_command
def report(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="Run folders (with metrics.jsonl), or a folder of runs (a sweep's).",
            show_default=False,
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path(
        "report.html"
    ),
    title: Annotated[str, typer.Option(help="The page's title.")] = "prefopt report",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write the report (see ``REPORT_HELP``)."""
    from prefopt.data.writing import atomic_writer
    from prefopt.eval.run_report import build_report, load_run, run_folders

    records = [load_run(folder) for folder in run_folders(runs)]
    page = build_report(records, title)
    with atomic_writer(output, force=force) as handle:
        handle.write(page.encode("utf-8"))
    findings = sum(len(record.findings) for record in records)
    console().print(
        f"report: {output} ({len(records)} run{'s' if len(records) != 1 else ''}, "
        f"{findings} health finding{'s' if findings != 1 else ''})",
        markup=False,
    )
