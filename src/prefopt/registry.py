"""Plugin discovery: a pluggy ``PluginManager`` fed by entry points of group ``prefopt``.

Built-in algorithms come in through prefopt's own entry points, exactly like a third party's
(and are loaded first, so a plugin can never take a built-in's name). Loading is forgiving:
a plugin that fails to import, asks for an incompatible plugin API, implements no hook or an
unknown one, returns an invalid spec or reuses a taken name is reported with a warning naming
its package and the problem, and shown as broken in ``prefopt plugins list``; everything else
keeps working.

Plugin API versions (``prefopt.api.PLUGIN_API_VERSION``, ``MAJOR.MINOR``): a plugin module may
declare ``PREFOPT_PLUGIN_API = "1"`` (any 1.x) or ``"1.2"`` (needs what 1.2 added). A different
major, or a newer minor than this prefopt provides, is refused; no declaration is accepted.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from prefopt import hookspecs
from prefopt.api import PLUGIN_API_VERSION, AlgorithmSpec
from prefopt.errors import UsageError

ENTRY_POINT_GROUP = "prefopt"
API_ATTRIBUTE = "PREFOPT_PLUGIN_API"
CORE_PACKAGE = "prefopt"
_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]*$")
_VERSION_PATTERN = re.compile(r"^(\d+)(?:\.(\d+))?$")
_COLUMN_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HOOK_NAMES = frozenset(name for name in dir(hookspecs) if name.startswith("prefopt_"))


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, as ``prefopt plugins list`` shows it.

    ``name`` is the entry point's name (made unique with ``@package`` if two packages use the
    same one), ``entry_point`` what it points at, ``api`` the declared ``PREFOPT_PLUGIN_API``.
    """

    name: str
    package: str
    version: str
    problems: list[str] = field(default_factory=list)
    algorithms: list[str] = field(default_factory=list)
    entry_point: str = ""
    api: str | None = None

    @property
    def broken(self) -> bool:
        return bool(self.problems)


def api_problem(wanted: Any, provided: str = PLUGIN_API_VERSION) -> str | None:
    """Why a plugin declaring ``PREFOPT_PLUGIN_API = wanted`` cannot load; ``None`` if it can.

    Same major and a minor no newer than ``provided``: compatible. ``"1"`` means any 1.x.
    """
    match = _VERSION_PATTERN.match(str(wanted).strip())
    if match is None:
        return (
            f"declares {API_ATTRIBUTE} = {wanted!r}, which is not a version like '1' or '1.0'; "
            "refused"
        )
    major, minor = int(match.group(1)), int(match.group(2) or 0)
    have = _VERSION_PATTERN.match(provided)
    assert have is not None, provided
    have_major, have_minor = int(have.group(1)), int(have.group(2) or 0)
    if major != have_major:
        return (
            f"written for plugin API {wanted}, but this prefopt provides {provided}; refused "
            f"(install a release of the plugin made for plugin API {have_major}.x, or a prefopt "
            f"providing {major}.x)"
        )
    if minor > have_minor:
        return (
            f"needs plugin API {wanted}, but this prefopt provides only {provided}; refused "
            "(upgrade prefopt)"
        )
    return None


class PluginRegistry:
    """Everything the installed plugins provide, loaded once and cached."""

    def __init__(self, warn: Callable[[str], None] | None = None) -> None:
        self.manager = pluggy.PluginManager("prefopt")
        self.manager.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._warn = warn or _warn_to_stderr
        self._algorithms: dict[str, AlgorithmSpec] | None = None
        self._providers: dict[str, PluginInfo] = {}
        self._refused: dict[str, str] = {}
        self._kinds: dict[str, dict[str, Any]] = {}
        self._kind_providers: dict[str, dict[str, PluginInfo]] = {}

    # -- loading ---------------------------------------------------------------------------
    def load_entry_points(self) -> PluginRegistry:
        for entry_point, package, version in _entry_points():
            name = entry_point.name
            if name in self.plugins:  # two packages chose the same entry point name
                name = f"{name}@{package}"
            info = PluginInfo(name, package, version, entry_point=entry_point.value)
            try:
                module = entry_point.load()
            except (Exception, SystemExit) as exc:  # a broken plugin must not take the CLI down
                self.plugins[info.name] = info
                self._problem(info, f"failed to import {entry_point.value}: {_describe(exc)}")
                continue
            self.register(module, info)
        return self

    def register(self, module: ModuleType | object, info: PluginInfo) -> None:
        """Register one plugin object (normally a module) under ``info``."""
        self.plugins[info.name] = info
        self._algorithms = None
        self._kinds.clear()
        wanted = getattr(module, API_ATTRIBUTE, None)
        if wanted is not None:
            info.api = str(wanted)
            problem = api_problem(wanted)
            if problem is not None:
                self._problem(info, problem)
                return
        implemented = [
            name for name in dir(module) if self.manager.parse_hookimpl_opts(module, name)
        ]
        unknown = sorted(name for name in implemented if name not in HOOK_NAMES)
        if unknown:
            self._problem(
                info,
                f"implements unknown hook(s) {', '.join(unknown)}; known hooks: "
                f"{', '.join(sorted(HOOK_NAMES))}",
            )
        unmarked = sorted(
            name
            for name in HOOK_NAMES
            if callable(getattr(module, name, None)) and name not in implemented
        )
        if unmarked:
            self._problem(
                info,
                f"{', '.join(unmarked)} lacks the @prefopt.hookimpl marker and is ignored",
            )
        elif not implemented:
            self._problem(info, "implements no prefopt hook (mark functions @prefopt.hookimpl)")
        try:
            self.manager.register(module, name=info.name)
        except Exception as exc:
            self._problem(info, f"cannot be registered: {_describe(exc)}")

    def _problem(self, info: PluginInfo, problem: str) -> None:
        info.problems.append(problem)
        self._warn(f"plugin '{info.name}' (package {info.package} {info.version}): {problem}")

    # -- collecting ------------------------------------------------------------------------
    def _call_each(self, hook_name: str) -> Iterable[tuple[PluginInfo, list[Any]]]:
        """Call one hook on every plugin separately, so each result keeps its provider."""
        hook = getattr(self.manager.hook, hook_name)
        # get_hookimpls() is in registration order, so the built-ins (loaded first) keep
        # their names when a plugin reuses one.
        for impl in hook.get_hookimpls():
            info = self.plugins.get(impl.plugin_name) or PluginInfo(impl.plugin_name, "?", "?")
            try:
                result = impl.function()
            except Exception as exc:
                self._problem(info, f"{hook_name}() raised {_describe(exc)}")
                continue
            if result is None:
                yield info, []
            elif isinstance(result, (list, tuple)):
                yield info, list(result)
            else:
                self._problem(
                    info, f"{hook_name}() must return a list, got {type(result).__name__}"
                )

    @property
    def algorithms(self) -> dict[str, AlgorithmSpec]:
        if self._algorithms is None:
            self._algorithms = {}
            self._providers = {}
            self._refused = {}
            for info in self.plugins.values():
                info.algorithms.clear()
            for info, specs in self._call_each("prefopt_algorithms"):
                for spec in specs:
                    problem = spec_problem(spec)
                    if problem is None and spec.name in self._algorithms:
                        other = self._providers[spec.name]
                        problem = (
                            f"algorithm name '{spec.name}' is already taken by "
                            f"package {other.package}; ignored"
                        )
                    if problem:
                        self._problem(info, problem)
                        name = getattr(spec, "name", None)
                        if isinstance(name, str) and name not in self._algorithms:
                            self._refused[name] = f"package {info.package}: {problem}"
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
            providers: dict[str, PluginInfo] = {}
            for info, found in self._call_each(hook_name):
                for item in found:
                    name = getattr(item, key, None)
                    if not isinstance(name, str):
                        self._problem(info, f"{hook_name}() returned {item!r} without a {key}")
                    elif name in items:
                        self._problem(info, f"{hook_name}: name '{name}' is already taken")
                    else:
                        items[name] = item
                        providers[name] = info
            self._kinds[hook_name] = items
            self._kind_providers[hook_name] = providers
        return self._kinds[hook_name]

    def collected_provider(self, hook_name: str, name: str) -> PluginInfo | None:
        """The plugin that provided item ``name`` of :meth:`collect` ``(hook_name)``."""
        self.collect(hook_name)
        return self._kind_providers[hook_name].get(name)

    def get_algorithm(self, name: str) -> AlgorithmSpec:
        algorithms = self.algorithms
        if name in algorithms:
            return algorithms[name]
        if name in self._refused:
            raise UsageError(f"algorithm '{name}' is unavailable: {self._refused[name]}")
        broken = self.plugins.get(name)
        if broken is not None and broken.broken:
            raise UsageError(
                f"algorithm '{name}' is unavailable: plugin '{name}' (package "
                f"{broken.package} {broken.version}) is broken: {'; '.join(broken.problems)}"
            )
        known = ", ".join(sorted(algorithms)) or "none"
        close = difflib.get_close_matches(name, list(algorithms), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"unknown algorithm '{name}'.{hint} Known algorithms: {known}.")


def spec_problem(spec: Any) -> str | None:
    """What makes ``spec`` unusable as an algorithm, or ``None`` if it is fine.

    Cheap checks only (nothing is imported): types of the fields, the name, and that the
    config dataclass can be built from its defaults (``prefopt train`` starts from them).
    """
    if not isinstance(spec, AlgorithmSpec):
        return f"returned {type(spec).__name__} instead of prefopt.api.AlgorithmSpec"
    name = spec.name
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        return f"invalid algorithm name {name!r} (lowercase letters, digits and '-')"
    if not isinstance(spec.summary, str):
        return f"algorithm '{name}': summary must be a string"
    if not (isinstance(spec.config_class, type) and dataclasses.is_dataclass(spec.config_class)):
        return f"algorithm '{name}': config_class must be a dataclass"
    try:
        spec.config_class()
    except Exception as exc:
        return (
            f"algorithm '{name}': {spec.config_class.__name__}() must work without arguments "
            f"(give every field a valid default): {_describe(exc)}"
        )
    if not callable(spec.make_loss):
        return f"algorithm '{name}': make_loss is not callable"
    trainer = spec.trainer_class
    if not (trainer is None or isinstance(trainer, type) or _is_import_path(trainer)):
        return (
            f"algorithm '{name}': trainer_class must be None, a class or a 'module:Class' "
            f"string, got {trainer!r}"
        )
    columns = spec.extra_columns
    if isinstance(columns, str) or not all(
        isinstance(c, str) and _COLUMN_PATTERN.match(c) for c in columns
    ):
        return f"algorithm '{name}': extra_columns must be a tuple of field names, got {columns!r}"
    if not isinstance(spec.needs_reference, bool):
        return f"algorithm '{name}': needs_reference must be True or False"
    if not isinstance(spec.defaults, Mapping) or not all(
        isinstance(k, str) and "." in k for k in spec.defaults
    ):
        return f"algorithm '{name}': defaults must map dotted keys like 'lora.r' to values"
    if not callable(spec.run_name):
        return f"algorithm '{name}': run_name is not callable"
    for hook in ("validate_records", "for_config", "runner"):
        value = getattr(spec, hook, None)
        if value is not None and not callable(value):
            return f"algorithm '{name}': {hook} is not callable"
    return None


def _is_import_path(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    module, sep, attribute = value.partition(":")
    return bool(sep and module and attribute)


def _normalize(package: str) -> str:
    return re.sub(r"[-_.]+", "-", package).lower()


def _entry_points() -> list[tuple[metadata.EntryPoint, str, str]]:
    """``(entry point, package, version)`` for group ``prefopt``: prefopt's own first, then
    the others in discovery order; a distribution seen twice on ``sys.path`` counts once."""
    found: dict[tuple[str, str], tuple[metadata.EntryPoint, str, str]] = {}
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(entry_point, "dist", None)
        package = dist.name if dist is not None else entry_point.value.split(":")[0]
        version = dist.version if dist is not None else "?"
        found.setdefault((_normalize(package), entry_point.name), (entry_point, package, version))
    ordered = list(found.values())
    ordered.sort(key=lambda item: _normalize(item[1]) != CORE_PACKAGE)  # stable: keeps order
    return ordered


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
