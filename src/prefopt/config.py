"""Run configuration: sections, YAML loading, dotted overrides, typing and validation.

A run config has five sections::

    model:     ModelConfig          (name_or_path, dtype, attention, 4-bit, ...)
    lora:      LoraSettings | null  (null = full fine-tuning)
    data:      DataConfig           (train/eval files, length limits)
    training:  transformers.TrainingArguments keyword arguments
    algorithm: the algorithm's own config dataclass

Precedence, lowest first: built-in defaults < the algorithm's ``defaults`` < YAML file <
CLI flags < ``--set key.path=value``. Every value passes through
:func:`prefopt.config_values.coerce`, so that ``--set training.learning_rate=1e-5`` and YAML's
``1e-5`` (a string to PyYAML) are floats.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prefopt.config_checks import check_values
from prefopt.config_values import coerce, parse_scalar
from prefopt.errors import ConfigError, UsageError
from prefopt.training_arguments import (
    training_argument_names,
    training_argument_table,
    training_argument_types,
    type_from_text,
)

#: ``data.max_prompt_length`` when no layer sets it (half of ``max_length`` if smaller).
DEFAULT_MAX_PROMPT = 512
SECTIONS = ("model", "lora", "data", "training", "algorithm", "reference")


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "algorithm_name": self.algorithm_name,
            "model": dataclasses.asdict(self.model),
            "lora": None if self.lora is None else dataclasses.asdict(self.lora),
            "data": dataclasses.asdict(self.data),
            "reference": dataclasses.asdict(self.reference),
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


def _unknown_key(key: str, known: list[str], where: str, name: str | None = None) -> ConfigError:
    close = difflib.get_close_matches(name or key.split(".")[-1], known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{key}' in {where}.{hint}")


# -- resolution ----------------------------------------------------------------------------
class ConfigBuilder:
    """Applies layers of settings to a nested dict, checking keys and types as it goes."""

    def __init__(self, algorithm_name: str, algorithm_config_class: type) -> None:
        self.algorithm_name = algorithm_name
        self.algorithm_class = algorithm_config_class
        self._types: dict[str, dict[str, Any]] = {
            name: field_types(cls) for name, cls in _SECTION_CLASSES.items()
        }
        self._types["algorithm"] = field_types(algorithm_config_class)
        self._training_types: dict[str, Any] | None = None
        # training.* values are checked by name when set and coerced to their types in build(),
        # so that every unknown key is found before transformers is imported.
        self._pending_training: dict[str, tuple[Any, str]] = {}
        self._given: set[str] = set()  # dotted keys some layer set
        self.values: dict[str, Any] = {
            "model": dataclasses.asdict(ModelConfig()),
            "lora": dataclasses.asdict(LoraSettings()),
            "data": dataclasses.asdict(DataConfig()),
            "reference": dataclasses.asdict(ReferenceConfig()),
            "training": copy.deepcopy(TRAINING_DEFAULTS),
            "algorithm": dataclasses.asdict(algorithm_config_class()),
        }

    def _types_of(self, section: str) -> dict[str, Any]:
        if section == "training":
            if self._training_types is None:
                self._training_types = training_argument_types()
            return self._training_types
        return self._types[section]

    def set(self, key: str, value: Any, where: str) -> None:
        """Set one dotted key (``section.name``) from source ``where``."""
        section, _, name = key.partition(".")
        if section not in SECTIONS:
            raise _unknown_key(key, list(SECTIONS), where, name=section)
        self._given.add(key)
        if not name:
            self.set_section(section, value, where)
            return
        if section == "lora" and self.values["lora"] is None:
            self.values["lora"] = dataclasses.asdict(LoraSettings())
        if section == "training" and self._training_types is None:
            names = training_argument_names()
            if name not in names:
                raise _unknown_key(key, sorted(names), where)
            self.values["training"][name] = value
            self._pending_training[name] = (value, key)
            return
        types_ = self._types_of(section)
        if name not in types_:
            raise _unknown_key(key, list(types_), where)
        self.values[section][name] = coerce(value, types_[name], key)

    def set_section(self, section: str, value: Any, where: str) -> None:
        if section == "lora" and value is None:
            self.values["lora"] = None
            return
        if value is None:  # an empty section (`algorithm:` with nothing under it): no overrides
            return
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: section '{section}' must be a mapping, got {value!r}")
        for name, item in value.items():
            self.set(f"{section}.{name}", item, where)

    def apply_mapping(self, mapping: Mapping[str, Any], where: str) -> None:
        for section, value in mapping.items():
            if section == "algorithm_name":
                if value != self.algorithm_name:
                    raise ConfigError(
                        f"{where}: config is for algorithm '{value}', not '{self.algorithm_name}'"
                    )
                continue
            if section not in SECTIONS:
                raise _unknown_key(str(section), list(SECTIONS), where)
            self.set_section(section, value, where)

    def apply_dotted(self, items: Mapping[str, Any], where: str) -> None:
        for key, value in items.items():
            self.set(key, value, where)

    def apply_set_options(self, assignments: list[str]) -> None:
        for assignment in assignments:
            key, sep, text = assignment.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--set expects key.path=value, got '{assignment}'")
            self.set(key.strip(), parse_scalar(text), "--set")

    def _training_type(self, name: str, table: Mapping[str, str | None]) -> Any:
        """The type of ``training.<name>``: from the cached table where it is a plain one,
        else from ``TrainingArguments`` itself (imports transformers)."""
        text = table.get(name)
        if text is not None and self._training_types is None:
            try:
                return type_from_text(text)
            except KeyError:  # a table this version never wrote
                pass
        return self._types_of("training")[name]

    def build(self) -> RunConfig:
        values = self.values
        data = values["data"]
        if "data.max_prompt_length" not in self._given and isinstance(data["max_length"], int):
            # the default prompt budget leaves room for a completion in a short max_length
            data["max_prompt_length"] = min(DEFAULT_MAX_PROMPT, max(1, data["max_length"] // 2))
        check_values(values)  # the numbers as given, before typing may import transformers
        if self._pending_training:
            table = training_argument_table() if self._training_types is None else {}
            for name, (value, key) in self._pending_training.items():
                values["training"][name] = coerce(value, self._training_type(name, table), key)
            self._pending_training.clear()
            check_values(values)  # values that were text until typed
        try:
            algorithm = self.algorithm_class(**values["algorithm"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"algorithm '{self.algorithm_name}': {exc}") from None
        lora = None if values["lora"] is None else LoraSettings(**values["lora"])
        # Unknown training keys were rejected in set(); check defaults too when asked to build.
        return RunConfig(
            algorithm_name=self.algorithm_name,
            model=ModelConfig(**values["model"]),
            lora=lora,
            data=DataConfig(**values["data"]),
            training=dict(values["training"]),
            algorithm=algorithm,
            reference=ReferenceConfig(**values["reference"]),
        )


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return loaded


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


def resolve_run_config(
    spec: Any,
    config_file: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    sets: list[str] | tuple[str, ...] = (),
) -> RunConfig:
    """Resolve a run config for algorithm ``spec`` from all layers, lowest first.

    ``flags`` maps dotted keys to values given on the command line (``None`` = not given).
    Fills in the default run name (the algorithm's, else ``<algorithm>_<model short name>``)
    and the default output folder ``runs/<run name>``.
    """
    builder = ConfigBuilder(spec.name, spec.config_class)
    builder.apply_dotted(dict(spec.defaults), f"defaults of algorithm '{spec.name}'")
    if config_file is not None:
        builder.apply_mapping(load_yaml(config_file), str(config_file))
    if flags:
        builder.apply_dotted({k: v for k, v in flags.items() if v is not None}, "command line")
    builder.apply_set_options(list(sets))
    config = builder.build()
    from prefopt.precision_rules import explicit_precision

    explicit_precision(config.model.precision, config.training)  # contradictions, before torch
    if config.model.gguf_file:  # one string for the file: what every later load reads back
        location = (config.model.name_or_path or "").rstrip("/")
        gguf_file = config.model.gguf_file
        inside = location and not Path(gguf_file).is_absolute()
        config.model.name_or_path = f"{location}/{gguf_file}" if inside else gguf_file
        config.model.gguf_file = None
    # --model smollm2: a model installed as a package file (prefopt.local_models)
    from prefopt.local_models import resolve_model_name

    config.model.name_or_path = local_path_or_id(resolve_model_name(config.model.name_or_path))
    config.model.tokenizer = local_path_or_id(resolve_model_name(config.model.tokenizer))
    short = model_short_name(config.model.name_or_path)
    if not config.training.get("run_name"):
        config.training["run_name"] = spec.run_name(config.algorithm, short) or (
            f"{spec.name}_{short}"
        )
    if not config.training.get("output_dir"):
        config.training["output_dir"] = str(Path("runs") / config.training["run_name"])
    return config
