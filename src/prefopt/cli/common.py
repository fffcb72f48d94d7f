"""Shared CLI plumbing: error handling, consoles and the global ``--debug``/``--quiet`` state."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from prefopt.console import console as console  # re-exported for the commands
from prefopt.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])


#: Every command's ``--trust-remote-code`` flag (off by default everywhere).
TrustRemoteCodeOption = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Run the Python code that ships with the model repository (custom "
        "architectures); only for sources you trust.",
    ),
]


def reflow(text: str) -> str:
    """A docstring as help text: each paragraph on one line (the terminal wraps it), blank
    lines between paragraphs kept. Typer's rich help keeps a docstring's line breaks, which
    broke descriptions mid-sentence in a narrow terminal's command list."""
    import inspect

    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def reflow_help(app: typer.Typer) -> None:
    """Give every command of ``app`` (and of its sub-apps) its docstring as :func:`reflow`-ed
    help, unless it has an explicit one."""
    for info in app.registered_commands:
        text = info.help or (info.callback.__doc__ if info.callback is not None else None)
        if text:
            info.help = reflow(text)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            reflow_help(group.typer_instance)


def silence_tqdm() -> None:
    """Turn tqdm progress bars off in this process and its children: ``TQDM_DISABLE`` for
    tqdm imported later (it reads the environment at import), the default of an already
    imported tqdm otherwise."""
    import functools

    os.environ["TQDM_DISABLE"] = "1"
    tqdm_module = sys.modules.get("tqdm.std")
    if tqdm_module is not None:
        bar = tqdm_module.tqdm
        bar.__init__ = functools.partialmethod(bar.__init__, disable=True)


class State:
    """Process-wide CLI switches set by the top-level callback."""

    debug: bool = bool(os.environ.get("PREFOPT_DEBUG"))
    quiet: bool = False


def error(message: str) -> None:
    """Print a one-line error to stderr (a worker of ``--num-processes`` hands it to the
    parent instead, which prints each distinct line once)."""
    from prefopt.training.launch import leave_worker_error

    if not leave_worker_error(message):
        print(f"error: {message}", file=sys.stderr)


def run_command(function: F) -> F:
    """Turn ``UsageError`` into ``error: ...`` + exit 2, and any other exception into a one-line
    message + exit 1 (with the traceback under ``--debug``)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except typer.Exit:
            raise
        except UsageError as exc:
            if State.debug:
                raise
            error(str(exc))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            error("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            if State.debug:
                raise
            error(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


#: Loggers that warn on import about what is not the user's concern: bitsandbytes about an
#: optional CPU kernel package, and that package (``kernels``, which bitsandbytes 0.50 asks for
#: a hub kernel when it is imported) that it skips its publisher check in offline mode.
IMPORT_CHATTER = ("bitsandbytes", "kernels")


def silence_import_chatter() -> None:
    """Keep the :data:`IMPORT_CHATTER` loggers to errors, so a command's stderr holds only
    prefopt's own lines (a one-line error stays one line)."""
    import logging

    for name in IMPORT_CHATTER:
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_libraries(quiet: bool = False) -> None:
    """Silence library chatter (transformers' and datasets' info logs, HF progress bars) and
    pick torch's CPU threads (``--threads`` / ``PREFOPT_THREADS``, else from the current load:
    see :mod:`prefopt.modeling.threads`). Every command that loads a model calls this first.

    Under ``-q`` (``quiet`` or the global flag) or when stderr is no terminal (a log file),
    third-party tqdm bars are off too: transformers' GGUF loader draws its "Converting and
    de-quantizing" bar with tqdm directly, past its own progress-bar switch."""
    import warnings

    from prefopt.modeling.threads import apply_threads

    apply_threads()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if quiet or State.quiet or not sys.stderr.isatty():
        silence_tqdm()
    silence_import_chatter()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|trl)\.")
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    # PEFT saving an adapter of a base without config.json (a GGUF file): it cannot check
    # that the vocabulary was not resized; prefopt never resizes it. Printed at every save.
    warnings.filterwarnings("ignore", message="Could not find a config file in ")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
