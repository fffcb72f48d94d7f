"""``prefopt data``: flip, convert, validate, split and describe preference files.

The commands are thin: each calls one module of :mod:`prefopt.data` and prints its result as
rich tables on stdout. Nothing heavy is imported at module level (transformers only inside
``validate --tokenizer``, datasets only for a hub source), so ``prefopt --help`` stays fast.
Errors the user must fix (bad input, an existing output) print one line and exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from prefopt.cli.common import console, load_tokenizer, run_command
from prefopt.errors import UsageError

app = typer.Typer(
    name="data",
    help="Prepare preference data: flip Factual-DPO labels, convert formats, validate, "
    "split and describe.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

InputArg = Annotated[
    Path, typer.Argument(help="A .jsonl, .json or .parquet file (.jsonl.gz/.json.gz too).")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")]


def _text(value: object) -> Any:
    """Literal text for rich: file names may contain [brackets] or :emoji: codes."""
    from rich.text import Text

    return Text(str(value))


def _say(message: str) -> None:
    console().print(message, markup=False, emoji=False, highlight=False)


def _table(title: str, *columns: str) -> Any:
    from rich.table import Table

    table = Table(title=_text(title), title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    return table


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else "–"


# -- flip ----------------------------------------------------------------------------------


FLIP_HELP = (
    "Put every pair in the Factual-DPO orientation: rows with (h_w, h_l) = (1, 0) get chosen "
    "and rejected swapped and become (0, 1); all rows are kept and marked [bold]flipped[/bold] "
    "true or false."
)


@app.command(help=FLIP_HELP)
@run_command
def flip(
    input: InputArg,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Output JSONL. Default: <stem>_flipped.jsonl."),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Flip (1, 0) rows into the Factual-DPO orientation (see ``FLIP_HELP``)."""
    from prefopt import workflows

    written, summary = workflows.flip(input, output, force=force)
    table = _table(f"flip: {input} → {written}", "(h_w, h_l)", "before", "after")
    for key in ((0, 0), (0, 1), (1, 0), (1, 1)):
        table.add_row(str(key), f"{summary.before.get(key, 0):,}", f"{summary.after.get(key, 0):,}")
    table.add_section()
    table.add_row("rows", f"{summary.rows:,}", f"{summary.rows:,}")
    table.add_row(
        "Δh = 1 share",
        _share(summary.before.get((0, 1), 0), summary.rows),
        _share(summary.after.get((0, 1), 0), summary.rows),
    )
    out = console()
    out.print(table)
    processes = f" ({summary.workers} processes)" if summary.workers > 1 else ""
    _say(f"flipped {summary.flipped:,} of {summary.rows:,} rows; wrote {written}{processes}")


# -- convert -------------------------------------------------------------------------------


def _default_convert_output(source: str, split: str) -> Path:
    path = Path(source)
    if path.exists():
        name = path.name[:-3] if path.name.endswith(".gz") else path.name
        return path.with_name(f"{name.rsplit('.', 1)[0]}_converted.jsonl")
    return Path(f"{source.rsplit('/', 1)[-1]}_{split}_converted.jsonl")


@app.command()
@run_command
def convert(
    source: Annotated[str, typer.Argument(help="A local file, or a hub dataset id (owner/name).")],
    from_format: Annotated[
        str,
        typer.Option(
            "--from",
            help="Input format: hh, ultrafeedback, shp, messages, columns (pairs); "
            "ultrafeedback-raw, nectar (lists of ranked responses); or a plugin's.",
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Output JSONL. Default: <stem>_converted.jsonl."),
    ] = None,
    text: Annotated[
        bool, typer.Option("--text", help="Write plain strings instead of message lists.")
    ] = False,
    split: Annotated[str, typer.Option(help="Split of a hub dataset.")] = "train",
    prompt_key: Annotated[str, typer.Option(help="Prompt field (columns).")] = "prompt",
    chosen_key: Annotated[str, typer.Option(help="Chosen field (columns, messages).")] = "chosen",
    rejected_key: Annotated[
        str, typer.Option(help="Rejected field (columns, messages).")
    ] = "rejected",
    score_key: Annotated[
        str,
        typer.Option(
            help="The completion's score field (ultrafeedback-raw): overall_score or "
            "fine-grained_score."
        ),
    ] = "overall_score",
    skip_invalid: Annotated[
        bool,
        typer.Option("--skip-invalid", help="Leave out rows that cannot be converted; count them."),
    ] = False,
    force: ForceOpt = False,
) -> None:
    """Convert preference data to prefopt's record (conversational by default)."""
    from prefopt.data.converters import ConvertOptions, ConvertReport, convert_rows, get_converter
    from prefopt.data.io import load_rows
    from prefopt.data.writing import check_writable, write_jsonl

    spec = get_converter(from_format)
    target = output if output is not None else _default_convert_output(source, split)
    check_writable(target, force)
    report = ConvertReport()
    options = ConvertOptions(prompt_key, chosen_key, rejected_key, score_key)
    records = convert_rows(
        load_rows(source, split), spec, source, options, text, skip_invalid, report
    )
    write_jsonl(target, records, force=force)
    table = _table(f"convert ({spec.name}): {source} → {target}", "rows", "count")
    table.add_row("read", f"{report.read:,}")
    table.add_row("written", f"{report.written:,}")
    table.add_row("skipped", f"{report.skipped:,}")
    out = console()
    out.print(table)
    for line in report.first_skipped:
        _say(f"skipped {line}")


# -- validate ------------------------------------------------------------------------------


VALIDATE_HELP = (
    "Check a file before training: schema, empty or identical responses, duplicates, h flags; "
    "with a tokenizer, token lengths and truncation. Rows with (h_w, h_l) = (1, 0) are "
    "reported, and are errors with --factual (a file for Factual-DPO, which `data flip` "
    "fixes). Exits 0 when clean, 2 when not."
)


@app.command(help=VALIDATE_HELP)
@run_command
def validate(
    input: InputArg,
    model: Annotated[
        str | None, typer.Option(help="Measure token lengths with this model's tokenizer.")
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="Measure token lengths with this tokenizer.")
    ] = None,
    max_length: Annotated[
        int | None, typer.Option(help="Max prompt + completion tokens (as in training).")
    ] = None,
    max_prompt_length: Annotated[
        int | None, typer.Option(help="Max prompt tokens (as in training).")
    ] = None,
    require: Annotated[
        list[str] | None,
        typer.Option(help="A numeric field every row must have (e.g. h_w); repeatable."),
    ] = None,
    factual: Annotated[
        bool,
        typer.Option(
            "--factual", help="Check for Factual-DPO: (h_w, h_l) = (1, 0) rows are errors."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    """Check a file before training (see ``VALIDATE_HELP``)."""
    from prefopt.data.validate import validate_file

    if model and tokenizer:
        raise UsageError("give --model or --tokenizer, not both")
    name = tokenizer or model
    loaded = load_tokenizer(name) if name else None
    report = validate_file(
        input,
        extra_columns=require or (),
        tokenizer=loaded,
        tokenizer_name=name or "",
        max_length=max_length,
        max_prompt_length=max_prompt_length,
        factual=factual,
    )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_validation(report)
    if not report.clean:
        raise typer.Exit(2)


def _print_validation(report: Any) -> None:
    from prefopt.data.validate import ISSUE_KINDS

    out = console()
    table = _table(f"validate: {report.path}", "check", "rows", "share")
    table.add_row("rows", f"{report.rows:,}", "")
    for kind, count in sorted(report.record_kinds.items()):
        table.add_row(f"{kind} records", f"{count:,}", _share(count, report.rows))
    table.add_section()
    from rich.text import Text

    for kind, meaning in ISSUE_KINDS.items():
        count = report.counts[kind]
        style = ("red" if report.is_error(kind) else "yellow") if count else "green"
        table.add_row(meaning, Text(f"{count:,}", style=style), _share(count, report.rows))
    out.print(table)
    if report.h_counts:
        flags = _table("h flags", "(h_w, h_l)", "rows", "share")
        for key in sorted(report.h_counts):
            flags.add_row(
                str(key), f"{report.h_counts[key]:,}", _share(report.h_counts[key], report.rows)
            )
        out.print(flags)
    if report.lengths is not None and report.lengths.pairs:
        _print_lengths(report.lengths)
    elif report.lengths is not None:
        _say("token lengths: not measured (per-turn conversations are not measured yet)")
    for kind in ISSUE_KINDS:
        for issue in report.examples.get(kind, []):
            _say(issue.located(report.path))
    for tip in report.suggestions():
        _say(tip if tip.startswith("warning: ") else f"hint: {tip}")
    truncating = report.lengths is not None and (
        report.lengths.prompts_truncated or report.lengths.completions_truncated
    )
    if report.clean and truncating:
        unit = report.lengths.unit if report.lengths is not None else "pairs"
        out.print(f"clean, but training would truncate {unit} (see the warnings)", style="yellow")
    else:
        out.print(
            "clean" if report.clean else "not clean", style="green" if report.clean else "red"
        )


def _print_lengths(lengths: Any) -> None:
    table = _table(
        f"token lengths ({lengths.tokenizer}, max_length {lengths.max_length}, "
        f"max_prompt_length {lengths.max_prompt_length})",
        "part", "min", "mean", "p50", "p90", "p99", "max",
    )  # fmt: skip
    for part in ("prompt", "chosen", "rejected", "responses"):
        stats = lengths.distribution(part)
        if stats:
            table.add_row(
                part, *(str(stats[k]) for k in ("min", "mean", "p50", "p90", "p99", "max"))
            )
    out = console()
    out.print(table)
    out.print(
        f"{lengths.unit} {lengths.pairs:,}: prompts truncated {lengths.prompts_truncated:,}, "
        f"completions truncated {lengths.completions_truncated:,}, dropped {lengths.dropped:,}"
    )


# -- split ---------------------------------------------------------------------------------


@app.command()
@run_command
def split(
    input: InputArg,
    eval_fraction: Annotated[float, typer.Option(help="Share of units that go to eval (0-1).")],
    seed: Annotated[int, typer.Option(help="Changes which units go to eval.")] = 0,
    group_by: Annotated[
        str | None,
        typer.Option(help="Keep rows with the same value of this field together, e.g. prompt."),
    ] = None,
    train_output: Annotated[
        Path | None, typer.Option(help="Train file. Default: <stem>_train.jsonl.")
    ] = None,
    eval_output: Annotated[
        Path | None, typer.Option(help="Eval file. Default: <stem>_eval.jsonl.")
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Split deterministically into train and eval files."""
    from prefopt.data.split import split_file

    summary = split_file(
        input, eval_fraction, seed, group_by, train_output, eval_output, force=force
    )
    unit = f"{group_by} groups" if group_by else "rows"
    table = _table(f"split: {input} (seed {seed})", "side", "rows", "file")
    table.add_row("train", f"{summary.train_rows:,}", _text(summary.train_path))
    table.add_row("eval", f"{summary.eval_rows:,}", _text(summary.eval_path))
    out = console()
    out.print(table)
    _say(f"{summary.eval_units:,} of {summary.units:,} {unit} in eval")


# -- stats ---------------------------------------------------------------------------------


@app.command()
@run_command
def stats(
    input: InputArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Counts, length histograms (characters) and the h-flag distribution."""
    from prefopt.data.stats import compute_stats

    result = compute_stats(input)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    out = console()
    counts = _table(f"stats: {input}", "", "rows", "share")
    counts.add_row("rows", f"{result.rows:,}", "")
    for kind, count in sorted(result.kinds.items()):
        counts.add_row(f"{kind} records", f"{count:,}", _share(count, result.rows))
    pairs = result.kinds["standard"] + result.kinds["conversational"] + result.kinds["other"]
    if pairs:
        counts.add_row(
            "chosen == rejected", f"{result.identical:,}", _share(result.identical, result.rows)
        )
    counts.add_section()
    for name, count in result.fields.most_common():
        counts.add_row(_text(f"field {name}"), f"{count:,}", _share(count, result.rows))
    out.print(counts)
    _print_lengths_table(out, result)
    _print_lists_and_conversations(out, result)
    _print_prompt_turns_and_flags(out, result)


def _print_lengths_table(out: Any, result: Any) -> None:
    """Prompt, chosen and rejected lengths: the columns some record has (a list's prompt)."""
    from prefopt.data.stats import PARTS, bucket_label

    names = [part for part in PARTS if result.lengths[part].count]
    if not names:
        return
    lengths = _table("lengths (characters)", "", *names)
    parts = [result.lengths[part] for part in names]
    lengths.add_row("min", *(str(s.minimum if s.minimum is not None else "–") for s in parts))
    lengths.add_row("mean", *(f"{s.mean:,.1f}" for s in parts))
    lengths.add_row("max", *(f"{s.maximum:,}" for s in parts))
    lengths.add_section()
    used = [i for i in range(len(parts[0].buckets)) if any(s.buckets[i] for s in parts)]
    for index in range(min(used, default=0), max(used, default=-1) + 1):
        lengths.add_row(bucket_label(index), *(_bar(s.buckets[index], s.count) for s in parts))
    out.print(lengths)


def _count_table(title: str, key: str, unit: str, counts: Any) -> Any:
    """A table of how many records (``unit``) have each value of ``key``."""
    table = _table(title, key, unit)
    for value, records in sorted(counts.items()):
        table.add_row(str(value), f"{records:,}")
    return table


def _print_lists_and_conversations(out: Any, result: Any) -> None:
    if result.conversation_turns:
        out.print(_count_table("conversations (preference turns each)", "turns",
                               "conversations", result.conversation_turns))  # fmt: skip
    if result.list_sizes:
        sizes = _count_table("lists (responses per prompt)", "responses", "lists",
                             result.list_sizes)  # fmt: skip
        sizes.add_section()
        answers = result.responses
        sizes.add_row("response length", f"min {answers.minimum}, mean {answers.mean:,.1f}, "
                      f"max {answers.maximum:,} characters")  # fmt: skip
        out.print(sizes)


def _print_prompt_turns_and_flags(out: Any, result: Any) -> None:
    if result.prompt_turns:
        out.print(_count_table("prompt messages (conversational)", "messages", "rows",
                               result.prompt_turns))  # fmt: skip
    if result.h_counts or result.h_invalid:
        flags = _table("h flags", "(h_w, h_l)", "rows", "share")
        for key in ((0, 0), (0, 1), (1, 0), (1, 1)):
            flags.add_row(
                str(key), f"{result.h_counts[key]:,}", _share(result.h_counts[key], result.rows)
            )
        if result.h_invalid:
            flags.add_row("invalid", f"{result.h_invalid:,}", _share(result.h_invalid, result.rows))
        flags.add_section()
        flags.add_row(
            "Δh = 1", f"{result.h_counts[(0, 1)]:,}", _share(result.h_counts[(0, 1)], result.rows)
        )
        out.print(flags)


def _bar(count: int, total: int, width: int = 12) -> str:
    filled = round(width * count / total) if total else 0
    return f"{count:>7,} {'█' * filled}"


# -- pairs ---------------------------------------------------------------------------------


PAIRS_HELP = (
    "Turn list records (a prompt, N responses, scores or a ranking) into preference pairs: "
    "best-worst (one pair a list), best-rest (the best against each lower one) or all (every "
    "two responses with different scores). Tied responses form no pair; pair records pass "
    "through. Each pair keeps the list's other fields and gets its score_gap. A per-turn "
    "conversation gives a pair for each preference turn: the earlier messages as the prompt, "
    "the turn's chosen and rejected answers."
)


@app.command(help=PAIRS_HELP)
@run_command
def pairs(
    input: InputArg,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Output JSONL. Default: <stem>_pairs.jsonl."),
    ] = None,
    pairing: Annotated[str, typer.Option(help="best-worst, best-rest or all.")] = "best-worst",
    force: ForceOpt = False,
) -> None:
    """Expand lists into pairs (see ``PAIRS_HELP``)."""
    from prefopt.data.lists import write_pairs_file

    stem = input.name.split(".")[0]
    output = output or input.with_name(f"{stem}_pairs.jsonl")
    summary = write_pairs_file(input, output, pairing, force=force)
    tied = f"; {summary.all_tied:,} lists all tied gave none" if summary.all_tied else ""
    copied = f"; {summary.passed_through:,} pair records copied" if summary.passed_through else ""
    turns = f"; {summary.conversations:,} conversations" if summary.conversations else ""
    _say(
        f"{summary.lists:,} lists → {summary.pairs:,} pairs ({pairing}){tied}{turns}{copied}; "
        f"wrote {output}"
    )


# -- doctor (its own module; registered here so that `prefopt data --help` lists it) -------
from prefopt.cli.data_doctor import DOCTOR_HELP, doctor  # noqa: E402

app.command(name="doctor", help=DOCTOR_HELP)(doctor)
