"""Optional dependencies: what needs which extra, and the one-line error when it is missing.

prefopt's core installs without the packages only some users need: ``matplotlib`` for charts
(``plot``), ``wandb`` for Weights & Biases logging (``wandb``), ``bitsandbytes`` for 4-bit
QLoRA (``qlora``), ``gguf`` for GGUF checkpoints (``gguf``), ``lm-eval`` for ``prefopt eval
harness`` (``harness``); ``prefopt[all]`` has them all.
"""

from __future__ import annotations

import importlib.util

from prefopt.errors import UsageError


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def require(module: str, extra: str, purpose: str) -> None:
    """Raise a usage error naming the install command when ``module`` is not installed."""
    if not installed(module):
        raise UsageError(
            f"{purpose} needs the '{module}' package: pip install 'prefopt[{extra}]' "
            f"(or pip install {module})"
        )
