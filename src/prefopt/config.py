"""Run configuration: sections, YAML loading, dotted overrides, typing and validation.

A run config has these sections::

    model:     ModelConfig          (name_or_path, dtype, attention, 4-bit, ...)
    lora:      LoraSettings | null  (null = full fine-tuning)
    data:      DataConfig           (train/eval files, length limits)
    training:  transformers.TrainingArguments keyword arguments
    algorithm: the algorithm's own config dataclass
    reference: ReferenceConfig      (online, cached or auto reference log-probs)
    health:    HealthConfig         (thresholds of the health checks, or off)
    lists:     ListsConfig          (the pairs a pair loss takes from lists of responses)

Precedence, lowest first: built-in defaults < the algorithm's ``defaults`` < YAML file <
CLI flags < ``--set key.path=value``. Every value passes through
:func:`prefopt.config_values.coerce`, so that ``--set training.learning_rate=1e-5`` and YAML's
``1e-5`` (a string to PyYAML) are floats.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: ``data.max_prompt_length`` when no layer sets it (half of ``max_length`` if smaller).
DEFAULT_MAX_PROMPT = 512


def default_prompt_length(max_length: int) -> int:
    """The prompt budget when only ``max_length`` is given: 512, or half of ``max_length``
    when that is smaller (room is left for a completion)."""
    return min(DEFAULT_MAX_PROMPT, max(1, max_length // 2))


SECTIONS = ("model", "lora", "data", "training", "algorithm", "reference", "health", "lists")


@dataclass
class ModelConfig:
    name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id or local folder of the model to train."}
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "Weights dtype: auto, float32, bfloat16 or float16."},
    )
    attn_implementation: str | None = field(
        default="auto",
        metadata={
            "help": "Attention implementation: auto (the best the model supports: sdpa, "
            "else eager), sdpa, eager, flash_attention_2, flex_attention."
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run model code from the hub (off unless asked)."}
    )
    revision: str | None = field(default=None, metadata={"help": "Hub revision."})
    load_in_4bit: bool = field(
        default=False, metadata={"help": "QLoRA: load the base in 4-bit NF4 (bitsandbytes)."}
    )
    bnb_4bit_compute_dtype: str = field(
        default="bfloat16", metadata={"help": "Compute dtype of 4-bit layers."}
    )
    tokenizer: str | None = field(
        default=None, metadata={"help": "Tokenizer path if not the model's."}
    )
    gguf_file: str | None = field(
        default=None,
        metadata={
            "help": "A GGUF file inside the name_or_path folder or hub repo (same as "
            "--model folder/file.gguf; the resolved config records that one path)."
        },
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "Compute precision: auto (an explicit training.bf16/fp16, true or false, "
            "decides; if neither is set, bf16 autocast where the hardware does bf16 fast: "
            "CUDA with bf16, CPUs with AMX-BF16), bf16, fp16 or fp32."
        },
    )


@dataclass
class LoraSettings:
    r: int = field(default=16, metadata={"help": "LoRA rank."})
    alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (alpha/r)."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    target_modules: list[str] | str = field(
        default="all-linear",
        metadata={"help": "Module names to adapt, or 'all-linear'."},
    )


@dataclass
class DataConfig:
    train: str | None = field(
        default=None, metadata={"help": "Training pairs: a JSONL/JSON/Parquet file or hub id."}
    )
    eval: str | None = field(default=None, metadata={"help": "Evaluation pairs (optional)."})
    train_split: str = field(default="train", metadata={"help": "Split of a hub dataset."})
    eval_split: str = field(default="test", metadata={"help": "Eval split of a hub dataset."})
    max_length: int = field(
        default=1024, metadata={"help": "Max tokens of prompt + completion per sequence."}
    )
    max_prompt_length: int = field(
        default=512,
        metadata={
            "help": "Max prompt tokens (the end of the prompt is kept); default 512, or half "
            "of max_length when that is smaller."
        },
    )
    layout: str = field(
        default="auto",
        metadata={
            "help": "Batch layout: padded (2 rows a pair), prefix (one row a pair, prompt run "
            "once), packed (prefix rows packed up to data.pack_tokens) or auto (packed when "
            "the model takes custom attention masks, else padded)."
        },
    )
    pack_tokens: int = field(
        default=0,
        metadata={"help": "Token budget of a packed row (0: the batch's longest pair)."},
    )
    prep_cache: bool = field(
        default=True,
        metadata={"help": "Cache tokenized data under the prefopt cache dir, keyed by content."},
    )


@dataclass
class ReferenceConfig:
    mode: str = field(
        default="auto",
        metadata={
            "help": "Reference log-probs: online (recomputed every step), cached (computed "
            "once, stored content-addressed and reused across epochs, runs and sweeps) or "
            "auto (cached when the run covers the data at least once or the entry exists)."
        },
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Cache folder (default: $PREFOPT_CACHE_DIR or the user cache dir)."},
    )


@dataclass
class ListsConfig:
    pairs: str = field(
        default="best-worst",
        metadata={
            "help": "Which pairs a pair loss trains on when the data holds lists of ranked "
            "responses: best-worst (one a list), best-rest (the best against each lower one) "
            "or all (every two responses with different scores)."
        },
    )
    weight: str = field(
        default="none",
        metadata={
            "help": "none, or gap: weigh each pair of a list by its score gap (rank difference "
            "for a ranking) in the mean over pairs."
        },
    )


@dataclass
class HealthConfig:
    """Thresholds of the health checks (:mod:`prefopt.training.health`); see
    docs/configuration.md#health for what each rule looks at."""

    enabled: bool = field(
        default=True, metadata={"help": "Check the run for the common DPO failures as it trains."}
    )
    displacement_nats_per_token: float = field(
        default=0.25,
        metadata={
            "help": "Likelihood displacement: chosen log-probs this many nats per token below "
            "the reference while the margin rises."
        },
    )
    accuracy_pinned_logs: int = field(
        default=3,
        metadata={
            "help": "Reward accuracy 1.0 at this many logged steps in a row, starting in the "
            "first half of the run, with margins still growing."
        },
    )
    flat_loss_steps: int = field(
        default=20,
        metadata={"help": "Steps after which a loss that has not moved means nothing trains."},
    )
    flat_loss_tolerance: float = field(
        default=0.001,
        metadata={
            "help": "How far the loss (from its first value) and the reward margin (from 0) "
            "may move and still be flat."
        },
    )
    length_correlation: float = field(
        default=0.6,
        metadata={
            "help": "Length exploitation: correlation of the per-pair reward margin with the "
            "chosen-minus-rejected length (over recent pairs) at or above this."
        },
    )
    beta_clamp_steps: int = field(
        default=20,
        metadata={"help": "An adaptive β at its clamp for this many steps in a row."},
    )
    grad_spike_factor: float = field(
        default=10.0,
        metadata={"help": "A gradient norm this many times the median of the earlier ones."},
    )
    eval_accuracy_gap: float = field(
        default=0.25,
        metadata={"help": "Train reward accuracy this far above eval reward accuracy."},
    )


#: ``training:`` defaults that differ from ``TrainingArguments``' own.
TRAINING_DEFAULTS: dict[str, Any] = {
    "output_dir": None,
    "run_name": None,
    "learning_rate": 5e-5,
    "per_device_train_batch_size": 4,
    "per_device_eval_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "num_train_epochs": 1.0,
    "max_steps": -1,
    "lr_scheduler_type": "linear",
    "warmup_steps": 0,
    "logging_steps": 10,
    "save_steps": 500,
    "save_total_limit": 2,
    "seed": 42,
    "report_to": "none",
}

_SECTION_CLASSES: dict[str, type] = {
    "model": ModelConfig,
    "lora": LoraSettings,
    "data": DataConfig,
    "reference": ReferenceConfig,
    "health": HealthConfig,
    "lists": ListsConfig,
}


@dataclass
class RunConfig:
    """A fully resolved run configuration."""

    algorithm_name: str
    model: ModelConfig
    lora: LoraSettings | None
    data: DataConfig
    training: dict[str, Any]
    algorithm: Any
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    lists: ListsConfig = field(default_factory=ListsConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "algorithm_name": self.algorithm_name,
            "model": dataclasses.asdict(self.model),
            "lora": None if self.lora is None else dataclasses.asdict(self.lora),
            "data": dataclasses.asdict(self.data),
            "reference": dataclasses.asdict(self.reference),
            "health": dataclasses.asdict(self.health),
            "lists": dataclasses.asdict(self.lists),
            "training": dict(self.training),
            "algorithm": dataclasses.asdict(self.algorithm),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def output_dir(self) -> Path:
        return Path(self.training["output_dir"])


# -- field tables --------------------------------------------------------------------------
def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def model_short_name(name_or_path: str | None) -> str:
    """``Qwen/Qwen2.5-0.5B-Instruct`` -> ``Qwen2.5-0.5B-Instruct``; local folders by basename."""
    if not name_or_path:
        return "model"
    name = Path(str(name_or_path).rstrip("/")).name or "model"
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


def local_path_or_id(name_or_path: str | None) -> str | None:
    """A local model folder as an absolute path (so the saved config works from any working
    directory); a hub id (nothing at that path) unchanged."""
    if not name_or_path or not Path(name_or_path).exists():
        return name_or_path
    return os.path.abspath(name_or_path)
