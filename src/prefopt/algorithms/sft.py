"""SFT: supervised fine-tuning on the completions, typically before DPO.

Loss: the mean negative log-likelihood of the completion tokens (prompt tokens masked)::

    loss = −Σ_pairs Σ_{t ∈ completion} log π(y_t | x, y_<t) / Σ_pairs |completion|

Data: prompt/completion records (``prompt`` + ``completion``), preference records, of
which ``prompt`` + ``chosen`` are used, or single conversations (``messages``: the final
assistant reply is the completion, the messages before it the prompt). Strings or chat message
lists (TRL's formats);
conversational records go through the tokenizer's chat template, exactly as prefopt tokenizes
them for DPO, so SFT trains on the very token sequences a following DPO run scores.
``completion_only_loss=False`` trains on the prompt tokens too.

Training runs through :class:`PrefoptSFTTrainer`, a subclass of TRL's ``SFTTrainer``
(https://huggingface.co/docs/trl/sft_trainer), fed with prefopt's tokenization; LoRA comes from
the run config's ``lora`` section. The output folder holds what every prefopt run writes
(adapter or model, tokenizer, ``prefopt_config.yaml``, ``metrics.jsonl``, checkpoints) and
is accepted as the ``--model`` of a following run (``prefopt train dpo --model runs/SFT_x``):
an adapter folder is merged into its base on load.

Typical settings: learning rate 1e-5–2e-4 (LoRA tolerates the upper end), 1–3 epochs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import prefopt
from prefopt.api import AlgorithmSpec, LossContext, LossOutput, PreferenceBatch
from prefopt.errors import DataError, UsageError

if TYPE_CHECKING:
    from prefopt.training.stages import Run, RunData

log = logging.getLogger("prefopt")


@dataclass
class SFTSettings:
    completion_only_loss: bool = field(
        default=True,
        metadata={
            "help": "Loss on completion tokens only; --no-completion-only trains on the "
            "prompt too.",
            "flag": "completion-only",  # short enough for an 80-column --help
        },
    )


class SFTLoss:
    """Token-mean NLL of the chosen completions on a :class:`PreferenceBatch`.

    The same quantity TRL's SFTTrainer minimises, for evaluating an SFT objective on
    preference data: ``−Σ log π(chosen) / Σ |chosen|``; ``per_pair`` is each pair's
    per-token NLL.
    """

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        import torch

        logps, lengths = (
            batch.policy_chosen_logps,
            batch.chosen_lengths.to(batch.policy_chosen_logps.dtype),
        )
        per_pair = -logps / lengths.clamp_min(1)
        return LossOutput(
            loss=-logps.sum() / lengths.sum().clamp_min(1),
            per_pair=per_pair,
            weights=torch.ones_like(per_pair),
            metrics={},
        )


def make_loss(config: SFTSettings, ctx: LossContext | None = None) -> SFTLoss:
    return SFTLoss()


def run_name(config: SFTSettings, model_short: str) -> str:
    return f"SFT_{model_short}"


# -- data ----------------------------------------------------------------------------------
def as_pair_record(row: Any, source: str, line: int) -> dict[str, Any]:
    """An SFT record as a pair record whose chosen and rejected are both the completion, so
    that prefopt's record validation and tokenization apply unchanged."""
    from prefopt.data.records import validate_record

    if not isinstance(row, dict):
        raise DataError(source, line, None, f"expected a JSON object, got {type(row).__name__}")
    if "messages" in row and "prompt" not in row:
        return conversation_as_pair_record(row["messages"], source, line)
    completion_field = "completion" if "completion" in row else "chosen"
    if "prompt" not in row:
        raise DataError(source, line, "prompt", "missing field")
    if completion_field not in row:
        raise DataError(
            source,
            line,
            "completion",
            "missing field (SFT reads prompt + completion, or prompt + chosen of a pair)",
        )
    completion = row[completion_field]
    pair = {"prompt": row["prompt"], "chosen": completion, "rejected": completion}
    try:
        validate_record(pair, source, line)
    except DataError as exc:
        where = exc.field
        if where is not None:
            where = where.replace("chosen", completion_field).replace("rejected", completion_field)
        problem = exc.problem.replace("chosen and rejected", completion_field)
        raise DataError(source, line, where, problem) from None
    return pair


def conversation_as_pair_record(messages: Any, source: str, line: int) -> dict[str, Any]:
    """A single conversation (``{"messages": [...]}``, TRL's language-modeling format) as a
    pair record: the messages before the final assistant reply are the prompt, the reply is
    the completion (earlier assistant turns are context, not trained on)."""
    from prefopt.data.records import validate_record

    if not isinstance(messages, list) or not messages:
        raise DataError(source, line, "messages", "expected a non-empty list of messages")
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        raise DataError(
            source,
            line,
            f"messages[{len(messages) - 1}]",
            "the last message must be the assistant's reply",
        )
    if len(messages) < 2:
        raise DataError(
            source, line, "messages", "needs at least one message before the assistant's reply"
        )
    pair = {"prompt": messages[:-1], "chosen": [last], "rejected": [last]}
    try:
        validate_record(pair, source, line)
    except DataError as exc:
        where = exc.field or "messages"
        if where.startswith("prompt"):  # prompt[i] is messages[i]
            where = "messages" + where[len("prompt") :]
        elif where.startswith(("chosen", "rejected")):  # chosen[0] is the last message
            rest = where.split("]", 1)[1] if "]" in where else ""
            where = f"messages[{len(messages) - 1}]{rest}"
        raise DataError(source, line, where, exc.problem) from None
    return pair


def load_examples(
    source: str, split: str, tokenizer: Any, config: Any
) -> tuple[list[dict[str, list[int]]], int]:
    """``input_ids``/``labels`` examples of one data source, and how many were dropped."""
    from prefopt.data.io import load_rows
    from prefopt.data.tokenize import TokenizationSettings, tokenize_pairs

    rows = [(line, as_pair_record(row, source, line)) for line, row in load_rows(source, split)]
    if not rows:
        raise UsageError(f"{source}: no records found")
    settings = TokenizationSettings(config.data.max_length, config.data.max_prompt_length)
    pairs, report = tokenize_pairs(rows, tokenizer, settings, (), source)
    if report.dropped:
        log.warning(
            "%s: dropped %d of %d records left without completion tokens after truncation",
            source,
            report.dropped,
            len(rows),
        )
    if not pairs:
        raise UsageError(f"{source}: every record was dropped by truncation; raise data.max_length")
    only_completion = config.algorithm.completion_only_loss
    examples = []
    for pair in pairs:
        ids = pair.prompt_ids + pair.chosen_ids
        masked = [-100] * len(pair.prompt_ids) if only_completion else list(pair.prompt_ids)
        examples.append({"input_ids": ids, "labels": masked + list(pair.chosen_ids)})
    return examples, report.dropped


# -- training ------------------------------------------------------------------------------
def adapt_sft_arguments(values: dict[str, Any]) -> None:
    """SFT's entries of TRL's ``SFTConfig``: keys the user did not set keep
    ``TrainingArguments``' meaning (SFTConfig turns gradient checkpointing on by default;
    prefopt leaves it off unless asked), and data preparation is skipped: the examples arrive
    tokenized, truncated and labelled."""
    values.setdefault("gradient_checkpointing", False)
    values["max_length"] = None
    values["dataset_kwargs"] = {"skip_prepare_dataset": True}


def load_sft_dataset(
    source: str, split: str, tokenizer: Any, run: Run, progress: bool
) -> tuple[Any, int]:
    """One source's examples as the ``datasets.Dataset`` SFTTrainer takes as it is."""
    examples, dropped = load_examples(source, split, tokenizer, run.config)
    return examples_dataset(examples), dropped


def _build_trainer_class() -> type:
    from trl import SFTConfig, SFTTrainer

    from prefopt.training.guards import check_loss

    class PrefoptSFTTrainer(SFTTrainer):
        """TRL's SFTTrainer fed with prefopt's tokenized examples (``input_ids`` and
        ``labels``, −100 where no loss is taken), run through prefopt's stages
        (:class:`prefopt.training.stages.RunTrainer`); a non-finite loss stops the run before
        its backward pass, as in every prefopt run."""

        arguments_class = SFTConfig

        @classmethod
        def adapt_arguments(cls, values: dict[str, Any], config: Any) -> None:
            adapt_sft_arguments(values)

        @classmethod
        def load_data(
            cls, source: str, split: str, tokenizer: Any, run: Run, progress: bool
        ) -> tuple[Any, int]:
            return load_sft_dataset(source, split, tokenizer, run, progress)

        @classmethod
        def for_run(
            cls, run: Run, data: RunData, model: Any, reference: Any, callbacks: list[Any]
        ) -> Any:
            return cls(
                model=model,
                args=run.args,
                processing_class=data.tokenizer,
                train_dataset=data.train,
                eval_dataset=data.evaluation,
                callbacks=callbacks,
            )

        def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            result = super().compute_loss(model, inputs, *args, **kwargs)
            if model.training:
                loss = result[0] if isinstance(result, tuple) else result
                check_loss(loss, self.state.global_step + 1)
            return result

    PrefoptSFTTrainer.__module__ = __name__
    return PrefoptSFTTrainer


_LAZY: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    """``PrefoptSFTTrainer`` is built on first access, so importing this module (to list
    plugins) does not import TRL."""
    if name == "PrefoptSFTTrainer":
        if name not in _LAZY:
            _LAZY[name] = _build_trainer_class()
        return _LAZY[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def examples_dataset(examples: list[dict[str, list[int]]]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "input_ids": [e["input_ids"] for e in examples],
            "labels": [e["labels"] for e in examples],
        }
    )


SPEC = AlgorithmSpec(
    name="sft",
    summary="Supervised fine-tuning on completions (prompt/completion, prompt + chosen, messages).",
    config_class=SFTSettings,
    make_loss=make_loss,
    trainer_class="prefopt.algorithms.sft:PrefoptSFTTrainer",
    needs_reference=False,
    run_name=run_name,
)


@prefopt.hookimpl
def prefopt_algorithms() -> list[AlgorithmSpec]:
    return [SPEC]
