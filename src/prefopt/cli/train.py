"""``prefopt train ALGO``: one command per registered algorithm, flags generated from its config.

The commands are built only when ``train`` is invoked (``register_algorithm_commands``), so
``prefopt --help`` never loads plugins. Each config dataclass field becomes ``--field-name``
with the field's ``metadata["help"]`` in an "Algorithm" help panel.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from prefopt.cli.common import State, console, error, quiet_libraries, run_command
from prefopt.workflows import SHORT_KEYS

app = typer.Typer(
    help="Train a model with a preference algorithm, one command per algorithm "
    "(`prefopt train ALGO --help` shows its options).",
    no_args_is_help=True,
)

RUN_PANEL = "Run"
# name -> (dotted config key or None, annotation, option declarations, help); the run options'
# keys are the Python API's (prefopt.train(model=..., train_file=...)), from one table

COMMON_OPTIONS: list[tuple[str, str | None, Any, list[str], str]] = [
    (
        "config",
        None,
        Path | None,
        ["--config", "-c"],
        "YAML run config (sections model, lora, data, training, algorithm).",
    ),
    (
        "model",
        SHORT_KEYS["model"],
        str | None,
        ["--model", "-m"],
        "Model hub id or local folder (model.name_or_path).",
    ),
    (
        "train_file",
        SHORT_KEYS["train_file"],
        str | None,
        ["--train-file"],
        "Training data (pairs, lists of ranked responses or per-turn conversations): "
        ".jsonl/.json/.parquet file or hub dataset (data.train).",
    ),
    (
        "eval_file",
        SHORT_KEYS["eval_file"],
        str | None,
        ["--eval-file"],
        "Evaluation pairs (data.eval).",
    ),
    (
        "output_dir",
        SHORT_KEYS["output_dir"],
        str | None,
        ["--output-dir", "-o"],
        "Output folder (default runs/<run name>).",
    ),
    (
        "run_name",
        SHORT_KEYS["run_name"],
        str | None,
        ["--run-name"],
        "Run name (default: the algorithm's, e.g. DPO_<model>).",
    ),
    (
        "max_steps",
        SHORT_KEYS["max_steps"],
        int | None,
        ["--max-steps"],
        "Stop after this many optimizer steps (-1: no limit, num_train_epochs decides).",
    ),
    (
        "sets",
        None,
        list[str] | None,
        ["--set"],
        "Override any config key: --set training.learning_rate=1e-5 (repeatable).",
    ),
    (
        "resume",
        None,
        bool,
        ["--resume"],
        "Continue from the newest checkpoint-<step> in the output folder.",
    ),
    (
        "overwrite",
        None,
        bool,
        ["--overwrite", "--force"],
        "Replace the run already in the output folder (its checkpoints, metrics, adapter/model, "
        "config and eval results are removed first).",
    ),
    (
        "num_processes",
        None,
        int | None,
        ["--num-processes"],
        "Data-parallel processes on this machine (relaunches under torch.distributed; "
        "see docs/distributed.md).",
    ),
    ("print_config", None, bool, ["--print-config"], "Print the resolved config as YAML and exit."),
    (
        "quiet",
        None,
        bool,
        ["--quiet", "-q"],
        "No progress display, only errors and the final summary.",
    ),
]


def _option_annotation(annotation: Any) -> Any:
    """The CLI type of a config field: scalars as themselves, anything else as text."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if len(args) == 1 else annotation
    if base in (bool, int, float, str):
        return base | None
    return str | None


def algorithm_flag(f: dataclasses.Field[Any], taken: set[str]) -> str:
    """The option of config field ``f``, without dashes: ``metadata["flag"]`` if the field
    names one, else the field name with ``-`` for ``_``; ``algo-`` in front where a run option
    has that name. A field with ``metadata["repeatable"]`` is an option given once per item;
    ``metadata["metavar"]`` names its value in ``--help``."""
    flag = str(f.metadata.get("flag") or f.name.replace("_", "-"))
    return f"algo-{flag}" if flag in taken else flag


def _algorithm_parameters(
    config_class: type, taken: set[str]
) -> list[tuple[str, str, inspect.Parameter]]:
    hints = typing.get_type_hints(config_class)
    params = []
    for f in dataclasses.fields(config_class):
        flag = algorithm_flag(f, taken)
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{f.metadata.get('help', '')} (default: {default})".strip()
        cli_type = _option_annotation(hints.get(f.name, str))
        if f.metadata.get("repeatable"):  # --flag A --flag B: the field gets the list [A, B]
            cli_type = list[str] | None
            help_text = str(f.metadata.get("help", ""))
        decls = [f"--{flag}/--no-{flag}"] if cli_type == bool | None else [f"--{flag}"]
        option = typer.Option(
            *decls,
            help=help_text,
            rich_help_panel="Algorithm",
            show_default=False,
            metavar=f.metadata.get("metavar"),
        )
        name = f"algo__{f.name}"
        params.append(
            (
                name,
                f.name,
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=None,
                    annotation=Annotated[cli_type, option],
                ),
            )
        )
    return params


def build_algorithm_command(spec: Any) -> Any:
    """A function with a generated signature that trains ``spec`` (registered with Typer)."""
    common_params = []
    for name, _, annotation, decls, help_text in COMMON_OPTIONS:
        default: Any = False if annotation is bool else None
        option = typer.Option(*decls, help=help_text, rich_help_panel=RUN_PANEL)
        common_params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=Annotated[annotation, option],
            )
        )
    taken = {d.lstrip("-") for _, _, _, decls, _ in COMMON_OPTIONS for d in decls}
    algorithm_params = _algorithm_parameters(spec.config_class, taken)

    @run_command
    def command(**values: Any) -> None:
        flags: dict[str, Any] = {}
        for name, key, *_ in COMMON_OPTIONS:
            if key is not None:
                flags[key] = values.get(name)
        for name, field_name, _ in algorithm_params:
            flags[f"algorithm.{field_name}"] = values.get(name)
        run_training(
            spec,
            config_file=values.get("config"),
            flags=flags,
            sets=values.get("sets") or [],
            resume=bool(values.get("resume")),
            overwrite=bool(values.get("overwrite")),
            print_config=bool(values.get("print_config")),
            quiet=bool(values.get("quiet")) or State.quiet,
            num_processes=values.get("num_processes"),
        )

    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        common_params + [p for _, _, p in algorithm_params]
    )
    command.__doc__ = f"{spec.summary}"
    return command


def register_algorithm_commands() -> None:
    """Add one ``prefopt train NAME`` command per registered algorithm (once)."""
    if getattr(app, "_prefopt_loaded", False):
        return
    from prefopt.registry import list_algorithms

    for name, spec in sorted(list_algorithms().items()):
        app.command(name, help=spec.summary)(build_algorithm_command(spec))
    app._prefopt_loaded = True  # type: ignore[attr-defined]


def run_training(
    spec: Any,
    config_file: Path | None,
    flags: dict[str, Any],
    sets: list[str],
    resume: bool,
    print_config: bool,
    quiet: bool,
    num_processes: int | None = None,
    overwrite: bool = False,
) -> None:
    """Resolve the config and train it through :mod:`prefopt.workflows` (or launch workers
    that do); print the summary."""
    from prefopt import workflows
    from prefopt.config_layers import resolve_run_config
    from prefopt.training.launch import is_main_process, wants_launch

    # Config and output-folder mistakes are answered before torch is imported (seconds).
    config = resolve_run_config(spec, config_file, flags, sets)
    if print_config:
        from prefopt.training.redaction import redacted_config_yaml

        typer.echo(redacted_config_yaml(config), nl=False)
        return
    check_folder = _checks_output_dir()
    try:
        if wants_launch(num_processes):  # start the workers; each re-resolves the same layers
            finished = workflows.preflight(config, resume, overwrite, check_folder)
            if finished is None:
                quiet_libraries(quiet)
                _launch(spec, config_file, flags, sets, resume, overwrite, quiet, num_processes)
            else:
                _say_finished(config.output_dir, finished)
            return
        result = workflows.train_config(
            config, spec, resume=resume, overwrite=overwrite, quiet=quiet, check_folder=check_folder
        )
    except KeyboardInterrupt:
        if is_main_process():
            error(f"interrupted; {_resume_hint(config.output_dir)}")
        raise typer.Exit(130) from None
    if result.already_finished:
        _say_finished(config.output_dir, result.steps)
    elif is_main_process():
        print_summary(result)


def _launch(
    spec: Any,
    config_file: Path | None,
    flags: dict[str, Any],
    sets: list[str],
    resume: bool,
    overwrite: bool,
    quiet: bool,
    num_processes: int | None,
) -> None:
    """Run ``num_processes`` workers of this command (``--num-processes``); their errors are
    printed once, and the worst exit code is this command's."""
    from prefopt.training.launch import child_arguments, launch

    arguments = child_arguments(
        spec.name,
        config_file,
        flags,
        sets,
        resume=resume,
        overwrite=overwrite,
        quiet=quiet,
        debug=State.debug,
    )
    code, errors = launch(num_processes or 1, arguments)
    for line in errors:
        error(line)
    if code and not errors:
        error(f"a worker process failed with exit code {code}")
    if code:
        raise typer.Exit(code)


def _say_finished(output_dir: Path, step: int) -> None:
    where = f"at step {step}" if step else "(its final model is saved)"
    typer.echo(
        f"{output_dir}: the run is finished {where}; nothing to resume "
        "(raise --max-steps to train further, or --overwrite to start anew)"
    )


def _resume_hint(output_dir: Any) -> str:
    from prefopt.training.checkpoints import latest_checkpoint

    checkpoint = latest_checkpoint(output_dir)
    if checkpoint is None:
        return "no checkpoint was saved yet: rerun the same command to start again"
    return f"rerun with --resume to continue from {checkpoint.name}"


def _checks_output_dir() -> bool:
    """Whether this process checks the output folder: a single process or the parent of
    ``--num-processes`` workers (not the workers), else rank 0 of an outside launcher."""
    from prefopt.training.launch import is_main_process, launched_worker

    return is_main_process() and not launched_worker()


def print_summary(result: Any) -> None:
    from rich.table import Table

    table = Table(title="run finished", show_header=False, title_justify="left")
    table.add_row("output", str(result.output_dir))
    table.add_row("steps", str(result.steps))
    unit = getattr(result, "train_unit", "pairs")
    dropped = "turns dropped" if unit == "conversations" else "dropped"
    table.add_row(f"train {unit}", f"{result.train_pairs} ({result.dropped_pairs} {dropped})")
    if getattr(result, "reference", ""):
        table.add_row("reference", result.reference)
    for key in (
        "loss",
        "rewards/accuracies",
        "rewards/margins",
        "eval_loss",
        "eval_rewards/accuracies",
    ):
        if key in result.final_metrics:
            table.add_row(key, f"{result.final_metrics[key]:.4f}")
    show = console()
    show.print(table)
    timing = getattr(result, "timing", None)
    if timing:
        from prefopt.training.timing import format_timing

        show.print(f"time: {format_timing(timing)}", soft_wrap=True)
    compute = getattr(result, "utilization", None)
    if compute:
        from prefopt.training.utilization import describe

        show.print(describe(compute), soft_wrap=True)
    print_findings(getattr(result, "findings", None) or [])


def print_findings(findings: list[Any]) -> None:
    """The health checks' findings, each with its advice (docs/configuration.md#health)."""
    if not findings:
        return
    show = console()
    count = len(findings)
    show.print(f"health: {count} finding{'s' if count > 1 else ''}", style="bold yellow")
    for finding in findings:
        rule = finding.rule.replace("-", " ")
        text = f"  {rule} (step {finding.step}): {finding.message}."
        show.print(text, soft_wrap=True, markup=False)
        show.print(f"    advice: {finding.advice}", soft_wrap=True, markup=False)
