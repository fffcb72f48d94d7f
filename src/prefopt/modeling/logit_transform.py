"""What a causal LM does to its logits after the LM head's projection, so the lean path can too.

Several families transform the projected logits ``u = h Wᵀ (+ b)`` before the softmax:

- Granite (``granite``, ``granitemoe``, ...) divides by ``config.logits_scaling``;
- Cohere (``cohere``, ``cohere2``, ...) multiplies by ``config.logit_scale``;
- Gemma 2/3 (and any config with ``final_logit_softcapping = c``) soft-cap:
  ``z = c · tanh(u / c)``.

With a scale ``s`` (applied first) and an optional cap ``c``::

    z = s·u                       dz/du = s
    z = c·tanh(s·u / c)           dz/du = s·(1 − (z / c)²)

:func:`logit_transform` reads the transform from a model's config: ``None`` when the config
names a scaling whose meaning for that family prefopt does not know (a ``logits_scaling`` of
another family may multiply rather than divide), so the caller takes the full-logits path.
An architecture that transforms its logits in a way no config field announces is caught by
the first-batch self-check (:mod:`prefopt.modeling.head_check`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Model-type prefixes whose head output is divided by ``config.logits_scaling``.
DIVIDES_BY_LOGITS_SCALING = ("granite",)
#: Model-type prefixes whose head output is multiplied by ``config.logit_scale``.
MULTIPLIES_BY_LOGIT_SCALE = ("cohere",)
_SCALE_FIELDS = ("logits_scaling", "logit_scale")


@dataclass(frozen=True)
class LogitTransform:
    """``z = cap·tanh(s·u / cap)`` (or ``s·u`` without a cap) on projected logits, where the
    scale ``s`` is ``scale``, or ``1 / divisor`` for a family that divides (Granite): dividing
    as the model does keeps the numbers bit-identical where 1/divisor is no power of two."""

    scale: float = 1.0
    softcap: float | None = None
    divisor: float | None = None

    @property
    def factor(self) -> float:
        """``s``: the derivative of the scaling."""
        return self.scale / self.divisor if self.divisor else self.scale

    @property
    def is_identity(self) -> bool:
        return self.factor == 1.0 and not self.softcap

    def apply(self, logits: Any) -> Any:
        """``z`` from projected logits ``u`` (any shape; computed in ``u``'s dtype)."""
        if self.divisor and self.divisor != 1.0:
            logits = logits / self.divisor
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.softcap:
            logits = logits / self.softcap
            logits = self.softcap * logits.tanh()
        return logits

    def derivative(self, transformed: Any) -> Any:
        """``dz/du`` from the transformed logits ``z`` (a tensor, or the scale as a float)."""
        if not self.softcap:
            return self.factor
        ratio = transformed / self.softcap
        return self.factor * (1.0 - ratio * ratio)


def _is_trivial(value: Any) -> bool:
    return value is None or float(value) == 1.0


def _factor(value: Any) -> float:
    return 1.0 if value is None else float(value)


def logit_transform(config: Any) -> LogitTransform | None:
    """The transform a model with ``config`` applies to its projected logits, or ``None`` when
    its config announces a scaling prefopt cannot interpret for that family."""
    model_type = str(getattr(config, "model_type", "") or "")
    scale, divisor = 1.0, None
    if model_type.startswith(DIVIDES_BY_LOGITS_SCALING):
        value = getattr(config, "logits_scaling", None)
        divisor = None if _is_trivial(value) else _factor(value)
    elif model_type.startswith(MULTIPLIES_BY_LOGIT_SCALE):
        value = getattr(config, "logit_scale", None)
        scale = _factor(value)
    elif any(not _is_trivial(getattr(config, name, None)) for name in _SCALE_FIELDS):
        return None
    softcap = getattr(config, "final_logit_softcapping", None)
    return LogitTransform(scale=scale, softcap=float(softcap) if softcap else None, divisor=divisor)
