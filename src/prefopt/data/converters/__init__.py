"""Converters: from the shapes preference data arrives in to prefopt's record.

A converter is a :class:`ConverterSpec`: a name (the word after ``prefopt data convert
--from``), a one-line summary, and a function that turns one input row into one record
(``prompt``/``chosen``/``rejected`` plus any fields to carry along). Converters are plugins:
the built-in ones (:mod:`prefopt.data.converters.builtin`) and any third party's are
collected through the ``prefopt_converters`` hook::

    import prefopt
    from prefopt.data.converters import ConverterSpec, ConversionError

    def convert_mine(row, options):
        if "question" not in row:
            raise ConversionError("question", "missing field")
        return {"prompt": row["question"], "chosen": row["good"], "rejected": row["bad"]}

    @prefopt.hookimpl
    def prefopt_converters():
        return [ConverterSpec("mine", "my lab's format", convert_mine)]

A converter may return strings or message lists, and a pair record or a list record
(``prompt``/``responses``/``scores`` or ``ranking``, :mod:`prefopt.data.lists`);
:func:`convert_rows` makes the output conversational (or plain text with ``text=True``) and
validates every record.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefopt.data.converters.spec import ConversionError, ConverterSpec, ConvertOptions
from prefopt.data.lists import (
    is_list_record,
    list_to_conversational,
    list_to_standard,
    validate_list_record,
)
from prefopt.data.records import RECORD_FIELDS, to_conversational, to_standard, validate_record
from prefopt.errors import DataError, UsageError


@dataclass
class ConvertReport:
    """What a conversion did."""

    read: int = 0
    written: int = 0
    skipped: int = 0
    first_skipped: list[str] = field(default_factory=list)


def builtin_converters() -> list[ConverterSpec]:
    """The converters that ship with prefopt."""
    from prefopt.data.converters import builtin

    return builtin.prefopt_converters()


def get_converters() -> dict[str, ConverterSpec]:
    """All converters by name: the plugins' (``prefopt_converters`` hook) and the built-ins.

    The built-ins normally arrive through prefopt's own entry point, like a plugin's; any
    built-in that did not (an install without the entry point) is added here.
    """
    from prefopt.registry import get_registry

    found: dict[str, ConverterSpec] = {}
    for name, spec in get_registry().collect("prefopt_converters").items():
        if callable(getattr(spec, "convert", None)):
            found[name] = spec
        else:
            print(f"warning: converter '{name}' has no convert function; ignored", file=sys.stderr)
    for spec in builtin_converters():
        found.setdefault(spec.name, spec)
    return dict(sorted(found.items()))


def get_converter(name: str) -> ConverterSpec:
    """The converter called ``name``; ``UsageError`` listing the known ones if none is."""
    converters = get_converters()
    if name in converters:
        return converters[name]
    close = difflib.get_close_matches(name, list(converters), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UsageError(f"unknown format '{name}'.{hint} Known formats: {', '.join(converters)}.")


def convert_rows(
    rows: Iterable[tuple[int, dict[str, Any]]],
    spec: ConverterSpec,
    source: str | Path,
    options: ConvertOptions | None = None,
    text: bool = False,
    skip_invalid: bool = False,
    report: ConvertReport | None = None,
) -> Iterator[dict[str, Any]]:
    """Convert ``(line, row)`` pairs with ``spec``; every record is validated.

    Records are conversational, or plain strings with ``text``. A row that cannot be
    converted, or converts to an invalid record, raises ``DataError`` located at its line,
    or with ``skip_invalid`` is counted in ``report`` and left out.
    """
    options = options or ConvertOptions()
    report = report if report is not None else ConvertReport()
    for line, row in rows:
        report.read += 1
        try:
            record = _convert_one(spec, row, options, source, line)
            if is_list_record(record):
                record = list_to_standard(record) if text else list_to_conversational(record)
                validate_list_record(record, source, line)
            else:
                record = to_standard(record) if text else to_conversational(record)
                validate_record(record, source, line)
        except DataError as exc:
            if not skip_invalid:
                raise
            report.skipped += 1
            if len(report.first_skipped) < 5:
                report.first_skipped.append(str(exc))
            continue
        report.written += 1
        yield record
    if report.written == 0:  # everything was skipped: refuse to write an empty file
        raise DataError(source, None, None, f"no row could be converted as '{spec.name}'")


def _convert_one(
    spec: ConverterSpec, row: dict[str, Any], options: ConvertOptions, source: str | Path, line: int
) -> dict[str, Any]:
    try:
        record = spec.convert(row, options)
    except ConversionError as exc:
        raise DataError(source, line, exc.field, exc.problem) from None
    except KeyError as exc:  # a converter that indexes a missing field
        raise DataError(source, line, str(exc.args[0]), "missing field") from None
    if not isinstance(record, dict):
        raise DataError(
            source, line, None, f"converter '{spec.name}' returned {type(record).__name__}"
        )
    for name in ("prompt", "responses") if is_list_record(record) else RECORD_FIELDS:
        if name not in record:
            raise DataError(source, line, name, f"converter '{spec.name}' produced no {name}")
    return record
