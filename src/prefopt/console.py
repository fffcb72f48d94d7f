"""Terminal output shared by every layer: rich consoles made on demand.

The command line and the library (progress bars in ``eval``, the trainer's progress line) print
through the same consoles, so this lives at the bottom of the layering rather than in ``cli``.
"""

from __future__ import annotations

from typing import Any


def console(stderr: bool = False) -> Any:
    """A rich console bound to the current stdout/stderr (made on demand, so tests can capture)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)
