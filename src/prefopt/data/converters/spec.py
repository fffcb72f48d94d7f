"""What a converter is: its spec, its options and the error it raises for a row.

Kept apart from :mod:`prefopt.data.converters` so that converter modules (the built-ins and a
plugin's) import these without importing the registry of converters that imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ConvertOptions:
    """Settings a converter may use: the input's field names (``columns``, ``messages``)."""

    prompt_key: str = "prompt"
    chosen_key: str = "chosen"
    rejected_key: str = "rejected"
    #: The completion field that scores a response (``ultrafeedback-raw``).
    score_key: str = "overall_score"


@dataclass(frozen=True)
class ConverterSpec:
    """One input format: ``convert(row, options)`` returns the record for one input row and
    raises :class:`ConversionError` for a row it cannot convert."""

    name: str
    summary: str
    convert: Callable[[dict[str, Any], ConvertOptions], dict[str, Any]]


class ConversionError(Exception):
    """A row that cannot be converted; located by :func:`convert_rows` as file:line."""

    def __init__(self, field: str | None, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem
