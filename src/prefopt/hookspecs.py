"""The hooks a prefopt plugin may implement.

A plugin is a module named by an entry point in group ``prefopt``::

    [project.entry-points.prefopt]
    my-losses = "my_losses.plugin"

The module defines functions marked with ``@prefopt.hookimpl`` (``pluggy.HookimplMarker
("prefopt")``) whose names are the hooks below. Every hook is optional; each is called once
per process, when the registry first needs that kind of object, and its results are
collected from all plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from prefopt.api import AlgorithmSpec
    from prefopt.data.converters.spec import ConverterSpec
    from prefopt.eval.judges import JudgeSpec

hookspec = pluggy.HookspecMarker("prefopt")


@hookspec
def prefopt_algorithms() -> list[AlgorithmSpec[Any]]:
    """Return the algorithms this plugin provides, as a list of
    :class:`prefopt.api.AlgorithmSpec`.

    Called when the registry is first asked for an algorithm (``prefopt train``,
    ``prefopt plugins list``). Names must be unique across all installed plugins; a name that
    is already taken is refused with a warning naming both packages. Keep this hook cheap:
    import torch inside the loss, not at module top, so listing plugins stays fast.
    """


@hookspec
def prefopt_converters() -> list[ConverterSpec]:
    """Return data-format converters for ``prefopt data convert --from NAME``.

    Each item is a :class:`prefopt.data.converters.spec.ConverterSpec`. Called when
    ``prefopt data convert`` runs or lists formats.
    """


@hookspec
def prefopt_judges() -> list[JudgeSpec]:
    """Return LLM-as-judge backends for ``prefopt eval judge --judge NAME``.

    Each item is a :class:`prefopt.eval.judges.JudgeSpec`. Called when ``prefopt eval judge``
    runs.
    """
