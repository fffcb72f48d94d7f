"""prefopt: preference optimization of language models, each algorithm a plugin."""

import pluggy

__version__ = "0.1.0"

#: Marker for plugin hook implementations: ``@prefopt.hookimpl def prefopt_algorithms(): ...``
hookimpl = pluggy.HookimplMarker("prefopt")

__all__ = ["__version__", "hookimpl"]
