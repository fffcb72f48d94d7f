"""``prefopt eval harness``: lm-evaluation-harness benchmarks on a run and its base."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from prefopt.cli.common import State, TrustRemoteCodeOption, console, quiet_libraries, run_command

OUTPUT = "Output"


@run_command
def harness(
    model: Annotated[
        str,
        typer.Argument(
            help="Run/adapter folder (its adapter merged in), merged model folder or hub id.",
            show_default=False,
        ),
    ],
    tasks: Annotated[
        list[str],
        typer.Option(
            "--tasks",
            "-t",
            help="Harness task, group or tag names, comma-separated or repeated "
            "(e.g. truthfulqa_mc1,arc_challenge; lm-eval --tasks list shows them all).",
        ),
    ],
    limit: Annotated[
        float | None,
        typer.Option(
            "--limit", help="Examples per task (a fraction if < 1); for quick checks only."
        ),
    ] = None,
    num_fewshot: Annotated[
        int | None,
        typer.Option("--num-fewshot", help="Few-shot examples (default: each task's own)."),
    ] = None,
    batch_size: Annotated[
        str, typer.Option("--batch-size", help="Requests per forward pass, or auto.")
    ] = "8",
    include_path: Annotated[
        list[Path] | None,
        typer.Option(
            "--include-path",
            help="Folder of task YAMLs of your own (repeatable); see examples/harness/.",
        ),
    ] = None,
    no_base: Annotated[
        bool,
        typer.Option("--no-base", help="Evaluate the model alone, not its base beside it."),
    ] = False,
    device: Annotated[
        str, typer.Option("--device", help="auto (cuda when available), cpu, cuda[:N], mps.")
    ] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")] = (
        "float32"
    ),
    apply_chat_template: Annotated[
        bool,
        typer.Option(
            "--apply-chat-template", help="Wrap prompts in the tokenizer's chat template."
        ),
    ] = False,
    results: Annotated[
        Path | None,
        typer.Option(
            "--results",
            help="Results JSON (default: MODEL/harness_results.json, or ./ for a hub id).",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    log_samples: Annotated[
        bool,
        typer.Option(
            "--log-samples",
            help="Also write every example's responses (for multiple choice: each choice's "
            "log-likelihood) and metrics to harness_samples.jsonl beside the results.",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite existing outputs.", rich_help_panel=OUTPUT)
    ] = False,
    trust_remote_code: TrustRemoteCodeOption = False,
) -> None:
    """Benchmarks (TruthfulQA, MMLU, ...) through EleutherAI's lm-evaluation-harness,
    on the base model and the run, with the change per metric (pip install 'prefopt\\[harness]')."""
    from prefopt.data.writing import check_writable, write_jsonl
    from prefopt.eval import harness as running
    from prefopt.eval.offline import write_json

    running.require_lm_eval()
    settings = running.HarnessSettings(
        tasks=running.split_tasks(tasks),
        limit=limit,
        num_fewshot=num_fewshot,
        batch_size=running.parse_batch_size(batch_size),
        include_path=[str(path) for path in include_path or []],
        device=device,
        dtype=dtype,
        apply_chat_template=apply_chat_template,
        log_samples=log_samples,
        trust_remote_code=trust_remote_code,
    )
    running.check_settings(settings)
    results_path = results or running.default_results_path(model)
    check_writable(results_path, force)
    samples_path = results_path.with_name(running.SAMPLES_FILE)
    if log_samples:
        check_writable(samples_path, force)
    quiet_libraries()
    if State.quiet:
        _no_progress_bars()
    say = (lambda message: None) if State.quiet else console(stderr=True).print
    output = running.run_harness(model, settings, not no_base, say, State.quiet)
    write_json(results_path, output.results, force)
    if log_samples:
        write_jsonl(samples_path, output.samples, force=force)
    show = console()
    show.print(_table(output.results))
    show.print(f"results: {results_path}" + (f", samples: {samples_path}" if log_samples else ""))


def _table(document: dict[str, Any]) -> Any:
    from rich.table import Table

    from prefopt.eval import harness_results as kept

    title = f"lm-eval on {document['model']}" + (
        f" (base {document['base']})" if document.get("base") else ""
    )
    table = Table(title=title, title_justify="left")
    for column in ("task", "metric", "base", "run", "delta"):
        table.add_column(column)
    for task, metric, base, run, delta in kept.table_rows(document):
        table.add_row(
            task,
            metric,
            _with_error(base, kept.stderr(document, "base", task, metric)),
            _with_error(run, kept.stderr(document, "run", task, metric)),
            "–" if delta is None else f"{delta:+.4f}",
        )
    return table


def _with_error(value: Any, error: Any) -> str:
    from prefopt.eval.compare import format_value

    if value is None:
        return "–"
    return format_value(value) + (f" ± {error:.4f}" if isinstance(error, float) else "")


def _no_progress_bars() -> None:
    """--quiet: no progress bars from datasets (the harness's own: see run_harness)."""
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass
