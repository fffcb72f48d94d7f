"""Tables that stay readable in a narrow terminal.

A rich table squeezed into 80 columns truncates cells ("DPO_SmolLM2-…") or breaks ids and paths
mid-word. When a table's natural width does not fit the terminal, the same rows are printed
as records instead: the row's first cell as a heading, then one ``column  value`` line per
remaining cell, each value whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def print_rows(
    show: Any, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]
) -> None:
    """Print ``rows`` under ``columns`` on the console ``show``: a table when it fits, else
    records (see the module docstring)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    if natural_width(show, table) <= show.width:
        show.print(table)
        return
    show.print(title, soft_wrap=True)
    label_width = max((len(column) for column in columns[1:]), default=0)
    for row in rows:
        heading = f"#{row[0]}" if columns[0] == "#" else f"{columns[0]} {row[0]}"
        show.print(heading, soft_wrap=True)
        for column, value in zip(columns[1:], row[1:], strict=True):
            show.print(f"  {column:<{label_width}}  {value}", soft_wrap=True)


def natural_width(show: Any, table: Any) -> int:
    """The width ``table`` takes with no cell wrapped or cut."""
    from rich.measure import Measurement

    return int(Measurement.get(show, show.options.update(width=10_000), table).maximum)
