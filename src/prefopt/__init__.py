"""prefopt: preference optimization of language models, each algorithm a plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    import pluggy

    from prefopt.workflows import evaluate, flip, merge, train

    #: Marker for plugin hook implementations: ``@prefopt.hookimpl def prefopt_algorithms(): ...``
    hookimpl: pluggy.HookimplMarker

__all__ = ["__version__", "evaluate", "flip", "hookimpl", "merge", "train"]

#: The Python API (:mod:`prefopt.workflows`), imported on first use.
_WORKFLOWS = ("train", "evaluate", "merge", "flip")


def __getattr__(name: str) -> Any:
    # ``prefopt.hookimpl`` is made on first use: importing pluggy costs about 15 ms, which
    # every command would pay at start-up, and only plugin loading needs it. The Python API
    # is imported on first use too, so ``import prefopt`` stays light.
    if name == "hookimpl":
        import pluggy

        marker = pluggy.HookimplMarker("prefopt")
        globals()["hookimpl"] = marker
        return marker
    if name in _WORKFLOWS:
        from prefopt import workflows

        function = getattr(workflows, name)
        globals()[name] = function
        return function
    raise AttributeError(f"module 'prefopt' has no attribute {name!r}")
