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
from prefopt.data.tokenize import TokenizationSettings, TokenizedPair
from prefopt.errors import UsageError
from prefopt.modeling.precision import Precision
from prefopt.training.checkpoints import latest_checkpoint
from prefopt.training.run_folder import CONFIG_FILE, remove_run_outputs, settle_permissions

log = logging.getLogger("prefopt")


@dataclass
class RunResult:
    output_dir: Path
    steps: int
    train_pairs: int
    dropped_pairs: int
    final_metrics: dict[str, float] = field(default_factory=dict)
    #: Seconds per phase of the whole command (see :mod:`prefopt.training.timing`).
    timing: dict[str, float] = field(default_factory=dict)


class PairDataset:
    """A list of tokenized pairs as a map-style dataset (the collator builds tensors)."""

    def __init__(self, pairs: list[TokenizedPair]) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> TokenizedPair:
        return self.pairs[index]

    @property
    def lengths(self) -> list[int]:
        """Tokens per pair, for length-grouped sampling."""
        from prefopt.data.collate import pair_length

        return [pair_length(pair) for pair in self.pairs]


def load_pairs(
    source: str,
    split: str,
    tokenizer: Any,
    config: RunConfig,
    spec: AlgorithmSpec,
    progress: bool = False,
) -> tuple[list[TokenizedPair], int]:
    """Read, validate and tokenize one data source; returns the pairs and the dropped count.

    A local file's prepared pairs are cached by content (``data.prep_cache``)."""
    from prefopt.data.io import load_rows
    from prefopt.data.prep_cache import prepare_pairs
    from prefopt.data.records import validate_record

    def read_rows() -> list[tuple[int, dict[str, Any]]]:
        rows = []
        for line, row in load_rows(source, split=split):
            validate_record(row, source, line, spec.extra_columns)
            rows.append((line, row))
        if not rows:
            raise UsageError(f"{source}: no preference pairs found")
        if spec.validate_records is not None:
            spec.validate_records(rows, source)
        return rows

    from prefopt.training.callbacks import TaskProgress

    settings = TokenizationSettings(config.data.max_length, config.data.max_prompt_length)
    label = f"tokenize {source}" + ("" if Path(source).exists() else f" ({split})")  # hub split
    with TaskProgress(label, enabled=progress) as shown:
        pairs, report, cached = prepare_pairs(
            source,
            split,
            tokenizer,
            settings,
            spec.extra_columns,
            lambda: shown.counting(read_rows()),
            validation=spec.name,
            use_cache=config.data.prep_cache,
            root=config.reference.cache_dir,
        )
        if cached:
            shown.count, shown.note = report.pairs, "from the prep cache"
    if report.dropped:
        log.warning(
            "%s: dropped %d of %d pairs left without completion tokens after truncation",
            source,
            report.dropped,
            report.pairs + report.dropped,
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


def build_training_arguments(config: RunConfig, quiet: bool, precision: Precision) -> Any:
    from transformers import TrainingArguments

    values = dict(config.training)
    values.setdefault("disable_tqdm", True)  # prefopt draws its own progress
    values.setdefault("dataloader_pin_memory", _has_cuda())
    values["remove_unused_columns"] = False
    values["label_names"] = []
    from prefopt.training.redaction import check_training_secrets

    check_training_secrets(values)
    from prefopt.modeling.precision import apply_precision

    apply_precision(values, precision)
    if config.data.layout in ("auto", "packed"):  # similar lengths pack with little padding
        values.setdefault("train_sampling_strategy", "group_by_length")
    if quiet:
        values["log_level"] = "error"
    from prefopt.training.sharding import prepare_engine

    prepare_engine(values)  # DeepSpeed installed, and set up on CPU workers
    try:
        return TrainingArguments(**values)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"invalid training settings: {exc}") from None


def build_model_and_reference(
    config: RunConfig, spec: AlgorithmSpec, precision: Precision | None = None
) -> tuple[Any, Any]:
    """The trainable model and, for full fine-tuning with a reference, its frozen copy, each
    loaded in the dtype that fits the precision and device
    (:func:`prefopt.modeling.precision.load_dtype_name`)."""
    from prefopt.modeling.loading import load_model
    from prefopt.modeling.lora import apply_lora
    from prefopt.modeling.precision import load_dtype_name, resolve_precision

    if precision is None:  # as the run would decide it
        precision = resolve_precision(config.model.precision, config.training)
    if config.model.load_in_4bit and config.lora is None:
        raise UsageError("model.load_in_4bit trains LoRA adapters on a frozen 4-bit base: set lora")
    dtype = load_dtype_name(config.model.dtype, precision, full_fine_tuning=config.lora is None)
    model = load_model(config.model, dtype=dtype)
    reference_model = None
    if config.lora is not None:
        model = apply_lora(model, config.lora)
    elif spec.needs_reference:  # loaded as the policy: the same numerics at step 0
        reference_model = load_model(config.model, for_training=False, dtype=dtype)
    return model, reference_model


def train(
    config: RunConfig,
    spec: AlgorithmSpec,
    resume: bool = False,
    quiet: bool = False,
    replace_existing: bool = False,
) -> RunResult:
    """Train ``spec`` as configured; returns where the outputs are and the final metrics.

    ``replace_existing`` removes an earlier run's files from the output folder (checkpoints,
    metrics, adapter/model, evaluation results) after the data and the model have loaded."""
    from prefopt.training.launch import configure_cpu_workers, is_main_process
    from prefopt.training.timing import RunTimer

    timer = RunTimer()  # startup (interpreter, imports, config) is the process's age here

    configure_cpu_workers()  # torchrun/accelerate workers without GPUs: gloo DDP
    from prefopt.training.wandb_setup import check_report_to

    check_report_to(config.training.get("report_to"))  # before any model loads
    replace_old_run = replace_existing and not resume and is_main_process()
    if spec.runner is not None:  # algorithms with their own data flow (e.g. SFT)
        if replace_old_run:
            remove_run_outputs(config.output_dir)
        result: RunResult = spec.runner(config, spec, resume=resume, quiet=quiet)
        return result
    from prefopt.modeling.loading import load_tokenizer
    from prefopt.training.callbacks import MetricsJsonlCallback, ProgressDisplay
    from prefopt.training.reference import DisabledAdapterReference, FrozenCopyReference

    train_source, checkpoint = starting_point(config, resume)
    output_dir = config.output_dir
    precision = settle_precision(config)
    announce_precision(precision, quiet)

    tokenizer = load_tokenizer(config.model)
    train_pairs, dropped = load_pairs(
        train_source, config.data.train_split, tokenizer, config, spec, progress=not quiet
    )
    eval_pairs = None
    if config.data.eval:
        eval_pairs, _ = load_pairs(
            config.data.eval, config.data.eval_split, tokenizer, config, spec, progress=not quiet
        )
    for index, pair in enumerate(train_pairs):  # batches carry it (pair_index): see reference_fill
        pair.index = index
    timer.lap("tokenize")

    args = build_training_arguments(config, quiet, precision)
    from transformers import set_seed

    set_seed(args.seed)  # new weights (LoRA) start the same in every run and every process
    model, reference_model = build_model_and_reference(config, spec, precision)
    timer.lap("model")
    if replace_old_run:  # only now: a run that fails to load its data or model loses nothing
        remove_run_outputs(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, output_dir, precision)

    from prefopt.data.collate import choose_layout, make_collator, pair_length

    longest = max(config.data.pack_tokens, max(pair_length(pair) for pair in train_pairs))
    layout, why = choose_layout(config.data.layout, model, longest)
    if why:
        log.warning("data.layout=%s: %s; using the padded layout", config.data.layout, why)
    collator = make_collator(
        layout, tokenizer.pad_token_id, spec.extra_columns, config.data.pack_tokens
    )
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
    from prefopt.training.guards import NonFiniteError, NonFiniteGuard

    display = None if quiet else ProgressDisplay(pairs_per_step)
    metrics_file = MetricsJsonlCallback(output_dir)
    callbacks: list[Any] = [metrics_file, NonFiniteGuard()]
    if display is not None:
        callbacks.append(display)
    trainer_class = resolve_trainer_class(spec)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=PairDataset(train_pairs),
        eval_dataset=PairDataset(eval_pairs) if eval_pairs else None,
        data_collator=collator,
        processing_class=tokenizer,
        make_loss=functools.partial(spec.make_loss, config.algorithm),
        reference=reference,
        extra_columns=spec.extra_columns,
        callbacks=callbacks,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # ProgressDisplay prints instead
    # Under DeepSpeed (ZeRO-3 partitions the weights at load) and FSDP (the model is not on its
    # GPU before training starts) the self-check is left out.
    if not (trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled):
        from prefopt.modeling.head_check import self_check

        self_check([trainer.model, reference_model], collator(train_pairs[:2]))
    if args.bf16:  # every forward runs under autocast: round frozen weights once, not per step
        import torch

        from prefopt.modeling.logprobs import cast_frozen_linears

        for frozen in (trainer.model, reference_model):
            if frozen is not None:
                cast_frozen_linears(frozen, torch.bfloat16)
    from prefopt.modeling.sdpa_gqa import native_gqa_on_cpu
    from prefopt.training.wandb_setup import finish_wandb_run, start_wandb_run

    with native_gqa_on_cpu(args.device.type):
        if reference is not None:
            from prefopt.training.reference_cache import provide_for_run

            plan = provide_for_run(trainer, config, tokenizer, train_pairs, eval_pairs, quiet)
            if plan.attached:  # every pair carries its reference log-probs
                trainer.release_reference()
            trainer.reference_fill = plan.fill
        # The trainer alone holds the reference from here, so releasing it (now, or when the
        # first epoch has filled the cache) frees a frozen copy's memory.
        reference = reference_model = None
        timer.lap("reference")
        wandb_run = start_wandb_run(config, args, resume=resume)
        try:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        except BaseException as exc:
            finish_wandb_run(wandb_run, failed=True)
            if isinstance(exc, NonFiniteError):  # name the checkpoint to resume from
                raise exc.with_checkpoint(latest_checkpoint(output_dir)) from None
            raise
        finally:
            if display is not None:
                display.close()
        timer.lap("train")
        final = save_and_summarize(trainer, output_dir, evaluate=bool(eval_pairs), timer=timer)
    finish_wandb_run(wandb_run)
    timing = timer.summary()
    metrics_file.add_to_summary(
        {"precision": precision.mode, "precision_reason": precision.reason, "timing": timing}
    )
    steps = trainer.state.global_step
    return RunResult(output_dir, steps, len(train_pairs), dropped, final, timing)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _unwrap_peft(model: Any) -> Any:
    while not hasattr(model, "disable_adapter") and hasattr(model, "module"):
        model = model.module
    return model


def save_and_summarize(
    trainer: Any, output_dir: Path, evaluate: bool, timer: Any = None
) -> dict[str, float]:
    """Save the trained adapter/model and tokenizer; the final metrics: the last logged training
    step's, plus a closing evaluation when there is eval data (the Trainer's own when its
    ``eval_strategy`` evaluated the final weights at the last step: not the same twice)."""
    final: dict[str, float] = {}
    if evaluate:
        if not getattr(getattr(trainer, "args", None), "load_best_model_at_end", False):
            final.update(_evaluation_at(trainer.state.log_history, trainer.state.global_step))
        if not final:
            final.update(trainer.evaluate())
            if timer is not None:
                timer.lap("evaluate")
    trainer.save_model(str(output_dir))
    settle_permissions(output_dir)
    if timer is not None:
        timer.lap("save")
    for entry in reversed(trainer.state.log_history):
        if "loss" in entry:
            final = {**entry, **final}
            break
    if getattr(getattr(trainer, "args", None), "should_save", True):
        write_run_card(output_dir, final)
    return final


def write_run_card(output_dir: Path, metrics: dict[str, Any]) -> None:
    """Replace the blank template PEFT saves as the adapter's README.md (and give a full model
    one) with a card of the run: base, algorithm, settings, data, final metrics
    (:func:`prefopt.modeling.model_cards.run_card`), from its ``prefopt_config.yaml``."""
    from prefopt.data.prep_cache import atomic_write_bytes
    from prefopt.modeling.merge import read_run_config
    from prefopt.modeling.model_cards import run_card

    run = read_run_config(str(output_dir))
    if run is None:
        return
    adapter = (output_dir / "adapter_config.json").is_file()
    title = str((run.get("training") or {}).get("run_name") or output_dir.name)
    card = run_card(title, run, metrics, adapter)
    atomic_write_bytes(output_dir / "README.md", card.encode("utf-8"))


def _evaluation_at(log_history: list[dict[str, Any]], step: int) -> dict[str, float]:
    """The metrics of an evaluation logged at ``step``, or ``{}``."""
    for entry in reversed(log_history):
        if "eval_loss" in entry and entry.get("step") == step:
            return {key: value for key, value in entry.items() if key != "step"}
    return {}


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


def save_config(config: RunConfig, output_dir: Path, precision: Precision | None = None) -> Path:
    """Write the resolved config, secrets (tokens, keys) replaced by ``<redacted>``; the
    effective precision and its reason head the file as a comment."""
    from prefopt.training.redaction import redacted_config_yaml

    path = output_dir / CONFIG_FILE
    temporary = path.with_suffix(f".yaml.{os.getpid()}.tmp")  # data-parallel workers all write it
    header = f"# precision: {precision.describe()}\n" if precision is not None else ""
    temporary.write_text(header + redacted_config_yaml(config), encoding="utf-8")
    os.replace(temporary, path)
    return path
