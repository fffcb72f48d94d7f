"""The package's layers import downward only, and no modules import each other in a circle.

Order, top first (``docs/architecture.md#layers``)::

    cli -> workflows -> algorithms -> training / eval -> data -> modeling -> config
        -> registry / api / hookspecs / errors / console / paths / extras

``testing``, ``demo`` and ``__main__`` sit above everything they use; production code never
imports them or the command line. Imports inside functions count too: a lazy import still ties
the layers. Imports under ``if TYPE_CHECKING:`` do not (they never run), and neither do the
lazy re-exports of the package's ``__getattr__`` (``prefopt.train`` is ``prefopt.workflows``').
"""

from __future__ import annotations

import ast
from pathlib import Path

import prefopt

PACKAGE_DIR = Path(prefopt.__file__).parent
#: Modules allowed to import ``prefopt.cli`` / ``prefopt.testing`` (they sit above both).
TOP_LEVEL = ("prefopt.cli", "prefopt.testing", "prefopt.demo", "prefopt.__main__")
#: The documented order, top first; a module may import its own layer and those below it.
LAYERS: list[tuple[str, ...]] = [
    ("prefopt.cli", "prefopt.testing", "prefopt.demo", "prefopt.__main__"),
    ("prefopt.workflows",),
    ("prefopt.algorithms",),
    ("prefopt.training", "prefopt.eval"),
    ("prefopt.data",),
    ("prefopt.modeling",),
    (
        "prefopt.config",
        "prefopt.config_layers",
        "prefopt.config_checks",
        "prefopt.config_values",
        "prefopt.training_arguments",
        "prefopt.precision_rules",
        "prefopt.local_models",
    ),
    (
        "prefopt",
        "prefopt.registry",
        "prefopt.api",
        "prefopt.hookspecs",
        "prefopt.errors",
        "prefopt.console",
        "prefopt.paths",
        "prefopt.extras",
    ),
]


def layer_of(module: str) -> int:
    """The index of ``module``'s layer in :data:`LAYERS` (0 is the top)."""
    for index, members in enumerate(LAYERS):
        for member in members:
            if module == member or (member != "prefopt" and module.startswith(member + ".")):
                return index
    raise AssertionError(f"{module} is in no layer: place it in LAYERS and docs/architecture.md")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The ``prefopt`` modules that ``path`` imports anywhere in its body (resolved to modules)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8")), name):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` imports the submodule; ``from pkg import name`` the package.
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _runtime_nodes(tree: ast.AST, module: str) -> list[ast.AST]:
    """Every node of ``tree`` except ``if TYPE_CHECKING:`` blocks and, in the package itself,
    the lazy re-exports of its ``__getattr__``."""
    nodes: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            pending.extend(node.orelse)
            continue
        if module == "prefopt" and isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            continue
        nodes.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return nodes


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE_DIR.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, modules) for path in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def is_top_level(module: str) -> bool:
    return any(module == top or module.startswith(top + ".") for top in TOP_LEVEL)


def test_production_code_never_imports_the_cli_or_the_test_kit() -> None:
    offenders = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if not is_top_level(module)
        for target in sorted(targets)
        if target.startswith(("prefopt.cli", "prefopt.testing"))
    ]
    assert offenders == []


def test_every_import_goes_down_the_documented_layers() -> None:
    upward = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if layer_of(target) < layer_of(module)
    ]
    assert upward == []


def test_the_layers_are_the_documented_ones() -> None:
    text = (PACKAGE_DIR.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    documented = " ".join(text.split("## Layers")[1].split("```")[1].split())
    chain = " -> ".join(
        "/".join(name.removeprefix("prefopt.") for name in layer) for layer in LAYERS[1:6]
    )
    assert documented.startswith(f"cli -> {chain.replace('/', ' / ')} -> config")


def test_no_import_cycle_among_prefopt_modules() -> None:
    assert cycles(import_graph()) == []


def test_the_checker_sees_lazy_imports_and_circles() -> None:
    graph = import_graph()
    assert "prefopt.console" in graph["prefopt.eval.offline"]  # imported inside a function
    assert "prefopt.training.stages" not in graph["prefopt.api"]  # only under TYPE_CHECKING
    assert layer_of("prefopt.training.stages") < layer_of("prefopt.data.io")
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
