"""Typing of configuration values from YAML files and command lines.

Every value of a run config passes through :func:`coerce`, which converts it to the type of
the dataclass field (or ``TrainingArguments`` field) it sets: ``"1e-5"`` (a string to PyYAML)
becomes a float, ``"[q_proj, v_proj]"`` a list, ``"null"`` ``None`` where allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

import yaml

from prefopt.errors import ConfigError


# -- typing --------------------------------------------------------------------------------
def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a command line) to the field type ``annotation``."""
    if annotation is Any or annotation is None or annotation is dataclasses.MISSING:
        return value
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        options = typing.get_args(annotation)
        # Only YAML's own nulls: "none" is a real value for some fields (report_to: none).
        is_null = value is None or (isinstance(value, str) and value.strip() in ("null", "~"))
        if is_null and type(None) in options:
            return None
        if isinstance(value, str) and value.strip().startswith("["):
            value = parse_scalar(value)  # "[q_proj, v_proj]" is a list, not a string
        errors = []
        # Try the most specific types first so "3" stays an int where int is allowed.
        for option in sorted(options, key=_specificity):
            if option is type(None):
                continue
            try:
                return coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: cannot use {value!r} ({'; '.join(errors) or 'no type fits'})")
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        if isinstance(value, str):
            parsed = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
            value = parsed
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(annotation)
        item_type = args[0] if args else Any
        return [coerce(item, item_type, key) for item in value]
    if origin in (dict, Mapping) or annotation is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                if number.is_integer():
                    return int(number)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        if issubclass(annotation, str) and isinstance(value, bool):
            value = "yes" if value else "no"  # YAML 1.1 read `save_strategy: no` as False
        if issubclass(annotation, str) and isinstance(value, str):  # str enums
            try:
                checked = annotation(value)  # validates; the config keeps plain text
                return getattr(checked, "value", checked)
            except ValueError as exc:
                raise ConfigError(f"{key}: {exc}") from None
        try:
            return annotation(value)
        except Exception:
            raise ConfigError(f"{key}: expected {annotation.__name__}, got {value!r}") from None
    return value


def _specificity(option: Any) -> int:
    """Try order within a union: numbers before text, and text before lists, so that
    ``all-linear`` stays a string for ``list[str] | str`` (a saved config reads back as written)."""
    order = {bool: 0, int: 1, float: 2}
    if option in order:
        return order[option]
    if typing.get_origin(option) in (list, tuple) or option in (list, tuple):
        return 10
    if option is str:
        return 9
    return 5


_YAML11_BOOLEAN_WORDS = {"yes", "no", "on", "off", "y", "n"}


def parse_scalar(text: str) -> Any:
    """A command-line value as YAML would read it (``null``, ``[a, b]``, numbers, ...).

    YAML 1.1's ``yes/no/on/off`` stay text: ``save_strategy=no`` means the string ``"no"``, and
    :func:`coerce` still reads them as booleans for boolean fields."""
    if text.strip().lower() in _YAML11_BOOLEAN_WORDS:
        return text.strip()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def format_number(value: float | int) -> str:
    """A number as it appears in run and folder names: ``10.0 -> "10"``, ``0.5 -> "0.5"``,
    ``1e-05 -> "1e-05"`` (no trailing ``.0``, no float noise)."""
    if isinstance(value, bool):
        return str(value).lower()
    number = float(value)
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return repr(number) if isinstance(value, float) else str(value)
