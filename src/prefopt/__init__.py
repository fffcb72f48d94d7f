"""prefopt: preference optimization of language models, each algorithm a plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    import pluggy

    #: Marker for plugin hook implementations: ``@prefopt.hookimpl def prefopt_algorithms(): ...``
    hookimpl: pluggy.HookimplMarker

__all__ = ["__version__", "hookimpl"]


def __getattr__(name: str) -> Any:
    # ``prefopt.hookimpl`` is made on first use: importing pluggy costs about 15 ms, which
    # every command would pay at start-up, and only plugin loading needs it.
    if name == "hookimpl":
        import pluggy

        marker = pluggy.HookimplMarker("prefopt")
        globals()["hookimpl"] = marker
        return marker
    raise AttributeError(f"module 'prefopt' has no attribute {name!r}")
