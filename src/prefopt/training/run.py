"""One training run from a resolved :class:`RunConfig`: data, model, trainer, outputs.

The output folder holds the adapter (or full model), the tokenizer, the resolved config
(``prefopt_config.yaml``), ``metrics.jsonl`` and the Trainer's ``checkpoint-<step>`` folders.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefopt.api import AlgorithmSpec
from prefopt.config import RunConfig
from prefopt.data.tokenize import TokenizationSettings, TokenizedPair, tokenize_pairs
from prefopt.errors import UsageError

CONFIG_FILE = "prefopt_config.yaml"
log = logging.getLogger("prefopt")


@dataclass
class RunResult:
    output_dir: Path
    steps: int
    train_pairs: int
    dropped_pairs: int
    final_metrics: dict[str, float] = field(default_factory=dict)


class PairDataset:
    """A list of tokenized pairs as a map-style dataset (the collator builds tensors)."""

    def __init__(self, pairs: list[TokenizedPair]) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> TokenizedPair:
        return self.pairs[index]


def load_pairs(
    source: str,
    split: str,
    tokenizer: Any,
    config: RunConfig,
    spec: AlgorithmSpec,
) -> tuple[list[TokenizedPair], int]:
    """Read, validate and tokenize one data source; returns the pairs and the dropped count."""
    from prefopt.data.io import load_rows
    from prefopt.data.records import validate_record

    rows = []
    for line, row in load_rows(source, split=split):
        validate_record(row, source, line, spec.extra_columns)
        rows.append((line, row))
    if not rows:
        raise UsageError(f"{source}: no preference pairs found")
    if spec.validate_records is not None:
        spec.validate_records(rows, source)
    settings = TokenizationSettings(config.data.max_length, config.data.max_prompt_length)
    pairs, report = tokenize_pairs(rows, tokenizer, settings, spec.extra_columns, source)
    if report.dropped:
        log.warning(
            "%s: dropped %d of %d pairs left without completion tokens after truncation",
            source,
            report.dropped,
            len(rows),
        )
    if not pairs:
        raise UsageError(f"{source}: every pair was dropped by truncation; raise data.max_length")
    return pairs, report.dropped


def resolve_trainer_class(spec: AlgorithmSpec) -> type:
    from prefopt.training.trainer import PreferenceTrainer

    trainer_class = spec.trainer_class
    if trainer_class is None:
        return PreferenceTrainer
    if isinstance(trainer_class, str):
        module_name, _, attribute = trainer_class.partition(":")
        trainer_class = getattr(importlib.import_module(module_name), attribute)
    return trainer_class


def build_training_arguments(config: RunConfig, quiet: bool) -> Any:
    from transformers import TrainingArguments

    values = dict(config.training)
    values.setdefault("disable_tqdm", True)  # prefopt draws its own progress
    values.setdefault("dataloader_pin_memory", _has_cuda())
    values["remove_unused_columns"] = False
    values["label_names"] = []
    if quiet:
        values["log_level"] = "error"
    try:
        return TrainingArguments(**values)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"invalid training settings: {exc}") from None


def build_model_and_reference(config: RunConfig, spec: AlgorithmSpec) -> tuple[Any, Any]:
    """The trainable model and, for full fine-tuning with a reference, its frozen copy."""
    from prefopt.modeling.loading import load_model
    from prefopt.modeling.lora import apply_lora

    model = load_model(config.model)
    reference_model = None
    if config.lora is not None:
        model = apply_lora(model, config.lora)
    elif spec.needs_reference:
        reference_model = load_model(config.model, for_training=False)
    return model, reference_model


def train(config: RunConfig, spec: AlgorithmSpec, resume: bool = False, quiet: bool = False) -> RunResult:
    """Train ``spec`` as configured; returns where the outputs are and the final metrics."""
    if spec.runner is not None:  # algorithms with their own data flow (e.g. SFT)
        result: RunResult = spec.runner(config, spec, resume=resume, quiet=quiet)
        return result
    from prefopt.modeling.loading import load_tokenizer
    from prefopt.training.callbacks import MetricsJsonlCallback, ProgressDisplay
    from prefopt.training.reference import DisabledAdapterReference, FrozenCopyReference

    if not config.data.train:
        raise UsageError("no training data given: pass --train-file or set data.train")
    output_dir = config.output_dir
    checkpoint = latest_checkpoint(output_dir) if resume else None
    if resume and checkpoint is None:
        raise UsageError(f"--resume: no checkpoint-<step> folder in {output_dir}")

    tokenizer = load_tokenizer(config.model)
    train_pairs, dropped = load_pairs(
        config.data.train, config.data.train_split, tokenizer, config, spec
    )
    eval_pairs = None
    if config.data.eval:
        eval_pairs, _ = load_pairs(config.data.eval, config.data.eval_split, tokenizer, config, spec)

    args = build_training_arguments(config, quiet)
    model, reference_model = build_model_and_reference(config, spec)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, output_dir)

    from prefopt.data.collate import PaddedCollator

    reference: Any = None
    if spec.needs_reference:
        reference = (
            FrozenCopyReference(reference_model.to(args.device))
            if reference_model is not None
            else DisabledAdapterReference(_unwrap_peft)
        )
    pairs_per_step = (
        args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    )
    callbacks: list[Any] = [MetricsJsonlCallback(output_dir)]
    if not quiet:
        callbacks.append(ProgressDisplay(pairs_per_step))
    trainer_class = resolve_trainer_class(spec)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=PairDataset(train_pairs),
        eval_dataset=PairDataset(eval_pairs) if eval_pairs else None,
        data_collator=PaddedCollator(tokenizer.pad_token_id, spec.extra_columns),
        processing_class=tokenizer,
        make_loss=functools.partial(spec.make_loss, config.algorithm),
        reference=reference,
        extra_columns=spec.extra_columns,
        callbacks=callbacks,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # ProgressDisplay prints instead
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    final: dict[str, float] = {}
    if eval_pairs:
        final.update(trainer.evaluate())
    trainer.save_model(str(output_dir))
    for entry in reversed(trainer.state.log_history):
        if "loss" in entry:
            final = {**entry, **final}
            break
    return RunResult(output_dir, trainer.state.global_step, len(train_pairs), dropped, final)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _unwrap_peft(model: Any) -> Any:
    while not hasattr(model, "disable_adapter") and hasattr(model, "module"):
        model = model.module
    return model


def save_config(config: RunConfig, output_dir: Path) -> Path:
    path = output_dir / CONFIG_FILE
    temporary = path.with_suffix(".yaml.tmp")
    temporary.write_text(config.to_yaml(), encoding="utf-8")
    os.replace(temporary, path)
    return path


def latest_checkpoint(output_dir: Path) -> Path | None:
    if not output_dir.is_dir():
        return None
    steps = []
    for child in output_dir.iterdir():
        name = child.name
        if child.is_dir() and name.startswith("checkpoint-") and name[11:].isdigit():
            steps.append((int(name[11:]), child))
    return max(steps)[1] if steps else None
