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


def quiet_libraries(quiet: bool = False) -> None:
    """:func:`prefopt.modeling.library_noise.quiet_libraries` under this command's ``-q``
    (``quiet`` or the global flag). Every command that loads a model calls this first."""
    from prefopt.modeling.library_noise import quiet_libraries as quiet_for

    quiet_for(quiet or State.quiet)


def load_tokenizer(name: str) -> Any:
    """The tokenizer of a hub id, folder or GGUF file (no remote code), for the data commands
    that measure token lengths; a tokenizer that cannot be loaded is a usage error."""
    quiet_libraries()
    from transformers import AutoTokenizer

    from prefopt.local_models import resolve_model_name
    from prefopt.modeling.gguf import pretrained_arguments

    location, gguf = pretrained_arguments(resolve_model_name(name) or name)
    try:
        return AutoTokenizer.from_pretrained(location, trust_remote_code=False, **gguf)
    except (OSError, ValueError, NotImplementedError) as exc:
        raise UsageError(f"cannot load a tokenizer from {name}: {exc}") from None
