"""Wrap a model with a PEFT LoRA adapter from the run config's ``lora`` section."""

from __future__ import annotations

from typing import Any

from prefopt.config import LoraSettings


def apply_lora(model: Any, settings: LoraSettings) -> Any:
    from peft import LoraConfig, get_peft_model

    target = settings.target_modules
    peft_config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target if isinstance(target, str) else list(target),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config)


def record_absolute_base(model: Any) -> None:
    """Store a local base model as an absolute path in the adapter config, so the saved
    adapter works as ``--model`` from any working directory."""
    from pathlib import Path

    for peft_config in getattr(model, "peft_config", {}).values():
        base = peft_config.base_model_name_or_path
        if base and Path(base).is_dir():
            peft_config.base_model_name_or_path = str(Path(base).resolve())
