"""``prefopt plugins``: what the installed plugins provide, and which of them are broken."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import sys
import typing
from typing import Annotated, Any

import typer

from prefopt.cli.common import console, run_command
from prefopt.console import styled

app = typer.Typer(
    help="Inspect installed plugins and the algorithms, data converters and judges they provide.",
    no_args_is_help=True,
)


@app.command("list")
@run_command
def list_plugins() -> None:
    """List algorithms, data converters (`prefopt data convert --from`) and judges
    (`prefopt eval judge --judge`) with their providing package; broken plugins too."""
    from rich.table import Table

    from prefopt.registry import get_registry

    registry = get_registry()
    algorithms = registry.algorithms
    table = Table(title="algorithms")
    table.add_column("name", style="bold")
    table.add_column("summary")
    table.add_column("reference")
    table.add_column("package")
    table.add_column("version")
    for name in sorted(algorithms):
        info = registry.provider(name)
        reference = "yes" if algorithms[name].needs_reference else "no"
        table.add_row(name, algorithms[name].summary, reference, info.package, info.version)
    out = console()
    out.print(table)
    from prefopt.data.converters import get_converters

    judges = registry.collect("prefopt_judges")
    for title, hook, items in (
        (
            "data converters (prefopt data convert --from NAME)",
            "prefopt_converters",
            get_converters(),
        ),
        ("judges (prefopt eval judge --judge NAME)", "prefopt_judges", judges),
    ):
        out.print(_kind_table(title, hook, items, registry))
    broken = [info for info in registry.plugins.values() if info.broken]
    if broken:
        problems = Table(title="broken plugins", title_style="bold red")
        problems.add_column("plugin")
        problems.add_column("package")
        problems.add_column("problem")
        for info in broken:
            problems.add_row(info.name, f"{info.package} {info.version}", "; ".join(info.problems))
        out.print(problems)
    out.print("Details of one algorithm: prefopt plugins show NAME")


def _kind_table(title: str, hook: str, items: dict[str, Any], registry: Any) -> Any:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("name", style="bold")
    table.add_column("summary")
    table.add_column("package")
    table.add_column("version")
    for name in sorted(items):
        info = registry.collected_provider(hook, name)
        package, version = (info.package, info.version) if info else ("prefopt", prefopt_version())
        table.add_row(name, str(getattr(items[name], "summary", "")), package, version)
    return table


def prefopt_version() -> str:
    import prefopt

    return str(prefopt.__version__)


@app.command("show")
@run_command
def show(
    name: Annotated[str, typer.Argument(help="An algorithm (or a plugin's entry point name).")],
) -> None:
    """Show an algorithm's hyperparameters (flag, type, default, help) and where it comes from."""
    from prefopt.errors import UsageError
    from prefopt.registry import get_registry

    registry = get_registry()
    algorithms = registry.algorithms
    if name in algorithms:
        show_algorithm(algorithms[name], registry.provider(name))
    elif name in registry.plugins:
        show_plugin(registry.plugins[name])
    else:
        known = sorted(algorithms) + sorted(set(registry.plugins) - set(algorithms))
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UsageError(
            f"no algorithm or plugin named '{name}'.{hint} Known algorithms: "
            f"{', '.join(sorted(algorithms)) or 'none'}."
        )


def show_algorithm(spec: Any, info: Any) -> None:
    from rich.table import Table

    out = console()
    out.print(styled("[bold]{}[/bold]: {}", spec.name, spec.summary), markup=True)
    about = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    about.add_row("package", f"{info.package} {info.version}")
    about.add_row("plugin", f"{info.name} = {info.entry_point}" if info.entry_point else info.name)
    if info.api is not None:
        about.add_row("plugin API", info.api)
    about.add_row(
        "reference",
        "needed (reference log-probs are computed)"
        if spec.needs_reference
        else "not needed (the reference pass is skipped)",
    )
    about.add_row("extra columns", ", ".join(spec.extra_columns) or "none")
    about.add_row("trainer", _trainer_name(spec.trainer_class))
    for hook in ("for_config", "runner"):
        function = getattr(spec, hook, None)
        if function is not None:
            about.add_row(hook, f"{function.__module__}:{function.__qualname__}")
    if spec.defaults:
        about.add_row("run defaults", ", ".join(f"{k}={v!r}" for k, v in spec.defaults.items()))
    out.print(about)
    fields = Table(title="hyperparameters (flag of `prefopt train`, key under `algorithm:`)")
    fields.add_column("field", style="bold")
    fields.add_column("flag")
    fields.add_column("type")
    fields.add_column("default")
    fields.add_column("help")
    for row in config_fields(spec.config_class):
        fields.add_row(*row)
    out.print(fields)
    doc = inspect.getdoc(sys.modules.get(spec.config_class.__module__))
    if doc:
        out.print()
        out.print(doc, markup=False)


def show_plugin(info: Any) -> None:
    out = console()
    status = "[bold red]broken[/bold red]" if info.broken else "ok"
    out.print(styled("plugin [bold]{}[/bold] (", info.name) + status + ")", markup=True)
    out.print(f"package      {info.package} {info.version}", markup=False)
    out.print(f"entry point  {info.entry_point or '?'}", markup=False)
    if info.api is not None:
        out.print(f"plugin API   {info.api}", markup=False)
    out.print(f"algorithms   {', '.join(info.algorithms) or 'none'}", markup=False)
    for problem in info.problems:
        out.print(f"problem      {problem}", markup=False)


def config_fields(config_class: type) -> list[tuple[str, str, str, str, str]]:
    """``(field, flag, type, default, help)`` per field, flags as ``prefopt train`` names them."""
    from prefopt.cli.train import COMMON_OPTIONS, algorithm_flag

    taken = {d.lstrip("-") for _, _, _, decls, _ in COMMON_OPTIONS for d in decls}
    try:
        hints = typing.get_type_hints(config_class)
    except Exception:  # unresolvable annotations: show them as written
        hints = {}
    rows = []
    for f in dataclasses.fields(config_class):
        annotation = hints.get(f.name, f.type)
        flag = algorithm_flag(f, taken)
        flag = f"--{flag}/--no-{flag}" if annotation is bool else f"--{flag}"
        if f.metadata.get("repeatable"):
            flag += " (repeatable)"
        rows.append(
            (f.name, flag, _type_name(annotation), _default(f), str(f.metadata.get("help", "")))
        )
    return rows


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return repr(f.default_factory())
    return "(required)"


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


def _trainer_name(trainer_class: Any) -> str:
    if trainer_class is None:
        return "PreferenceTrainer"
    if isinstance(trainer_class, str):
        return trainer_class
    return f"{trainer_class.__module__}:{trainer_class.__qualname__}"
