"""What a run settles before anything loads (:func:`prefopt.training.stages.start_run`): where
it starts from, its precision, its trainer class and the training arguments."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from prefopt.api import AlgorithmSpec
from prefopt.config import RunConfig
from prefopt.errors import UsageError
from prefopt.modeling.precision import Precision
from prefopt.training.checkpoints import latest_checkpoint

#: What :class:`prefopt.training.stages.RunTrainer` asks of a trainer class.
RUN_TRAINER_ATTRIBUTES = ("arguments_class", "adapt_arguments", "load_data", "for_run")


def starting_point(config: RunConfig, resume: bool) -> tuple[str, Path | None]:
    """What a run starts from: its training data source and, with ``--resume``, the newest
    complete ``checkpoint-<step>`` to continue from. Usage errors if either is missing."""
    if not config.data.train:
        raise UsageError("no training data given: pass --train-file or set data.train")
    if not resume:
        return config.data.train, None
    checkpoint = latest_checkpoint(config.output_dir)
    if checkpoint is None:
        raise UsageError(f"--resume: no complete checkpoint in {config.output_dir}")
    return config.data.train, checkpoint


def settle_precision(config: RunConfig) -> Precision:
    """Decide the run's compute precision once (:mod:`prefopt.modeling.precision`) and record
    it as ``model.precision`` (``auto`` becomes what it chose), so ``prefopt_config.yaml`` says
    what the run did and reusing it (``--config``) does the same on any machine; the
    ``training`` flags stay as the user set them."""
    from prefopt.modeling.precision import resolve_precision

    precision = resolve_precision(config.model.precision, config.training)
    config.model.precision = precision.mode
    return precision


def announce_precision(precision: Precision, quiet: bool) -> None:
    """One line on stderr when a run starts: the effective precision and why."""
    from prefopt.training.launch import is_main_process

    if not quiet and is_main_process():
        from prefopt.console import console

        console(stderr=True).print(f"precision: {precision.describe()}", markup=False)


def resolve_trainer_class(spec: AlgorithmSpec) -> Any:
    """``spec.trainer_class``: ``PreferenceTrainer`` when unset; a ``"module:Class"`` string
    is imported now (plugins name it so that listing them imports no trainer)."""
    from prefopt.training.trainer import PreferenceTrainer

    trainer_class = spec.trainer_class
    if trainer_class is None:
        return PreferenceTrainer
    if isinstance(trainer_class, str):
        module_name, _, attribute = trainer_class.partition(":")
        trainer_class = getattr(importlib.import_module(module_name), attribute)
    missing = [name for name in RUN_TRAINER_ATTRIBUTES if not hasattr(trainer_class, name)]
    if missing:
        raise UsageError(
            f"algorithm '{spec.name}': trainer_class {trainer_class.__name__} lacks "
            f"{', '.join(missing)}; subclass prefopt.training.trainer.PreferenceTrainer "
            "(see docs/plugins.md#custom-trainer-subclasses-and-data-flows)"
        )
    return trainer_class


def build_training_arguments(
    config: RunConfig, quiet: bool, precision: Precision, trainer_class: Any
) -> Any:
    """The trainer's arguments from the ``training`` section: no secrets in plain settings,
    the run's precision, prefopt's progress display instead of tqdm, the trainer's own entries
    (:meth:`RunTrainer.adapt_arguments`) and the engine (DeepSpeed on CPU workers) prepared."""
    from prefopt.modeling.precision import apply_precision
    from prefopt.training.redaction import check_training_secrets
    from prefopt.training.sharding import prepare_engine

    values = dict(config.training)
    check_training_secrets(values)
    values.setdefault("disable_tqdm", True)  # prefopt draws its own progress
    values.setdefault("dataloader_pin_memory", _has_cuda())
    apply_precision(values, precision)
    trainer_class.adapt_arguments(values, config)
    if quiet:
        values["log_level"] = "error"
    prepare_engine(values)  # DeepSpeed installed, and set up on CPU workers
    try:
        return trainer_class.arguments_class(**values)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"invalid training settings: {exc}") from None


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
