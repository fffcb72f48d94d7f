"""Library chatter kept off the terminal: transformers' and datasets' info logs and progress
bars, warnings about what is not the user's concern, and (under ``quiet`` or without a
terminal) third-party tqdm bars. Called by every command and Python API function before it
loads a model (:func:`quiet_libraries`), together with the choice of torch's CPU threads."""

from __future__ import annotations

import os
import sys

#: Whether this process is a ``prefopt`` command, which owns the terminal (see quiet_libraries).
_command_line = False


def run_by_command_line() -> None:
    """Mark this process as a ``prefopt`` command (the CLI's entry point calls it)."""
    global _command_line
    _command_line = True


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


def quiet_libraries(quiet: bool = False, all_bars: bool | None = None) -> None:
    """Silence library chatter (transformers' and datasets' info logs, HF progress bars) and
    pick torch's CPU threads (``--threads`` / ``PREFOPT_THREADS``, else from the current load:
    see :mod:`prefopt.modeling.threads`). Every command and Python API call that loads a model
    calls this first.

    With ``all_bars``, under ``quiet`` (``-q``) or when stderr is no terminal (a log file),
    third-party tqdm bars are off too: transformers' GGUF loader draws its "Converting and
    de-quantizing" bar with tqdm directly, past its own progress-bar switch. ``all_bars``
    defaults to whether the process is the command line (:func:`run_by_command_line`): tqdm is
    switched off process-wide, and a notebook's own bars are not the Python API's to switch
    off."""
    import warnings

    from prefopt.modeling.threads import apply_threads

    apply_threads()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if all_bars is None:
        all_bars = _command_line
    if all_bars and (quiet or not sys.stderr.isatty()):
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
