"""``prefopt eval``: score pairs offline, compare runs, generate answers, judge them.

``prefopt eval MODEL --data PAIRS`` is short for ``prefopt eval pairs MODEL --data PAIRS``: a
first word that is not a subcommand is taken as the MODEL of ``pairs`` (use the long form for
a model folder named like a subcommand).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from prefopt.cli.common import (
    State,
    TrustRemoteCodeOption,
    console,
    error,
    quiet_libraries,
    run_command,
)
from prefopt.cli.eval_harness import harness


class DefaultCommandGroup(TyperGroup):
    """A group whose unknown first word goes to the default command ``pairs``."""

    default_command = "pairs"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return ["MODEL --data PAIRS [OPTIONS] | COMMAND [ARGS]..."]


app = typer.Typer(
    cls=DefaultCommandGroup,
    no_args_is_help=True,
    help="Evaluate models. [bold]prefopt eval MODEL --data PAIRS[/] scores preference pairs "
    "(short for [bold]prefopt eval pairs[/]); [bold]compare[/] puts runs side by side, "
    "[bold]generate[/] writes answers to prompts, [bold]judge[/] rates answers with an LLM judge, "
    "[bold]harness[/] runs lm-evaluation-harness benchmarks.",
)

OUTPUT = "Output"

# Options several subcommands share.
ModelArgument = Annotated[
    str,
    typer.Argument(help="Merged model folder, adapter/run folder or hub id.", show_default=False),
]
DtypeOption = Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Overwrite existing outputs.", rich_help_panel=OUTPUT)
]


def _notes() -> Any:
    """Where progress notes go: stderr, or nowhere under --quiet."""
    return (lambda message: None) if State.quiet else console(stderr=True).print


def _metric_table(title: str, metrics: dict[str, Any]) -> Any:
    from rich.table import Table

    from prefopt.eval.compare import format_value

    table = Table(title=title, show_header=False, title_justify="left")
    for name, value in metrics.items():
        table.add_row(name, format_value(value))
    return table


@app.command("pairs")
@run_command
def pairs(
    model: ModelArgument,
    data: Annotated[
        str,
        typer.Option(
            "--data",
            "-d",
            help="Preference pairs, lists of ranked responses or per-turn conversations "
            "(JSONL/JSON/Parquet or hub id).",
        ),
    ],
    ref: Annotated[
        str | None,
        typer.Option(
            "--ref",
            help="Reference model (default: the adapter's base, or what prefopt merge recorded).",
        ),
    ] = None,
    no_ref: Annotated[
        bool, typer.Option("--no-ref", help="Reference-free: rewards are β·log π.")
    ] = False,
    beta: Annotated[
        float | None,
        typer.Option("--beta", help="β of the implicit rewards (default: the run's, else 0.1)."),
    ] = None,
    length_normalize: Annotated[
        bool,
        typer.Option(
            "--length-normalize",
            help="Per-token log-probs in logp_accuracy and the hallucination-preference rate.",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write one JSON line per pair (log-probs, margin, rewards), or per list.",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(
            "--results",
            help="Results JSON (default: MODEL/eval_results.json, or ./ for a hub id).",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    force: ForceOption = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Pairs (or lists) per forward pass.")
    ] = 16,
    max_length: Annotated[
        int | None,
        typer.Option("--max-length", help="Token limit (default: the run's, else 1024)."),
    ] = None,
    max_prompt_length: Annotated[
        int | None,
        typer.Option(
            "--max-prompt-length", help="Prompt token limit (default: the run's, else 512)."
        ),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Split of a hub dataset.")] = "test",
    dtype: DtypeOption = "float32",
    trust_remote_code: TrustRemoteCodeOption = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or notes (as prefopt -q).")
    ] = False,
) -> None:
    """Score preference pairs: accuracy, margins, rewards, log-probs; split by Δh with h flags
    and by turn for per-turn conversations; lists of responses get ranking metrics."""
    if quiet:
        State.quiet = True
    from prefopt import workflows
    from prefopt.eval.offline import progress_bar

    show = console()
    say = _notes()
    with progress_bar("scoring", State.quiet) as advance:
        output = workflows.evaluate(
            model, data, results=results, per_pair=out, force=force, progress=advance, say=say,
            ref=ref, no_ref=no_ref, beta=beta, length_normalize=length_normalize,
            batch_size=batch_size, max_length=max_length, max_prompt_length=max_prompt_length,
            dtype=dtype, split=split, trust_remote_code=trust_remote_code,
            quiet=State.quiet,
        )  # fmt: skip
    results_path = output.results_path
    info = output.results
    show.print(
        _metric_table(f"{info['model']} on {info['data']} (β={info['beta']})", info["metrics"])
    )
    if info.get("by_delta_h"):
        show.print(_group_table(info["by_delta_h"], "by Δh = h_l − h_w", "Δh"))
    if info.get("by_turn"):
        show.print(_group_table(info["by_turn"], "by turn (the assistant answer's number)",
                                "turn"))  # fmt: skip
    unit = "list" if "lists" in info else "pair"
    show.print(f"results: {results_path}" + (f", per {unit}: {out}" if out else ""))


def _group_table(groups: dict[str, dict[str, Any]], title: str, key: str) -> Any:
    from rich.table import Table

    from prefopt.eval.compare import format_value

    columns = ("pairs", "accuracy", "margin", "reward_margin", "logp_accuracy")
    table = Table(title=title, title_justify="left")
    for column in (key, *columns):
        table.add_column(column)
    for group, values in groups.items():
        table.add_row(group, *(format_value(values[k]) for k in columns))
    return table


@app.command("compare")
@run_command
def compare(
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="Results files or folders holding eval_results.json / judge_results.json / "
            "harness_results.json.",
            show_default=False,
        ),
    ],
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric", "-m", help="Metric to show (repeatable; default: the headline ones)."
        ),
    ] = None,
    x: Annotated[
        str,
        typer.Option(
            "--x",
            help="Chart x axis: auto (a varying hyperparameter, e.g. delta), name, or a name.",
        ),
    ] = "auto",
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a PNG chart of the metrics.")
    ] = None,
) -> None:
    """Several runs side by side (e.g. a whole Δ sweep), as a table and a PNG chart."""
    from prefopt.eval import compare as comparing

    skipped: list[Path] = []
    sets = comparing.load_result_sets(list(sources), skipped)
    for folder in skipped:
        console(stderr=True).print(f"skipping {folder}: no {comparing.NO_RESULTS}")
    metrics = comparing.choose_metrics(sets, metric)
    axis = comparing.choose_x(sets, x)
    from prefopt.cli.tables import print_rows

    show = console()
    columns = ["run", "algorithm", *([axis] if axis else []), *metrics]
    print_rows(show, "comparison", columns, comparing.table_rows(sets, metrics, axis))
    if plot is not None:
        show.print(f"chart: {comparing.plot(sets, metrics, axis, plot)}")


@app.command("generate")
@run_command
def generate(
    model: ModelArgument,
    prompts: Annotated[
        Path,
        typer.Option(
            "--prompts", "-p", help="JSONL/JSON/Parquet rows with a prompt (string or messages)."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Answers JSONL (resumable through OUT.partial).")
    ],
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Answer length limit.")
    ] = 256,
    temperature: Annotated[
        float, typer.Option("--temperature", help="0 = greedy; > 0 samples.")
    ] = 0.0,
    top_p: Annotated[
        float, typer.Option("--top-p", help="Nucleus sampling mass (when sampling).")
    ] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per generate call.")] = 8,
    max_prompt_length: Annotated[
        int, typer.Option("--max-prompt-length", help="Keep the last N prompt tokens.")
    ] = 1024,
    chat: Annotated[
        str,
        typer.Option(
            "--chat",
            help="Chat template: auto (message lists only, as in training) or always.",
        ),
    ] = "auto",
    dtype: DtypeOption = "float32",
    force: ForceOption = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard OUT.partial instead of resuming.")
    ] = False,
    trust_remote_code: TrustRemoteCodeOption = False,
) -> None:
    """Generate answers with the chat template, batched; an interrupted run resumes."""
    from prefopt.eval.generate import GenerationSettings, generate_file
    from prefopt.eval.offline import progress_bar

    quiet_libraries()
    settings = GenerationSettings(
        max_new_tokens, temperature, top_p, seed, batch_size, max_prompt_length, chat
    )
    say = _notes()
    with progress_bar("generating", State.quiet) as advance:
        path, made, resumed = generate_file(
            model, prompts, out, settings, force, restart, dtype, advance, say,
            trust_remote_code,
        )  # fmt: skip
    console().print(f"{made + resumed} answers in {path} ({made} generated, {resumed} resumed)")


@app.command("judge")
@run_command
def judge(
    answers: Annotated[
        Path, typer.Option("--answers", help="Answers to rate (B): JSONL with prompt and answer.")
    ],
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            help="Baseline answers (A) to the same prompts, for the win rate of B over A.",
        ),
    ] = None,
    judge_name: Annotated[
        str, typer.Option("--judge", help="Judge backend (built in: openai, gold).")
    ] = "openai",
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url", help="OpenAI-compatible API root (default https://api.openai.com/v1)."
        ),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Judge model name.")] = None,
    api_key_env: Annotated[
        str,
        typer.Option(
            "--api-key-env", help="Environment variable with the API key (never printed)."
        ),
    ] = "OPENAI_API_KEY",
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per request.")] = 60.0,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", help="Extra judge setting key=value (repeatable)."),
    ] = None,
    question_field: Annotated[
        str, typer.Option("--question-field", help="Field with the question.")
    ] = "prompt",
    answer_field: Annotated[
        str, typer.Option("--answer-field", help="Field with the answer.")
    ] = "answer",
    reference_field: Annotated[
        str | None,
        typer.Option(
            "--reference-field", help="Field with a correct reference answer shown to the judge."
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Requests in flight.")] = 4,
    max_retries: Annotated[
        int, typer.Option("--max-retries", help="Retries per answer on 429/5xx/timeouts.")
    ] = 4,
    backoff: Annotated[
        float, typer.Option("--backoff", help="First retry delay in seconds (doubles each retry).")
    ] = 1.0,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Ratings JSONL (default: ANSWERS_STEM.judgments.jsonl).",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(
            "--results",
            help="Results JSON (default: judge_results.json beside ANSWERS).",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    force: ForceOption = False,
    restart: Annotated[
        bool,
        typer.Option("--restart", help="Discard saved partial ratings.", rich_help_panel=OUTPUT),
    ] = False,
) -> None:
    """Rate factuality 0–10 per answer with an LLM judge: mean factuality, hallucination rate
    (score < 5) and, with --baseline, the win rate of ANSWERS over BASELINE (ties excluded)."""
    from prefopt.data.writing import check_writable
    from prefopt.eval.judges import get_judge
    from prefopt.eval.judging import AnswerFields, JudgeFailure, parse_options, run_judge
    from prefopt.eval.offline import progress_bar, write_json

    out = out or answers.with_name(f"{answers.name.split('.')[0]}.judgments.jsonl")
    results_path = results or answers.with_name("judge_results.json")
    check_writable(results_path, force)
    spec = get_judge(judge_name)
    options: dict[str, Any] = {
        "api_key_env": api_key_env,
        "timeout": timeout,
        **parse_options(option or []),
    }
    if base_url:
        options["base_url"] = base_url
    if model:
        options["model"] = model
    backend = spec.make_judge(options)
    fields = AnswerFields(question_field, answer_field, reference_field)
    say = _notes()
    try:
        with progress_bar("judging", State.quiet) as advance:
            summary = run_judge(
                judge_name, backend, options, answers, baseline, out, fields,
                concurrency, max_retries, backoff, force, restart, advance, say,
            )  # fmt: skip
    except JudgeFailure as exc:
        error(str(exc))
        raise typer.Exit(2 if exc.usage else 1) from None
    write_json(results_path, summary, force)
    console().print(_metric_table(f"judge {judge_name} on {answers}", summary["metrics"]))
    console().print(f"ratings: {out}, results: {results_path}")


app.command("harness")(harness)
