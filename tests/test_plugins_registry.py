"""Plugin loading in-process: fake distributions on ``sys.path``, one per broken-plugin case.

Each case checks the warning (naming the package and the problem), that the plugin is listed
as broken, and that the built-ins and healthy plugins keep working.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefopt.api import PLUGIN_API_VERSION, AlgorithmSpec
from prefopt.errors import UsageError
from prefopt.registry import PluginInfo, PluginRegistry, api_problem, spec_problem
from prefopt.testing import write_distribution

HEADER = """
from dataclasses import dataclass, field
import prefopt
from prefopt.api import AlgorithmSpec

@dataclass
class Config:
    beta: float = field(default=0.1, metadata={"help": "β"})

def make_loss(config, ctx=None):
    raise AssertionError("not called by the registry")
"""


def good_plugin(algorithm: str, extra: str = "") -> str:
    return (
        HEADER
        + extra
        + f"""
@prefopt.hookimpl
def prefopt_algorithms():
    return [AlgorithmSpec({algorithm!r}, "A test algorithm.", Config, make_loss)]
"""
    )


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on ``sys.path`` for fake distributions; their modules are forgotten after."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [m for m in sys.modules if m.startswith("fakeplug_")]:
        del sys.modules[name]


def load(warnings: list[str]) -> PluginRegistry:
    return PluginRegistry(warn=warnings.append).load_entry_points()


def fake(site: Path, package: str, module: str, source: str, entry: str | None = None) -> None:
    write_distribution(
        site,
        package,
        "0.3.1",
        {entry or package: module},
        {f"{module}/__init__.py": source},
    )


def test_plugin_failing_at_import_is_reported_and_listed_as_broken(site: Path) -> None:
    fake(site, "fake-import-error", "fakeplug_imp", 'raise ImportError("needs frobnicate")\n')
    warnings: list[str] = []
    registry = load(warnings)
    assert "dpo" in registry.algorithms  # the built-ins are unharmed
    info = registry.plugins["fake-import-error"]
    assert info.broken and info.package == "fake-import-error" and info.version == "0.3.1"
    assert "failed to import fakeplug_imp: ImportError: needs frobnicate" in info.problems[0]
    [warning] = [w for w in warnings if "fake-import-error" in w]
    assert "package fake-import-error 0.3.1" in warning and "needs frobnicate" in warning


def test_plugin_raising_system_exit_at_import_does_not_end_the_process(site: Path) -> None:
    fake(site, "fake-exit", "fakeplug_exit", "raise SystemExit(3)\n")
    registry = load([])
    assert "SystemExit" in registry.plugins["fake-exit"].problems[0]


def test_plugin_returning_something_else_than_a_spec(site: Path) -> None:
    source = (
        HEADER
        + """
@prefopt.hookimpl
def prefopt_algorithms():
    return [{"name": "dict-algo"}, AlgorithmSpec("fine-algo", "ok", Config, make_loss)]
"""
    )
    fake(site, "fake-not-a-spec", "fakeplug_dict", source)
    warnings: list[str] = []
    registry = load(warnings)
    assert "fine-algo" in registry.algorithms  # the valid spec of the same plugin still loads
    assert "dict-algo" not in registry.algorithms
    info = registry.plugins["fake-not-a-spec"]
    assert info.problems == ["returned dict instead of prefopt.api.AlgorithmSpec"]
    assert any("fake-not-a-spec" in w and "returned dict" in w for w in warnings)


def test_plugin_reusing_a_built_in_name_is_refused_and_the_built_in_kept(site: Path) -> None:
    # On sys.path *before* prefopt itself, and with the same entry point name: still refused.
    fake(site, "fake-dpo", "fakeplug_dpo", good_plugin("dpo"), entry="dpo")
    warnings: list[str] = []
    registry = load(warnings)
    assert registry.provider("dpo").package == "prefopt"
    assert registry.algorithms["dpo"].config_class.__module__ == "prefopt.algorithms.dpo"
    [info] = [i for i in registry.plugins.values() if i.package == "fake-dpo"]
    assert info.name == "dpo@fake-dpo"  # two packages, one entry point name: both load
    assert info.problems == ["algorithm name 'dpo' is already taken by package prefopt; ignored"]
    assert any("package fake-dpo 0.3.1" in w and "already taken" in w for w in warnings)


def test_plugin_for_another_api_major_is_refused(site: Path) -> None:
    extra = 'PREFOPT_PLUGIN_API = "99"\n'
    fake(site, "fake-future", "fakeplug_future", good_plugin("future-algo", extra))
    warnings: list[str] = []
    registry = load(warnings)
    assert "future-algo" not in registry.algorithms
    info = registry.plugins["fake-future"]
    assert info.api == "99"
    assert info.problems[0].startswith(
        f"written for plugin API 99, but this prefopt provides {PLUGIN_API_VERSION}; refused"
    )
    with pytest.raises(UsageError, match="unknown algorithm 'future-algo'"):
        registry.get_algorithm("future-algo")
    with pytest.raises(UsageError, match="plugin 'fake-future' .*is broken: written for"):
        registry.get_algorithm("fake-future")


@pytest.mark.parametrize(
    ("wanted", "ok"),
    [("1", True), ("1.0", True), (1, True), ("1.3", True), ("1.4", False), ("2", False),
     ("0.9", False), ("one", False), ("1.0.0", False)],
)  # fmt: skip
def test_api_version_semantics(wanted: object, ok: bool) -> None:
    # Same major and a minor no newer than the provided 1.3: compatible.
    assert (api_problem(wanted, "1.3") is None) is ok


def test_api_problem_messages() -> None:
    assert "upgrade prefopt" in (api_problem("1.2", "1.0") or "")
    assert "not a version" in (api_problem("latest", "1.0") or "")
    message = api_problem("2", "1.0") or ""
    assert "made for plugin API 1.x" in message and "a prefopt providing 2.x" in message


def test_hooks_without_marker_or_with_a_typo_are_reported(site: Path) -> None:
    unmarked = HEADER + (
        "\ndef prefopt_algorithms():\n"
        "    return [AlgorithmSpec('unmarked', 's', Config, make_loss)]\n"
    )
    typo = HEADER + (
        "\n@prefopt.hookimpl\ndef prefopt_algoritms():\n"
        "    return [AlgorithmSpec('typo', 's', Config, make_loss)]\n"
    )
    fake(site, "fake-unmarked", "fakeplug_unmarked", unmarked)
    fake(site, "fake-typo", "fakeplug_typo", typo)
    registry = load([])
    assert registry.plugins["fake-unmarked"].problems == [
        "prefopt_algorithms lacks the @prefopt.hookimpl marker and is ignored"
    ]
    assert "unknown hook(s) prefopt_algoritms" in registry.plugins["fake-typo"].problems[0]
    assert "unmarked" not in registry.algorithms and "typo" not in registry.algorithms


def test_hook_that_raises_or_returns_a_single_spec(site: Path) -> None:
    raising = HEADER + "\n@prefopt.hookimpl\ndef prefopt_algorithms():\n    1 / 0\n"
    single = HEADER + (
        "\n@prefopt.hookimpl\ndef prefopt_algorithms():\n"
        "    return AlgorithmSpec('single', 's', Config, make_loss)\n"
    )
    fake(site, "fake-raising", "fakeplug_raising", raising)
    fake(site, "fake-single", "fakeplug_single", single)
    registry = load([])
    assert "dpo" in registry.algorithms
    assert registry.plugins["fake-raising"].problems == [
        "prefopt_algorithms() raised ZeroDivisionError: division by zero"
    ]
    assert registry.plugins["fake-single"].problems == [
        "prefopt_algorithms() must return a list, got AlgorithmSpec"
    ]


def test_same_distribution_seen_twice_counts_once(site: Path, tmp_path: Path) -> None:
    fake(site, "fake-twice", "fakeplug_twice", good_plugin("twice"))
    copy = tmp_path / "copy"
    fake(copy, "fake-twice", "fakeplug_twice", good_plugin("twice"))
    sys.path.insert(1, str(copy))
    try:
        warnings: list[str] = []
        registry = load(warnings)
    finally:
        sys.path.remove(str(copy))
    assert "twice" in registry.algorithms
    assert not [w for w in warnings if "fake-twice" in w]
    assert [i.package for i in registry.plugins.values()].count("fake-twice") == 1


class NoDefaults:
    pass


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"name": "Bad_Name"}, "invalid algorithm name 'Bad_Name'"),
        ({"config_class": NoDefaults}, "config_class must be a dataclass"),
        ({"make_loss": 3}, "make_loss is not callable"),
        ({"extra_columns": "h_w"}, "extra_columns must be a tuple of field names"),
        ({"trainer_class": "no_colon"}, "trainer_class must be None, a class or a 'module:Class'"),
        ({"needs_reference": "no"}, "needs_reference must be True or False"),
        ({"defaults": {"r": 1}}, "defaults must map dotted keys"),
    ],
)
def test_spec_problems(changes: dict, problem: str) -> None:
    from dataclasses import dataclass, replace

    @dataclass
    class Config:
        beta: float = 0.1

    spec = AlgorithmSpec("ok-name", "summary", Config, lambda c, ctx=None: None)
    assert spec_problem(spec) is None
    assert problem in (spec_problem(replace(spec, **changes)) or "")


def test_config_class_must_build_from_its_defaults() -> None:
    from dataclasses import dataclass

    @dataclass
    class Required:
        beta: float

    @dataclass
    class Invalid:
        beta: float = 0.0

        def __post_init__(self) -> None:
            if self.beta <= 0:
                raise ValueError("beta must be > 0")

    for config, detail in ((Required, "missing 1 required"), (Invalid, "beta must be > 0")):
        problem = spec_problem(AlgorithmSpec("x", "s", config, lambda c, ctx=None: None)) or ""
        assert "must work without arguments" in problem and detail in problem


def test_register_reports_a_plugin_object_without_hooks() -> None:
    warnings: list[str] = []
    registry = PluginRegistry(warn=warnings.append)
    registry.register(object(), PluginInfo("empty", "empty-pkg", "1.0"))
    assert registry.plugins["empty"].problems == [
        "implements no prefopt hook (mark functions @prefopt.hookimpl)"
    ]
    assert warnings == [
        "plugin 'empty' (package empty-pkg 1.0): implements no prefopt hook "
        "(mark functions @prefopt.hookimpl)"
    ]
