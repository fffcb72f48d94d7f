"""``prefopt plugins``: what the installed plugins provide."""

from __future__ import annotations

import typer

from prefopt.cli.common import console, run_command

app = typer.Typer(help="Inspect installed plugins and the algorithms they provide.", no_args_is_help=True)


@app.command("list")
@run_command
def list_plugins() -> None:
    """List algorithms with their summary and providing package; broken plugins too."""
    from rich.table import Table

    from prefopt.registry import get_registry

    registry = get_registry()
    algorithms = registry.algorithms
    table = Table(title="algorithms")
    table.add_column("name", style="bold")
    table.add_column("summary")
    table.add_column("package")
    table.add_column("version")
    for name in sorted(algorithms):
        info = registry.provider(name)
        table.add_row(name, algorithms[name].summary, info.package, info.version)
    out = console()
    out.print(table)
    broken = [info for info in registry.plugins.values() if info.broken]
    if broken:
        problems = Table(title="broken plugins", title_style="bold red")
        problems.add_column("plugin")
        problems.add_column("package")
        problems.add_column("problem")
        for info in broken:
            problems.add_row(info.name, f"{info.package} {info.version}", "; ".join(info.problems))
        out.print(problems)
