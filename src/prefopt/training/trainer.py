"""``PreferenceTrainer``: a ``transformers.Trainer`` that owns collation, forward and reference,
and hands per-pair log-probs to the algorithm's loss.

Everything the Trainer gives for free stays: accelerate (DDP, FSDP, DeepSpeed), checkpoints
and resume, ``report_to``, gradient checkpointing. The algorithm only supplies the loss.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from prefopt.api import Loss, LossContext, LossOutput, PreferenceBatch, StatefulLoss
from prefopt.modeling.logprobs import sequence_logps
from prefopt.training.guards import check_loss
from prefopt.training.list_data import gap_weighted, list_preference_batch
from prefopt.training.pair_gather import BatchPairGather, gather_uneven, local_sizes
from prefopt.training.reference import Reference
from prefopt.training.step_metrics import LengthWatch, PairsPerSecond, pair_metrics

if TYPE_CHECKING:
    from prefopt.config import RunConfig
    from prefopt.training.stages import Run, RunData

LOSS_STATE_FILE = "prefopt_loss_state.json"
#: The recent pairs behind ``rewards/length_correlation``, so that a resumed run logs what an
#: uninterrupted one does.
LENGTH_STATE_FILE = "prefopt_length_window.json"


class PreferenceTrainer(Trainer):
    """Trains a policy on preference pairs with a pluggable loss.

    ``make_loss(ctx)`` builds the algorithm's loss for this trainer's :class:`LossContext`
    (usually ``functools.partial(spec.make_loss, config)``); ``reference`` yields
    reference log-probs (``None`` for reference-free losses); ``extra_columns`` are the
    per-pair fields handed to the loss in ``PreferenceBatch.extras``.
    """

    # Our compute_loss returns a per-micro-batch mean: let the Trainer divide by the number of
    # gradient accumulation steps.
    loss_is_scaled_for_ga = False

    # -- what the run's stages ask of a trainer class (prefopt.training.stages.RunTrainer) --
    arguments_class: type = TrainingArguments

    @classmethod
    def adapt_arguments(cls, values: dict[str, Any], config: RunConfig) -> None:
        """Batches are pairs, not dicts of model inputs; similar lengths pack with little
        padding, so the packed layouts sample by length."""
        values["remove_unused_columns"] = False
        values["label_names"] = []
        if config.data.layout in ("auto", "packed"):
            values.setdefault("train_sampling_strategy", "group_by_length")

    @classmethod
    def load_data(
        cls, source: str, split: str, tokenizer: Any, run: Run, progress: bool
    ) -> tuple[Any, int]:
        from prefopt.training.pair_data import load_pair_dataset

        return load_pair_dataset(source, split, tokenizer, run, progress)

    @classmethod
    def for_run(
        cls,
        run: Run,
        data: RunData,
        model: Any,
        reference: Reference | None,
        callbacks: list[Any],
    ) -> PreferenceTrainer:
        from prefopt.training.pair_data import build_preference_trainer

        trainer: PreferenceTrainer = build_preference_trainer(
            cls, run, data, model, reference, callbacks
        )
        return trainer

    def __init__(
        self,
        *args: Any,
        make_loss: Callable[[LossContext], Loss],
        reference: Reference | None,
        extra_columns: Sequence[str] = (),
        list_weight: str = "none",
        **kwargs: Any,
    ) -> None:
        self._checkpoint_staging: Path | None = None  # see _save_checkpoint
        self._fsdp_dtypes_fixed = False  # see _fix_fsdp_gradient_dtypes
        super().__init__(*args, **kwargs)
        # As TRL does: with dropout the policy's log-probs are noisy and differ from the
        # reference's (scored in eval mode) even at step 0, which biases every reward.
        disable_dropout(self.model)
        self.loss_fn: Loss = make_loss(self.loss_context())
        self.reference = reference
        #: Seconds the reference spent when training began (a ``cached`` pass), for the timing.
        self.reference_seconds = 0.0
        #: Training batches, and those whose reference ran online (for the FLOPs count).
        self.training_batches = self.online_reference_batches = 0
        self.add_callback(_ReferenceEvents(self))
        self.extra_columns = tuple(extra_columns)
        #: ``lists.weight``: ``gap`` weighs each pair of a list by its score gap.
        self.list_weight = list_weight
        self._metric_sums: dict[str, dict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self._length_watch = LengthWatch()
        self._throughput = PairsPerSecond()

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        from prefopt.training.sharding import enable_fsdp_on_cpu

        enable_fsdp_on_cpu(self)  # training.fsdp shards on gloo workers too, never plain DDP

    def _shard_reference(self) -> None:
        # Under FSDP2 a frozen copy held whole by every process would cost more than the
        # sharded policy; shard it the same way (after the reference cache, which rank 0 fills
        # alone, had its chance to make it unnecessary).
        model = None if self.reference is None else self.reference.model
        if model is None or not (self.is_fsdp_enabled and self.accelerator.is_fsdp2):
            return
        from torch.distributed.fsdp import FSDPModule

        if not isinstance(model, FSDPModule):
            from prefopt.training.sharding import shard_frozen_copy

            shard_frozen_copy(model)

    def _fix_fsdp_gradient_dtypes(self, model: Any) -> None:
        # FSDP2 fixes each parameter group's gradient dtype from the parameters that require
        # gradients at its first forward. That forward is the reference pass, and peft's
        # disable_adapter() switches requires_grad off: the group then keeps bf16 gradients
        # for fp32 LoRA weights under bf16 mixed precision ("attempting to assign a gradient
        # with dtype BFloat16 to a tensor with grad_dtype Float"). unshard() initializes the
        # groups again, now with the adapter's gradients on.
        self._fsdp_dtypes_fixed = True
        if not (self.is_fsdp_enabled and self.accelerator.is_fsdp2):
            return
        from torch.distributed.fsdp import FSDPModule

        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.unshard()
                module.reshard()

    # -- loss context ----------------------------------------------------------------------
    def loss_context(self) -> LossContext:
        """The :class:`LossContext` for losses built by this trainer's accelerator."""
        accelerator = self.accelerator
        return LossContext(
            all_gather=partial(gather_uneven, accelerator),
            world_size=accelerator.num_processes,
            rank=accelerator.process_index,
            sizes=partial(local_sizes, accelerator),
        )

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = self.train_dataset if train_dataset is None else train_dataset
        # Group by the global batch, so that 1 x 8 and 2 x 4 pairs per step see the same order.
        args = self.args
        batch = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        return self._length_grouped(dataset, batch) or super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        grouped = self._length_grouped(eval_dataset, self.args.eval_batch_size)
        return grouped or super()._get_eval_sampler(eval_dataset)

    def _length_grouped(self, dataset: Any, batch: int) -> Any:
        # Pairs are no dicts with input_ids, so hand the sampler the dataset's lengths.
        lengths = getattr(dataset, "lengths", None)
        if self.args.train_sampling_strategy != "group_by_length" or lengths is None:
            return None
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochLengthGroupedSampler(batch, lengths=lengths, seed=seed)

    # -- forward ---------------------------------------------------------------------------
    def policy_logps(self, model: Any, inputs: dict[str, Any]) -> tuple[Any, Any]:
        """Per-sequence completion log-probs and lengths (chosen, then rejected) for any layout
        of :mod:`prefopt.data.collate`; the layout seam."""
        return sequence_logps(model, inputs)

    def preference_batch(self, model: Any, inputs: dict[str, Any]) -> PreferenceBatch:
        reference_logps = None
        if self.reference is not None:
            # Same autocast as the policy (a frozen copy is not wrapped by accelerate).
            with self.accelerator.autocast():
                reference_logps = self.reference.logps(model, inputs, self.policy_logps)
            ran_online = "reference_logps" not in inputs  # no cached values: a forward ran
            if ran_online and not self._fsdp_dtypes_fixed:
                self._fix_fsdp_gradient_dtypes(model)
            self.online_reference_batches += int(ran_online and model.training)
        self.training_batches += int(model.training)
        if model.training:
            self._throughput.start()
        logps, lengths = self.policy_logps(model, inputs)
        if "list_offsets" in inputs:  # lists of responses: their pairs, from this one forward
            return list_preference_batch(logps, lengths, reference_logps, inputs)
        half = logps.shape[0] // 2
        return PreferenceBatch(
            policy_chosen_logps=logps[:half],
            policy_rejected_logps=logps[half:],
            reference_chosen_logps=None if reference_logps is None else reference_logps[:half],
            reference_rejected_logps=None if reference_logps is None else reference_logps[half:],
            chosen_lengths=lengths[:half],
            rejected_lengths=lengths[half:],
            extras=dict(inputs.get("extras") or {}),
        )

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        batch = self.preference_batch(model, inputs)
        output: LossOutput = self.loss_fn(batch)
        if self.list_weight == "gap" and batch.lists is not None:
            output = gap_weighted(output, batch)
        if model.training:  # the non-finite guard: stop before backward and optimizer step
            check_loss(output.loss, self.state.global_step + 1)
        self._record(batch, output, "train" if model.training else "eval", inputs)
        if return_outputs:
            return output.loss, {}
        return output.loss

    def prediction_step(
        self,
        model: Any,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[Any, Any, Any]:
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs).detach()
            # The batch's loss as training's gradient sees it: the processes' losses averaged
            # (a loss normalised over the global batch is right only so). Every process gives
            # the same value, so the Trainer's keeping the first rows of the last, partly
            # repeated, batch keeps this value rather than one process's.
            loss = self.accelerator.gather(loss.reshape(1)).mean()  # one value each process
        return loss, None, None

    # -- metrics ---------------------------------------------------------------------------
    def _record(
        self, batch: PreferenceBatch, output: LossOutput, split: str, inputs: dict[str, Any]
    ) -> None:
        values, margins, length_gaps = pair_metrics(
            batch, output, self._pair_gather(batch, inputs, split)
        )
        if split == "train":
            self._length_watch.add(margins, length_gaps)
            self._throughput.add(int(margins.shape[0]))
        store = self._metric_sums[split]
        for name, value in values.items():
            store[name].append(float(value.item() if hasattr(value, "item") else value))

    def _pair_gather(
        self, batch: PreferenceBatch, inputs: dict[str, Any], split: str
    ) -> Callable[[Any], Any]:
        """Per-pair values of this batch from every process (:mod:`.pair_gather`)."""
        accelerator = self.accelerator
        if accelerator.num_processes == 1:
            return lambda tensor: tensor
        pair_sample = inputs.get("pair_sample")  # the list or conversation of each pair
        if pair_sample is None:  # pairs: each its own sample
            pair_sample = torch.arange(batch.size, device=accelerator.device)
            samples = batch.size
        else:
            samples = int(inputs["samples"])
        return BatchPairGather(accelerator, pair_sample, samples, evaluation=split == "eval")

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        prefix = "eval_" if split == "eval" else ""
        store = self._metric_sums[split]
        if "loss" in logs or split == "eval":
            for name, values in store.items():
                if values:
                    logs[f"{prefix}{name}"] = sum(values) / len(values)
            store.clear()
        if split == "train" and "loss" in logs:
            correlation = self._length_watch.correlation()
            if correlation is not None:
                logs["rewards/length_correlation"] = correlation
            rate = self._throughput.rate()
            if rate is not None:
                logs["pairs_per_second"] = rate
        super().log(logs, start_time)

    # -- checkpoints: whole or absent, with the loss state inside ------------------------
    def _get_output_dir(self, trial: Any) -> str:
        # While a checkpoint is saved, the Trainer's "run folder" is the staging folder, so
        # every file of checkpoint-<step> (from every process) lands there first.
        staging = getattr(self, "_checkpoint_staging", None)
        return str(staging) if staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

        from prefopt.training.checkpoints import publish_checkpoint, staging_folder

        run_dir = super()._get_output_dir(trial)
        step = self.state.global_step
        staging = staging_folder(run_dir, step)
        staged = staging / f"{PREFIX_CHECKPOINT_DIR}-{step}"
        if self.args.should_save:
            staged.mkdir(parents=True, exist_ok=True)
            write_json_state(staged / LENGTH_STATE_FILE, self._length_watch.state_dict())
            if isinstance(self.loss_fn, StatefulLoss):
                write_loss_state(str(staged), self.loss_fn.state_dict())
        self._checkpoint_staging = staging
        try:
            super()._save_checkpoint(model, trial)  # its rotation sees only the staged one
        finally:
            self._checkpoint_staging = None
        final = os.path.join(run_dir, staged.name)
        if self.state.best_model_checkpoint == str(staged):
            self.state.best_model_checkpoint = final
            if self.args.should_save:  # trainer_state.json must name the final folder
                self.state.save_to_json(str(staged / "trainer_state.json"))
        self.accelerator.wait_for_everyone()  # every process has written its files
        if self.args.should_save:
            publish_checkpoint(staging, run_dir)
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()  # nobody reads or writes it before it is in place

    def train(
        self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        self._shard_reference()
        if self.args.should_save:  # what a run killed mid-save left behind
            from prefopt.training.checkpoints import remove_stale_staging

            remove_stale_staging(self._get_output_dir(None))
        # The loss state is restored here rather than in _load_from_checkpoint, which
        # DeepSpeed runs skip.
        if resume_from_checkpoint is True:
            from transformers.trainer_utils import get_last_checkpoint

            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
        if isinstance(resume_from_checkpoint, str):
            path = os.path.join(resume_from_checkpoint, LOSS_STATE_FILE)
            if isinstance(self.loss_fn, StatefulLoss) and os.path.isfile(path):
                with open(path, encoding="utf-8") as handle:
                    self.loss_fn.load_state_dict(json.load(handle))
            window = os.path.join(resume_from_checkpoint, LENGTH_STATE_FILE)
            if os.path.isfile(window):  # absent in checkpoints of earlier versions
                with open(window, encoding="utf-8") as handle:
                    self._length_watch.load_state_dict(json.load(handle))
        return super().train(resume_from_checkpoint, *args, **kwargs)


class _ReferenceEvents(TrainerCallback):
    """Tells the reference that training began (the engine has prepared the model: a
    ``cached`` pass runs there) and that an epoch ended (a cache fill gathers its values);
    every process reaches both."""

    def __init__(self, trainer: PreferenceTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer.reference is not None:
            self.trainer.reference_seconds += self.trainer.reference.begin_training(self.trainer)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer.reference is not None:
            self.trainer.reference.end_of_epoch(self.trainer)


class EpochLengthGroupedSampler(LengthGroupedSampler):
    """``LengthGroupedSampler`` whose order is a function of ``seed`` and the epoch alone.

    transformers' sampler draws its permutation from the generator it is given, or from the
    global torch RNG, which the steps before each epoch have moved; a run resumed in a later
    epoch restores that RNG only after the data loader has drawn its order, so it saw another
    order than the uninterrupted run. Here each pass reseeds a private generator with
    ``seed + epoch`` (the Trainer calls ``set_epoch`` before every epoch, on resume too), so
    every rank, and every resume, sees the same order for the same epoch.
    """

    def __init__(self, batch_size: int, *, lengths: Sequence[int], seed: int) -> None:
        super().__init__(batch_size, lengths=list(lengths), generator=torch.Generator())
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Any:
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


def disable_dropout(model: Any) -> int:
    """Set every dropout probability in ``model`` to 0 and return how many were changed:
    ``nn.Dropout`` modules (LoRA's, residual dropout) and the float ``attention_dropout`` that
    transformers' attention layers pass to their kernels in train mode."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p != 0:
            module.p = 0.0
            changed += 1
        rate = getattr(module, "attention_dropout", None)
        if isinstance(rate, float) and rate != 0:
            module.attention_dropout = 0.0
            changed += 1
    return changed


def write_loss_state(folder: str, state: dict[str, Any]) -> None:
    """Write a loss's state next to a checkpoint, atomically."""
    write_json_state(Path(folder) / LOSS_STATE_FILE, state)


def write_json_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` as JSON at ``path``, atomically."""
    temporary = str(path) + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(state, handle)
    os.replace(temporary, path)
