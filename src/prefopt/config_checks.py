"""Settings no run can use, refused with one line naming the key before anything loads."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any

from prefopt.errors import ConfigError

#: ``training.*`` settings that count something per step: at least 1.
POSITIVE_TRAINING_KEYS = (
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
)


def check_values(values: Mapping[str, Any]) -> None:
    """Refuse settings no run can use, with one line naming the key: a batch size, gradient
    accumulation or LoRA rank below 1, ``training.max_steps`` of 0 or below -1 (-1: no limit,
    the epochs decide), lengths below 1, and a ``data.max_prompt_length`` that leaves no room
    for a completion within ``data.max_length`` (tokenization keeps at most that many prompt
    tokens, then cuts each completion to what ``max_length`` leaves: with a prompt budget of
    ``max_length`` or more, a long prompt leaves nothing and its pair is dropped). Values not
    yet typed (text from a YAML file) are checked once they are."""
    training = values.get("training") or {}
    for name in POSITIVE_TRAINING_KEYS:
        _at_least_one(training.get(name), f"training.{name}", "expected a positive integer")
    steps = training.get("max_steps")
    if _is_int(steps) and (steps == 0 or steps < -1):
        raise ConfigError(
            "training.max_steps: expected a positive number of steps, or -1 for no limit "
            f"(num_train_epochs decides), got {steps}"
        )
    lora = values.get("lora")
    if isinstance(lora, Mapping):
        _at_least_one(lora.get("r"), "lora.r", "expected a positive integer (the LoRA rank)")
    check_quantized_sharding(values.get("model") or {}, training)
    _check_health(values.get("health") or {})
    weight = (values.get("lists") or {}).get("weight")
    if isinstance(weight, str) and weight not in ("none", "gap"):
        raise ConfigError(f"lists.weight: expected none or gap, got '{weight}'")
    pairing = (values.get("lists") or {}).get("pairs")
    if isinstance(pairing, str) and pairing not in ("best-worst", "best-rest", "all"):
        raise ConfigError(f"lists.pairs: expected best-worst, best-rest or all, got '{pairing}'")
    data = values.get("data") or {}
    length, prompt = data.get("max_length"), data.get("max_prompt_length")
    _at_least_one(length, "data.max_length", "expected a positive number of tokens")
    _at_least_one(prompt, "data.max_prompt_length", "expected a positive number of tokens")
    if _is_int(length) and _is_int(prompt) and prompt >= length:
        raise ConfigError(
            f"data.max_prompt_length ({prompt}) must be smaller than data.max_length "
            f"({length}): a prompt that long leaves no room for a completion"
        )


def check_quantized_sharding(model: Mapping[str, Any], training: Mapping[str, Any]) -> None:
    """QLoRA with FSDP or DeepSpeed: prefopt loads the 4-bit base whole on each process's own
    device (a per-process ``device_map``) and stores it in bitsandbytes' own uint8 blocks, which
    neither engine can shard; refused with the ways that work."""
    if not model.get("load_in_4bit"):
        return
    engine = next((key for key in ("fsdp", "deepspeed") if training.get(key)), None)
    if engine is not None:
        raise ConfigError(
            f"model.load_in_4bit with training.{engine}: a 4-bit base is loaded whole on each "
            "process and cannot be sharded; train QLoRA data-parallel (--num-processes, no "
            f"training.{engine}), or shard a bf16 base with LoRA (model.load_in_4bit=false)"
        )


def _is_int(value: Any) -> typing.TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _at_least_one(value: Any, key: str, expected: str) -> None:
    if _is_int(value) and value < 1:
        raise ConfigError(f"{key}: {expected}, got {value}")


def _check_health(health: Mapping[str, Any]) -> None:
    """Health thresholds that could never fire, or would fire on every run."""
    for name in ("accuracy_pinned_logs", "flat_loss_steps", "beta_clamp_steps"):
        _at_least_one(health.get(name), f"health.{name}", "expected a positive integer")
    for name in ("displacement_nats_per_token", "flat_loss_tolerance", "eval_accuracy_gap"):
        value = health.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise ConfigError(f"health.{name}: expected a positive number, got {value}")
    factor = health.get("grad_spike_factor")
    if isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor <= 1:
        raise ConfigError(
            f"health.grad_spike_factor: expected a factor above 1 (times the median gradient "
            f"norm), got {factor}"
        )
    correlation = health.get("length_correlation")
    if isinstance(correlation, (int, float)) and not 0 < correlation <= 1:
        raise ConfigError(
            f"health.length_correlation: expected a correlation in (0, 1], got {correlation}"
        )
