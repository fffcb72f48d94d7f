"""Errors that the CLI turns into a one-line message and exit code 2.

Anything raised as a :class:`UsageError` (or a subclass) is the user's to fix: a bad flag,
a missing file, a malformed record. Everything else is a bug and exits with code 1.
"""

from __future__ import annotations

from pathlib import Path


class UsageError(Exception):
    """Bad usage or bad input; the message is shown as is, without a traceback."""


class ConfigError(UsageError):
    """An invalid run configuration: unknown key, wrong type, impossible value."""


class DataError(UsageError):
    """A problem in an input data file, located as ``file:line: field: problem``."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.problem = problem
        location = self.path if line is None else f"{self.path}:{line}"
        message = f"{location}: {field}: {problem}" if field else f"{location}: {problem}"
        super().__init__(message)
