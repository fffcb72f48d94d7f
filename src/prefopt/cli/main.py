"""The ``prefopt`` command: a Typer app assembling one sub-app per command group."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from prefopt import __version__
from prefopt.cli import data, demo, plugins, sweep, train
from prefopt.cli.common import State, error, reflow_help
from prefopt.cli.eval import app as eval_app
from prefopt.cli.merge import merge as merge_command
from prefopt.cli.models import models as models_command
from prefopt.cli.report import REPORT_HELP
from prefopt.cli.report import report as report_command
from prefopt.modeling.library_noise import run_by_command_line, silence_import_chatter

app = typer.Typer(
    name="prefopt",
    help="Preference optimization of language models: DPO, Factual-DPO, β-DPO, dynamic-β, "
    "SFT and rank-1 LoRA DPO, each algorithm a plugin.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"prefopt {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Less output.")] = False,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads for torch and data flip's processes (env PREFOPT_THREADS; "
            "default: the free CPUs, "
            "i.e. available CPUs minus the current load average, at least 1).",
        ),
    ] = None,
) -> None:
    """prefopt: align a language model with preference pairs."""
    State.debug = State.debug or debug
    State.quiet = quiet
    if threads is not None:
        os.environ["PREFOPT_THREADS"] = str(threads)  # read when a command sets up torch


app.add_typer(train.app, name="train")
app.add_typer(data.app, name="data")
app.add_typer(plugins.app, name="plugins")
app.command("demo")(demo.demo)
app.command("merge")(merge_command)
app.add_typer(eval_app, name="eval")
app.command("sweep")(sweep.sweep)
app.command("models")(models_command)
app.command("report", help=REPORT_HELP)(report_command)
reflow_help(app)


#: Global options that take a value (the value is no command word).
_VALUE_OPTIONS = ("--threads",)


def _command_words(argv: list[str]) -> list[str]:
    words: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in _VALUE_OPTIONS:
            skip = True
        elif not word.startswith("-"):
            words.append(word)
    return words


def prepare(argv: list[str]) -> int | None:
    """Load what the invoked command needs before Typer parses it; an exit code on bad usage."""
    words = _command_words(argv)
    if words[:1] != ["train"]:
        return None
    from prefopt.errors import UsageError
    from prefopt.registry import get_algorithm

    train.register_algorithm_commands()
    if len(words) > 1:
        try:
            get_algorithm(words[1])
        except UsageError as exc:
            error(str(exc))
            return 2
    return None


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    run_by_command_line()
    silence_import_chatter()
    code = prepare(argv)
    if code is not None:
        raise SystemExit(code)
    from prefopt.training.launch import launched_worker

    if not launched_worker():
        app(args=argv, prog_name="prefopt")
        return
    exit_code = 1
    try:
        app(args=argv, prog_name="prefopt")
        exit_code = 0
    except SystemExit as exc:
        exit_code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        leave_worker(exit_code)


def leave_worker(code: int) -> None:
    """End a ``--num-processes`` worker: close its process group, flush its output and leave
    without the interpreter's teardown. Left to that teardown, a thread of the distributed
    runtime was now and then destroyed while still running ("terminate called without an
    active exception", SIGABRT), and a finished run was reported failed (about one run in
    ten of ``--num-processes 2`` on CPU)."""
    import logging
    import os

    close_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def close_process_group() -> None:
    """Tear down this process's process group, if it has one (never imports torch itself)."""
    import contextlib

    distributed = sys.modules.get("torch.distributed")
    if distributed is None or not distributed.is_available() or not distributed.is_initialized():
        return
    with contextlib.suppress(Exception):  # a group that is already failing: the exit code says
        distributed.destroy_process_group()
