"""The stages of a training run, the same for every algorithm.

:func:`prefopt.training.run.train` calls them in order::

    run = start_run(config, spec, ...)      checks, precision, training arguments, timer
    data = prepare_data(run)                tokenizer and datasets
    model = build_model(run)                policy (+ LoRA) and frozen copy; claims the folder
    reference = build_reference(run, model) one of the three references, or none
    trainer = build_trainer(run, data, model, reference)
    prepare_reference(run, trainer, data)   reference cache read, computed or planned
    fit(run, trainer)                       the training loop
    result = finish(run, trainer, data)     final evaluation, model, run card, summary

What differs between algorithms is the trainer class (``AlgorithmSpec.trainer_class``, see
:class:`RunTrainer`): the arguments class it takes, how it loads a data source and how it is
built for a run. :class:`prefopt.training.trainer.PreferenceTrainer` does this for preference
pairs; SFT's trainer for prompt/completion examples. Everything else (precision, the secrets
check, engine preparation, replacing and claiming the output folder, the non-finite guard,
timing, progress) is here, once; refusing to train over an existing run is the caller's
check, before anything loads (:func:`prefopt.workflows.preflight`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from prefopt.api import AlgorithmSpec
from prefopt.config import RunConfig
from prefopt.errors import UsageError
from prefopt.modeling.precision import Precision
from prefopt.training.checkpoints import latest_checkpoint
from prefopt.training.timing import RunTimer

if TYPE_CHECKING:
    from prefopt.training.callbacks import MetricsJsonlCallback, ProgressDisplay
    from prefopt.training.health import Finding
    from prefopt.training.health_watch import HealthWatch
    from prefopt.training.reference import Reference

log = logging.getLogger("prefopt")


@dataclass
class RunResult:
    """Where a run's outputs are, how much it trained, its final metrics and its timing."""

    output_dir: Path
    steps: int
    train_pairs: int
    dropped_pairs: int
    final_metrics: dict[str, float] = field(default_factory=dict)
    #: Seconds per phase of the whole command (see :mod:`prefopt.training.timing`).
    timing: dict[str, float] = field(default_factory=dict)
    #: ``resume`` found the run finished: nothing was trained (``steps`` is where it ended,
    #: 0 when only its final model tells that it finished).
    already_finished: bool = False
    #: Model FLOPs utilisation of the training loop (:mod:`prefopt.training.utilization`).
    utilization: dict[str, Any] = field(default_factory=dict)
    #: What the health checks found (:mod:`prefopt.training.health`), in the order found.
    findings: list[Finding] = field(default_factory=list)
    #: What ``train_pairs`` counts: ``pairs``, ``lists`` or ``conversations`` (whose
    #: ``dropped_pairs`` counts the turns left out).
    train_unit: str = "pairs"
    #: Where the reference log-probs came from (the cache, or online), "" without reference.
    reference: str = ""


class RunTrainer(Protocol):
    """What a trainer class brings to the stages (``PreferenceTrainer`` and SFT's trainer)."""

    #: ``TrainingArguments`` or the subclass the trainer takes (TRL's ``SFTConfig``).
    arguments_class: type

    @classmethod
    def adapt_arguments(cls, values: dict[str, Any], config: RunConfig) -> None:
        """Set the trainer's own entries of the arguments (before they are built)."""

    @classmethod
    def load_data(
        cls, source: str, split: str, tokenizer: Any, run: Run, progress: bool
    ) -> tuple[Any, int]:
        """One data source as the trainer's dataset, and how many records were dropped."""

    @classmethod
    def for_run(
        cls,
        run: Run,
        data: RunData,
        model: Any,
        reference: Reference | None,
        callbacks: list[Any],
    ) -> Any:
        """The trainer of this run."""


@dataclass
class Run:
    """What every stage reads: the settled config and its decisions."""

    config: RunConfig
    spec: AlgorithmSpec
    trainer_class: Any
    precision: Precision
    args: Any
    train_source: str
    checkpoint: Path | None
    timer: RunTimer
    resume: bool = False
    quiet: bool = False
    replace_existing: bool = False
    #: The callbacks every run has (:func:`build_trainer` sets them).
    watch: Watch | None = None

    @property
    def output_dir(self) -> Path:
        return self.config.output_dir

    @property
    def pairs_per_step(self) -> int:
        args = self.args
        return args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size


@dataclass
class RunData:
    tokenizer: Any
    train: Any
    evaluation: Any
    dropped: int


@dataclass
class BuiltModel:
    policy: Any
    #: Full fine-tuning's reference weights (``None`` with LoRA or without a reference); the
    #: reference takes it over, so that releasing the reference frees it.
    frozen_copy: Any = None


@dataclass
class Watch:
    """The callbacks every run has: metrics file, health checks, non-finite guard, progress
    display."""

    metrics: MetricsJsonlCallback
    display: ProgressDisplay | None
    callbacks: list[Any]
    health: HealthWatch


# -- start -----------------------------------------------------------------------------------
def start_run(
    config: RunConfig,
    spec: AlgorithmSpec,
    resume: bool = False,
    quiet: bool = False,
    replace_existing: bool = False,
) -> Run:
    """Check what can fail before anything loads (``report_to``, the data source, the
    checkpoint to resume), settle the precision and build the training arguments."""
    from transformers import set_seed

    from prefopt.training.launch import configure_cpu_workers
    from prefopt.training.run_setup import (
        announce_precision,
        build_training_arguments,
        resolve_trainer_class,
        settle_precision,
        starting_point,
    )
    from prefopt.training.wandb_setup import check_report_to

    timer = RunTimer()  # startup (interpreter, imports, config) is the process's age here
    configure_cpu_workers()  # torchrun/accelerate workers without GPUs: gloo DDP
    check_report_to(config.training.get("report_to"))
    train_source, checkpoint = starting_point(config, resume)
    precision = settle_precision(config)
    announce_precision(precision, quiet)
    trainer_class = resolve_trainer_class(spec)
    args = build_training_arguments(config, quiet, precision, trainer_class)
    set_seed(args.seed)  # new weights (LoRA) start the same in every run and every process
    return Run(
        config, spec, trainer_class, precision, args, train_source, checkpoint, timer,
        resume=resume, quiet=quiet, replace_existing=replace_existing,
    )  # fmt: skip


# -- data and model ------------------------------------------------------------------------
def prepare_data(run: Run) -> RunData:
    """The tokenizer and the training (and evaluation) data as the trainer class loads them."""
    from prefopt.modeling.loading import load_tokenizer

    config = run.config
    tokenizer = load_tokenizer(config.model)
    load = run.trainer_class.load_data
    progress = not run.quiet
    train, dropped = load(run.train_source, config.data.train_split, tokenizer, run, progress)
    evaluation = None
    if config.data.eval:
        evaluation, _ = load(config.data.eval, config.data.eval_split, tokenizer, run, progress)
        if type(evaluation) is not type(train):
            raise UsageError(
                f"{config.data.eval} holds {_kind_of(evaluation)} but the training file holds "
                f"{_kind_of(train)}: evaluate on data of the same kind"
            )
    run.timer.lap("tokenize")
    return RunData(tokenizer, train, evaluation, dropped)


def _kind_of(dataset: Any) -> str:
    """What a run's dataset holds: pairs, lists (of ranked responses) or conversations
    (:class:`~prefopt.data.samples.SampleDataset`; SFT's examples count as pairs)."""
    return str(getattr(dataset, "kind", "pairs"))


def build_model(run: Run) -> BuiltModel:
    """The trainable model and, for full fine-tuning with a reference, its frozen copy, each
    loaded in the dtype that fits the precision and device; then the output folder is claimed
    (:func:`claim_output_dir`): a run that fails to load its data or model loses nothing."""
    model = load_models(run.config, run.spec, run.precision)
    run.timer.lap("model")
    claim_output_dir(run)
    return model


def load_models(
    config: RunConfig, spec: AlgorithmSpec, precision: Precision | None = None
) -> BuiltModel:
    """:func:`build_model`'s loading (:func:`prefopt.modeling.precision.load_dtype_name`)."""
    from prefopt.modeling.loading import load_model
    from prefopt.modeling.lora import apply_lora, record_absolute_base
    from prefopt.modeling.precision import load_dtype_name, resolve_precision

    if precision is None:  # as the run would decide it
        precision = resolve_precision(config.model.precision, config.training)
    if config.model.load_in_4bit and config.lora is None:
        raise UsageError("model.load_in_4bit trains LoRA adapters on a frozen 4-bit base: set lora")
    dtype = load_dtype_name(config.model.dtype, precision, full_fine_tuning=config.lora is None)
    policy = load_model(config.model, dtype=dtype)
    if config.lora is not None:
        policy = apply_lora(policy, config.lora)
        record_absolute_base(policy)
        return BuiltModel(policy)
    if spec.needs_reference and not zero3_enabled():  # loaded as the policy: same numerics
        return BuiltModel(policy, load_model(config.model, for_training=False, dtype=dtype))
    return BuiltModel(policy)  # under ZeRO-3 the policy scores the reference before step 1


def zero3_enabled() -> bool:
    """Whether the run's arguments asked for DeepSpeed ZeRO-3 (every model loaded from then on
    is partitioned across the processes, and only its engine's forward gathers the weights)."""
    try:
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
    except ImportError:  # pragma: no cover - transformers without the integration
        return False
    return bool(is_deepspeed_zero3_enabled())


def claim_output_dir(run: Run) -> None:
    """Replace an earlier run's outputs when asked (``--overwrite``), create the folder and
    write the resolved config (``prefopt_config.yaml``)."""
    from prefopt.training.launch import is_main_process
    from prefopt.training.outputs import save_config
    from prefopt.training.run_folder import remove_run_outputs

    if run.replace_existing and not run.resume and is_main_process():
        remove_run_outputs(run.output_dir)
    run.output_dir.mkdir(parents=True, exist_ok=True)
    save_config(run.config, run.output_dir, run.precision)


def build_reference(run: Run, model: BuiltModel) -> Reference | None:
    """The run's reference (:func:`prefopt.training.reference.choose_reference`), or ``None``
    for a reference-free algorithm. The reference takes the frozen copy over."""
    if not run.spec.needs_reference:
        return None
    from prefopt.training.reference import choose_reference

    frozen_copy, model.frozen_copy = model.frozen_copy, None
    if frozen_copy is not None:
        frozen_copy = frozen_copy.to(run.args.device)
    starting_policy = run.config.lora is None and frozen_copy is None
    if starting_policy:
        note_zero3_reference(run)
    return choose_reference(run.config, frozen_copy, starting_policy=starting_policy)


def note_zero3_reference(run: Run) -> None:
    """Full fine-tuning under ZeRO-3 holds no frozen copy (it would be partitioned, and only the
    engine gathers weights): the policy scores the reference before its first step, into the
    cache (``reference.mode: cached``). ``online`` cannot be honoured; ``auto`` is told."""
    from prefopt.training.launch import is_main_process

    mode = run.config.reference.mode
    if mode == "online":
        raise UsageError(
            "reference.mode=online needs a frozen copy of the model, which ZeRO-3 cannot hold "
            "for full fine-tuning: use reference.mode=cached (the policy scores the reference "
            "before its first step), or LoRA, or ZeRO-2"
        )
    if mode == "auto" and not run.quiet and is_main_process():
        log.warning(
            "ZeRO-3 full fine-tuning: the policy scores the reference log-probs before its "
            "first step and the cache keeps them (reference.mode=cached); no frozen copy is "
            "loaded"
        )


# -- trainer, fit, finish --------------------------------------------------------------------
def build_trainer(run: Run, data: RunData, model: BuiltModel, reference: Reference | None) -> Any:
    """The trainer class built for this run (:meth:`RunTrainer.for_run`) with the callbacks
    every run has; under bf16, frozen weights are rounded once instead of in every step."""
    from transformers.trainer_callback import PrinterCallback

    run.watch = watch = watch_run(run, _kind_of(data.train))
    trainer = run.trainer_class.for_run(run, data, model.policy, reference, watch.callbacks)
    trainer.remove_callback(PrinterCallback)  # ProgressDisplay prints instead
    if run.args.bf16:  # every forward runs under autocast
        import torch

        from prefopt.modeling.logprobs import cast_frozen_linears

        for frozen in (trainer.model, None if reference is None else reference.model):
            if frozen is not None:
                cast_frozen_linears(frozen, torch.bfloat16)
    return trainer


def watch_run(run: Run, unit: str = "pairs") -> Watch:
    """The callbacks every run has; ``unit`` names what a batch holds (``pairs``, ``lists``,
    ``conversations``) for the progress display's rate."""
    from prefopt.training.callbacks import MetricsJsonlCallback, ProgressDisplay
    from prefopt.training.guards import NonFiniteGuard
    from prefopt.training.health_watch import HealthWatch

    metrics = MetricsJsonlCallback(run.output_dir)
    display = None if run.quiet else ProgressDisplay(run.pairs_per_step, unit=unit)
    say = None if display is None else _warning_printer(display.console)
    health = HealthWatch(run.config.health, metrics, say)
    callbacks: list[Any] = [metrics, health, NonFiniteGuard()]
    if display is not None:
        callbacks.append(display)
    return Watch(metrics, display, callbacks, health)


def _warning_printer(console: Any) -> Any:
    def say(text: str) -> None:
        console.print(text, markup=False, style="yellow", soft_wrap=True)

    return say


def prepare_reference(run: Run, trainer: Any, data: RunData) -> None:
    """The reference's cache read, computed (``cached``) or planned to be filled by the first
    epoch (:meth:`Reference.prepare`), now that the trainer's forward and collator exist."""
    reference = getattr(trainer, "reference", None)
    if reference is not None:
        evaluation = None if data.evaluation is None else data.evaluation.samples
        reference.prepare(trainer, data.train.samples, evaluation, run.quiet)
    run.timer.lap("reference")


def fit(run: Run, trainer: Any) -> None:
    """Train (from the checkpoint when resuming). A non-finite loss or gradient names the
    newest checkpoint to resume from."""
    from prefopt.training.guards import NonFiniteError

    checkpoint = str(run.checkpoint) if run.checkpoint else None
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    except NonFiniteError as exc:
        raise exc.with_checkpoint(latest_checkpoint(run.output_dir)) from None
    finally:
        if run.watch is not None and run.watch.display is not None:
            run.watch.display.close()
    run.timer.lap("train")
    run.timer.rebook(getattr(trainer, "reference_seconds", 0.0), "train", "reference")


def finish(run: Run, trainer: Any, data: RunData) -> RunResult:
    """Evaluate a last time when there is eval data, save the model, tokenizer and run card,
    and close ``metrics.jsonl`` with the precision and the timing."""
    from prefopt.training.outputs import save_and_summarize

    evaluate = data.evaluation is not None
    final = save_and_summarize(trainer, run.output_dir, evaluate=evaluate, timer=run.timer)
    timing = run.timer.summary()
    compute = measure_utilization(run, trainer, data, timing.get("train", 0.0))
    summary: dict[str, Any] = {
        "precision": run.precision.mode,
        "precision_reason": run.precision.reason,
        "timing": timing,
        "utilization": compute,
    }
    reference = getattr(trainer, "reference", None)
    if run.spec.needs_reference:
        summary["reference"] = "–" if reference is None else reference.source
    findings = [] if run.watch is None else run.watch.health.findings
    if findings:
        summary["health"] = [finding.event() for finding in findings]
    if run.watch is not None:
        run.watch.metrics.add_to_summary(summary)
    steps = trainer.state.global_step
    return RunResult(
        run.output_dir,
        steps,
        len(data.train),
        data.dropped,
        final,
        timing,
        utilization=compute,
        findings=findings,
        train_unit=_kind_of(data.train),
        reference=summary.get("reference", ""),
    )


def measure_utilization(run: Run, trainer: Any, data: RunData, seconds: float) -> dict[str, Any]:
    """The run's model FLOPs utilisation (:mod:`prefopt.training.utilization`) over the pairs
    this invocation trained on (a resumed run counts from its checkpoint)."""
    from prefopt.data.prep_cache import cache_root
    from prefopt.training import utilization as compute

    steps = trainer.state.global_step - getattr(trainer, "_initial_global_step", 0)
    tokens = steps * run.pairs_per_step * compute.mean_sequence_tokens(data.train)
    batches = getattr(trainer, "training_batches", 0)
    online = getattr(trainer, "online_reference_batches", 0) / batches if batches else 0.0
    peak, source = compute.device_peak(
        run.args.device, run.args.bf16, cache_root(run.config.reference.cache_dir)
    )
    return compute.utilization(
        compute.matmul_parameters(trainer.model),
        tokens,
        seconds,
        full_fine_tuning=run.config.lora is None,
        online_reference=online,
        peak=peak,
        peak_source=source,
    ).summary()
