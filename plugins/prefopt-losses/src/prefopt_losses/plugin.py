"""The module named by this package's entry point: it hands prefopt the nine algorithms.

Importing it is cheap (no torch): prefopt imports every plugin to list algorithms.
"""

from __future__ import annotations

import prefopt
from prefopt.api import AlgorithmSpec

from prefopt_losses import (
    apo_zero,
    bco_pair,
    exo_pair,
    hinge,
    ipo,
    nca_pair,
    robust,
    simpo,
    sppo_hard,
)

#: Written for prefopt plugin API 1.0: any prefopt providing 1.x with x ≥ 0 loads it.
PREFOPT_PLUGIN_API = "1.0"

SPECS: tuple[AlgorithmSpec, ...] = (
    ipo.SPEC,
    hinge.SPEC,
    robust.SPEC,
    simpo.SPEC,
    nca_pair.SPEC,
    apo_zero.SPEC,
    sppo_hard.SPEC,
    bco_pair.SPEC,
    exo_pair.SPEC,
)


@prefopt.hookimpl
def prefopt_algorithms() -> list[AlgorithmSpec]:
    return list(SPECS)
