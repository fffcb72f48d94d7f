"""``prefopt data doctor``: the checks of :mod:`prefopt.data.doctor` as tables and examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from prefopt.cli.common import console, load_tokenizer, run_command
from prefopt.errors import UsageError

DOCTOR_HELP = (
    "Look for what makes DPO learn the wrong thing: length bias, near-identical pairs, "
    "prompts shared with the eval file, truncation at the run's limits, end-of-turn or think "
    "tags inside the content, and for factual data the Δh distribution. Each check gives "
    "counts and examples; warnings do not fail (exit 0); a malformed row exits 2."
)


@run_command
def doctor(
    input: Annotated[Path, typer.Argument(help="The training file (.jsonl, .json, .parquet).")],
    eval_file: Annotated[
        Path | None, typer.Option("--eval", help="The eval file: checked for shared prompts.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="A run's YAML config: its model's tokenizer, data limits and eval file."),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Measure truncation with this model's tokenizer.")
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="Measure truncation with this tokenizer.")
    ] = None,
    max_length: Annotated[
        int | None, typer.Option(help="Max prompt + completion tokens (default: the run's).")
    ] = None,
    max_prompt_length: Annotated[
        int | None, typer.Option(help="Max prompt tokens (default: the run's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    """Check what a model would learn from a file (see ``DOCTOR_HELP``)."""
    from prefopt.data.doctor import examine

    if model and tokenizer:
        raise UsageError("give --model or --tokenizer, not both")
    run = _run_settings(config)
    name = tokenizer or model or run.get("tokenizer") or run.get("model")
    evaluation = eval_file or run.get("eval")
    loaded = None
    if name:
        loaded = load_tokenizer(str(name))
    report = examine(
        input,
        evaluation,
        tokenizer=loaded,
        tokenizer_name=str(name or ""),
        max_length=max_length or run.get("max_length"),
        max_prompt_length=max_prompt_length or run.get("max_prompt_length"),
    )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return
    print_report(report)


def _run_settings(config: Path | None) -> dict[str, Any]:
    """What the doctor takes from a run config: tokenizer, limits, eval file."""
    if config is None:
        return {}
    from prefopt.config_layers import load_yaml

    loaded = load_yaml(config)
    model = loaded.get("model") or {}
    data = loaded.get("data") or {}
    return {
        "model": model.get("name_or_path"),
        "tokenizer": model.get("tokenizer"),
        "eval": data.get("eval"),
        "max_length": data.get("max_length"),
        "max_prompt_length": data.get("max_prompt_length"),
    }


def print_report(report: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    styles = {"ok": "green", "warning": "yellow", "skipped": "dim"}
    table = Table(
        title=Text(f"doctor: {report.train} ({report.pairs:,} pairs)"), title_justify="left"
    )
    table.add_column("check")
    table.add_column("status")
    table.add_column("finding")
    for check in report.checks:
        table.add_row(
            check.name, Text(check.status, style=styles[check.status]), Text(check.finding)
        )
    out = console()
    out.print(table)
    for check in report.warnings:
        out.print(Text(f"{check.name}: {check.advice}", style="yellow"), soft_wrap=True)
        for example in check.examples:
            out.print(Text(f"  {example}"), soft_wrap=True)
    count = len(report.warnings)
    out.print(
        f"{count} warning{'s' if count != 1 else ''}" if count else "no warnings",
        style="yellow" if count else "green",
    )
