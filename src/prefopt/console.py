"""Terminal output shared by every layer: rich consoles made on demand.

The command line and the library (progress bars in ``eval``, the trainer's progress line) print
through the same consoles, so this lives at the bottom of the layering rather than in ``cli``.
"""

from __future__ import annotations

from typing import Any


def console(stderr: bool = False) -> Any:
    """A rich console bound to the current stdout/stderr (made on demand, so tests can capture).

    Markup is off: what prefopt prints holds paths, data and install hints such as
    ``pip install 'prefopt[plot]'``, whose brackets rich would take for tags and swallow. A
    message that styles itself passes ``markup=True`` and escapes what it interpolates
    (:func:`styled`)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True, markup=False)


def styled(template: str, *values: Any) -> str:
    """``template`` (rich markup) with ``values`` escaped into its ``{}`` fields, for
    ``console().print(..., markup=True)``."""
    from rich.markup import escape

    return template.format(*(escape(str(value)) for value in values))
