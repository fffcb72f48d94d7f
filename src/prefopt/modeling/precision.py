"""The compute precision of a run on this hardware, and the dtype to load the weights in.

The settings' rules are :mod:`prefopt.precision_rules`; here the last rule's hardware check
(``model.precision: auto`` with neither ``training.bf16`` nor ``training.fp16`` set: bf16 where
the hardware does it fast, a CUDA GPU with bf16 or a CPU with AMX-BF16, else fp32), the
``TrainingArguments`` flags, and the load dtype that fits the device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefopt.precision_rules import PRECISIONS, Precision, explicit_precision

__all__ = ["PRECISIONS", "Precision", "explicit_precision", "resolve_precision"]


def _fast_bf16_hardware() -> str:
    """A name for the fast-bf16 hardware here, or ``""`` when there is none."""
    import torch

    if torch.cuda.is_available():
        return "CUDA with bf16" if torch.cuda.is_bf16_supported() else ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return "CPU with AMX-BF16" if "amx_bf16" in handle.read() else ""
    except OSError:
        return ""


def resolve_precision(precision: str, training: Mapping[str, Any]) -> Precision:
    """The effective precision for ``model.precision`` and the ``training`` section."""
    explicit = explicit_precision(precision, training)
    if explicit is not None:
        return explicit
    hardware = _fast_bf16_hardware()
    if hardware:
        return Precision("bf16", f"auto: {hardware}")
    return Precision("fp32", "auto: no fast bf16 on this hardware")


def apply_precision(values: dict[str, Any], precision: Precision) -> None:
    """Set ``TrainingArguments`` keyword ``values`` to ``precision`` (bf16/fp16 flags)."""
    values["bf16"] = precision.bf16
    values["fp16"] = precision.fp16
    if precision.mode != "fp32" and accelerator_type() != "cuda":
        values.setdefault("use_cpu", True)  # TrainingArguments allows CPU autocast only when told


def accelerator_type() -> str:
    """``cuda`` when a CUDA GPU will run the model, else ``cpu`` (where the load dtype is
    chosen; tests fake it here)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_dtype_name(
    dtype: str, precision: Precision, full_fine_tuning: bool, device: str | None = None
) -> str:
    """The dtype to load the weights in, for ``model.dtype`` and the run's precision.

    An explicit ``model.dtype`` is kept. ``auto`` loads fp32, except for LoRA/QLoRA training
    under bf16 autocast on CUDA: the base weights stay frozen, so they are loaded in bf16 at
    once (an fp32 load of an 8B model needs 32 GB before any cast). Full fine-tuning keeps
    fp32 weights: mixed precision updates fp32 master weights, and bf16 weights would round
    small updates away. Its frozen reference copy is loaded like the policy (its linear layers
    are rounded to bf16 later, as the policy's compute is): a bf16 copy would run its norms
    and residual stream in bf16 where the policy runs them in fp32, and step 0 would not be
    ln 2.
    """
    if dtype != "auto":
        return dtype
    device = device or accelerator_type()
    if precision.bf16 and device == "cuda" and not full_fine_tuning:
        return "bfloat16"
    return "auto"
