"""The fields of ``transformers.TrainingArguments`` and their types, without importing it.

A run config's ``training:`` section takes any ``TrainingArguments`` keyword. Checking a key,
and typing its value (``"1e-5"`` from YAML is a float), needs the dataclass's fields, and
importing transformers costs seconds. So the fields are read once per transformers version and
cached as a small table (name -> type as text, :func:`type_text`) in prefopt's cache folder;
later runs read the table. The ~10% of fields whose types need transformers' own modules (its
enums) are typed by importing it when such a key is set.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import os
import types
import typing
from pathlib import Path
from typing import Any

#: Bump when :func:`type_text` changes, so cached tables are written anew.
TABLE_VERSION = 3


def training_argument_types() -> dict[str, Any]:
    """Names and types of ``transformers.TrainingArguments`` (imports transformers)."""
    from transformers import TrainingArguments

    return {f.name: f.type for f in dataclasses.fields(TrainingArguments) if f.init}


def training_argument_names() -> frozenset[str]:
    """The names of ``TrainingArguments``' fields (see :func:`training_argument_table`)."""
    return frozenset(training_argument_table())


def training_argument_table() -> dict[str, str | None]:
    """``TrainingArguments``' field names, each with its type as text where the type is built
    from ``bool``/``int``/``float``/``str``/``None``/``list``/``dict`` alone (``None`` for the
    rest, e.g. transformers' enums). Read from a small cache file per transformers version
    (written on first use), so a mistyped ``training.*`` key is reported, and most values are
    typed, before transformers (seconds to import) is loaded."""
    import json

    path = _training_names_file()
    if path is not None and path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            loaded = None
        if isinstance(loaded, dict):
            return loaded
    table = {name: type_text(kind) for name, kind in training_argument_types().items()}
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(table, sort_keys=True), encoding="utf-8")
            os.replace(temporary, path)
        except OSError:  # an unwritable cache only costs the next run the import
            pass
    return table


class StrChoice(str):
    """Stands for one of transformers' str enums (``IntervalStrategy``, ``SchedulerType``) in
    a union with ``str``: typed as text the way :func:`prefopt.config_values.coerce` types a
    str enum (YAML 1.1 reads ``save_strategy: no`` as ``False``: it becomes ``"no"``), and the
    enum's own check left to ``TrainingArguments``. Constructing one gives a plain ``str``."""

    def __new__(cls, value: object) -> str:  # type: ignore[misc]
        return str(value)


_PLAIN_TYPES: dict[str, Any] = {
    "bool": bool,
    "int": int,
    "float": float,
    "str": str,
    "choice": StrChoice,
    "dict": dict,
    "None": type(None),
}


def type_text(annotation: Any) -> str | None:
    """``int | None`` -> ``"int|None"``, ``list[str]`` -> ``"list[str]"``; ``None`` for a type
    that needs its own module to check values (an enum, a class)."""
    names = {kind: name for name, kind in _PLAIN_TYPES.items()}
    if annotation in names:
        return names[annotation]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        if str in args:  # IntervalStrategy | str: the enum as text (StrChoice)
            args = tuple(
                StrChoice if a is not str and isinstance(a, type) and issubclass(a, str) else a
                for a in args
            )
        parts = [type_text(arg) for arg in args]
        return None if None in parts else "|".join(str(part) for part in parts)
    if origin is dict:
        return "dict"
    if origin is list and len(args) == 1:
        inner = type_text(args[0])
        return f"list[{inner}]" if inner in _PLAIN_TYPES else None
    return None


def type_from_text(text: str) -> Any:
    """The annotation :func:`type_text` describes (``KeyError`` for text it never writes)."""
    options: list[Any] = []
    for part in text.split("|"):
        if part.startswith("list[") and part.endswith("]"):
            options.append(list[_PLAIN_TYPES[part[5:-1]]])  # type: ignore[misc]
        else:
            options.append(_PLAIN_TYPES[part])
    return functools.reduce(operator.or_, options)  # int | None, list[str] | str | None


def _training_names_file() -> Path | None:
    from importlib.metadata import PackageNotFoundError, version

    from prefopt.paths import default_cache_dir

    try:
        release = version("transformers")
    except PackageNotFoundError:
        return None
    return default_cache_dir() / "config" / f"training-arguments-{release}-v{TABLE_VERSION}.json"
