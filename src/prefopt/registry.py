"""Plugin discovery: a pluggy ``PluginManager`` fed by entry points of group ``prefopt``.

Built-in algorithms come in through prefopt's own entry points, exactly like a third party's.
Loading is forgiving: a plugin that fails to import, asks for an incompatible plugin API,
returns an invalid spec or reuses a taken name is reported with a warning naming its package
and shown as broken in ``prefopt plugins list``; everything else keeps working.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from prefopt import hookspecs
from prefopt.api import PLUGIN_API_VERSION, AlgorithmSpec
from prefopt.errors import UsageError

ENTRY_POINT_GROUP = "prefopt"
_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, as ``prefopt plugins list`` shows it."""

    name: str
    package: str
    version: str
    problems: list[str] = field(default_factory=list)
    algorithms: list[str] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        return bool(self.problems)


class PluginRegistry:
    """Everything the installed plugins provide, loaded once and cached."""

    def __init__(self, warn: Callable[[str], None] | None = None) -> None:
        self.manager = pluggy.PluginManager("prefopt")
        self.manager.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._warn = warn or _warn_to_stderr
        self._algorithms: dict[str, AlgorithmSpec] | None = None
        self._providers: dict[str, PluginInfo] = {}
        self._kinds: dict[str, dict[str, Any]] = {}

    # -- loading ---------------------------------------------------------------------------
    def load_entry_points(self) -> PluginRegistry:
        for entry_point in _entry_points():
            dist = getattr(entry_point, "dist", None)
            package = dist.name if dist is not None else entry_point.value.split(":")[0]
            version = dist.version if dist is not None else "?"
            info = PluginInfo(entry_point.name, package, version)
            try:
                module = entry_point.load()
            except Exception as exc:  # a broken plugin must not take the CLI down
                self._problem(info, f"failed to import {entry_point.value}: {_describe(exc)}")
                self.plugins[info.name] = info
                continue
            self.register(module, info)
        return self

    def register(self, module: ModuleType | object, info: PluginInfo) -> None:
        """Register one plugin object (normally a module) under ``info``."""
        self.plugins[info.name] = info
        wanted = getattr(module, "PREFOPT_PLUGIN_API", None)
        if wanted is not None and str(wanted).split(".")[0] != PLUGIN_API_VERSION.split(".")[0]:
            self._problem(
                info,
                f"written for plugin API {wanted}, this prefopt provides {PLUGIN_API_VERSION}; "
                "upgrade the plugin or prefopt",
            )
            return
        try:
            self.manager.register(module, name=info.name)
        except Exception as exc:
            self._problem(info, f"cannot be registered: {_describe(exc)}")
        self._algorithms = None
        self._kinds.clear()

    def _problem(self, info: PluginInfo, problem: str) -> None:
        info.problems.append(problem)
        self._warn(f"plugin '{info.name}' (package {info.package} {info.version}): {problem}")

    # -- collecting ------------------------------------------------------------------------
    def _call_each(self, hook_name: str) -> Iterable[tuple[PluginInfo, list[Any]]]:
        """Call one hook on every plugin separately, so each result keeps its provider."""
        hook = getattr(self.manager.hook, hook_name)
        for impl in hook.get_hookimpls():
            info = self.plugins.get(impl.plugin_name) or PluginInfo(impl.plugin_name, "?", "?")
            try:
                items = list(impl.function() or [])
            except Exception as exc:
                self._problem(info, f"{hook_name}() raised {_describe(exc)}")
                continue
            yield info, items

    @property
    def algorithms(self) -> dict[str, AlgorithmSpec]:
        if self._algorithms is None:
            self._algorithms = {}
            for info, specs in self._call_each("prefopt_algorithms"):
                for spec in specs:
                    problem = _spec_problem(spec)
                    if problem is None and spec.name in self._algorithms:
                        other = self._providers[spec.name]
                        problem = (
                            f"algorithm name '{spec.name}' is already taken by "
                            f"package {other.package}; ignored"
                        )
                    if problem:
                        self._problem(info, problem)
                        continue
                    self._algorithms[spec.name] = spec
                    self._providers[spec.name] = info
                    info.algorithms.append(spec.name)
        return self._algorithms

    def provider(self, algorithm: str) -> PluginInfo:
        self.algorithms  # noqa: B018 - make sure providers are known
        return self._providers[algorithm]

    def collect(self, hook_name: str, key: str = "name") -> dict[str, Any]:
        """Items of another plugin kind (converters, judges), keyed by their ``key``."""
        if hook_name not in self._kinds:
            items: dict[str, Any] = {}
            for info, found in self._call_each(hook_name):
                for item in found:
                    name = getattr(item, key, None)
                    if not isinstance(name, str):
                        self._problem(info, f"{hook_name}() returned {item!r} without a {key}")
                    elif name in items:
                        self._problem(info, f"{hook_name}: name '{name}' is already taken")
                    else:
                        items[name] = item
            self._kinds[hook_name] = items
        return self._kinds[hook_name]

    def get_algorithm(self, name: str) -> AlgorithmSpec:
        algorithms = self.algorithms
        if name in algorithms:
            return algorithms[name]
        known = ", ".join(sorted(algorithms)) or "none"
        close = difflib.get_close_matches(name, list(algorithms), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"unknown algorithm '{name}'.{hint} Known algorithms: {known}.")


def _spec_problem(spec: Any) -> str | None:
    if not isinstance(spec, AlgorithmSpec):
        return f"returned {type(spec).__name__} instead of prefopt.api.AlgorithmSpec"
    if not isinstance(spec.name, str) or not _NAME_PATTERN.match(spec.name):
        return f"invalid algorithm name {spec.name!r} (lowercase letters, digits and '-')"
    if not (isinstance(spec.config_class, type) and dataclasses.is_dataclass(spec.config_class)):
        return f"algorithm '{spec.name}': config_class must be a dataclass"
    if not callable(spec.make_loss):
        return f"algorithm '{spec.name}': make_loss is not callable"
    return None


def _entry_points() -> list[metadata.EntryPoint]:
    found = metadata.entry_points(group=ENTRY_POINT_GROUP)
    unique: dict[str, metadata.EntryPoint] = {}
    for entry_point in found:  # the same distribution may be seen twice on sys.path
        unique.setdefault(entry_point.name, entry_point)
    return list(unique.values())


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _warn_to_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


_REGISTRY: PluginRegistry | None = None


def get_registry() -> PluginRegistry:
    """The process-wide registry, loading entry points on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = PluginRegistry().load_entry_points()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the loaded plugins (tests, or after installing a plugin in-process)."""
    global _REGISTRY
    _REGISTRY = None


def get_algorithm(name: str) -> AlgorithmSpec:
    """The :class:`AlgorithmSpec` registered as ``name``; ``UsageError`` if unknown."""
    return get_registry().get_algorithm(name)


def list_algorithms() -> dict[str, AlgorithmSpec]:
    return dict(get_registry().algorithms)
