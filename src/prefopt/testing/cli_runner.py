"""A ``prefopt`` command run inside the test's own process.

Kept apart from :mod:`prefopt.testing.kit` (and from the package's exports) because it imports
the command line, which itself imports the test kit for ``prefopt demo``.
"""

from __future__ import annotations

import os


def run_cli_in_process(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """:func:`run_cli` in this process: no interpreter start-up and no torch import per call
    (seconds each), for tests of what a command does rather than of a fresh process (import
    time, signals, launchers, plugins found through ``PYTHONPATH``). The CLI's process-wide
    switches (``-q``, ``--debug``, the command line's claim on tqdm bars) and ``env`` are
    restored afterwards; returns ``(exit code, stdout, stderr)``."""
    import contextlib
    import io
    import sys

    from prefopt.cli.common import State
    from prefopt.cli.main import main
    from prefopt.modeling import library_noise

    saved_switches = (State.quiet, State.debug, library_noise._command_line)
    tqdm_class = getattr(sys.modules.get("tqdm.std"), "tqdm", None)
    saved_tqdm_init = None if tqdm_class is None else tqdm_class.__init__
    saved_env = dict(os.environ)
    os.environ.update({"COLUMNS": "200", "HF_HUB_OFFLINE": "1", **(env or {})})
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        State.quiet, State.debug, library_noise._command_line = saved_switches
        if tqdm_class is not None:
            tqdm_class.__init__ = saved_tqdm_init
        os.environ.clear()
        os.environ.update(saved_env)
    return code, stdout.getvalue(), stderr.getvalue()
