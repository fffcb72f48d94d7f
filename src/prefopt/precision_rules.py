"""The rules that decide a run's compute precision from its settings, the Hugging Face way.

Rules, first match wins (``training`` is the run's ``training:`` section, ``model.precision``
the run config's switch):

1. ``model.precision: bf16 | fp16 | fp32`` decides. A ``training.bf16``/``fp16`` that says
   otherwise is a contradiction and an error (nothing is silently overridden).
2. An explicit ``training.bf16`` or ``training.fp16``, true *or* false, decides:
   ``bf16: true`` trains under bf16 autocast, ``fp16: true`` under fp16 autocast, and
   ``bf16: false`` (with no ``fp16: true``) trains in fp32.
3. Neither set (``model.precision: auto``, the default): bf16 where the hardware does it fast
   (a CUDA GPU with bf16; a CPU with AMX-BF16), else fp32.

The decision and its reason are printed when a run starts and recorded in the run folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefopt.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass(frozen=True)
class Precision:
    """A run's effective compute precision (``bf16``, ``fp16`` or ``fp32``) and why."""

    mode: str
    reason: str

    @property
    def bf16(self) -> bool:
        return self.mode == "bf16"

    @property
    def fp16(self) -> bool:
        return self.mode == "fp16"

    def describe(self) -> str:
        """``bf16 autocast (auto: CPU with AMX-BF16)``, ``fp32 (training.bf16: false)``."""
        name = "fp32" if self.mode == "fp32" else f"{self.mode} autocast"
        return f"{name} ({self.reason})"


def _explicit_flag(training: Mapping[str, Any], name: str) -> bool | None:
    """``training[name]`` as a bool when the user set it (true or false), else ``None``."""
    value = training.get(name)
    return None if value is None else bool(value)


def explicit_precision(precision: str, training: Mapping[str, Any]) -> Precision | None:
    """The precision the settings decide (rules 1 and 2), ``None`` when it is the hardware's
    to decide (rule 3); a ``ConfigError`` for contradicting settings. Imports nothing heavy,
    so a config mistake is answered before torch loads."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"model.precision must be one of {', '.join(PRECISIONS)}, got '{precision}'"
        )
    bf16, fp16 = _explicit_flag(training, "bf16"), _explicit_flag(training, "fp16")
    if bf16 and fp16:
        raise ConfigError("training.bf16 and training.fp16 are both true: choose one")
    if precision != "auto":
        flags = {"bf16": bf16, "fp16": fp16}
        for name, value in flags.items():
            if value is not None and value != (name == precision):
                raise ConfigError(
                    f"model.precision is {precision} but training.{name} is "
                    f"{str(value).lower()}: set one of them"
                )
        return Precision(precision, f"model.precision: {precision}")
    if bf16:
        return Precision("bf16", "training.bf16: true")
    if fp16:
        return Precision("fp16", "training.fp16: true")
    if bf16 is False or fp16 is False:
        flag = "training.bf16: false" if bf16 is False else "training.fp16: false"
        return Precision("fp32", flag)
    return None
