"""Resolving a run config from its layers: built-in defaults < the algorithm's ``defaults`` <
YAML file (or a mapping, from Python) < CLI flags < ``--set key.path=value``.

:class:`ConfigBuilder` applies each layer to a nested dict, checking every key and typing every
value as it goes (:func:`prefopt.config_values.coerce`), so that a mistyped key or an
impossible value is refused with its source named before anything heavy is imported;
:func:`resolve_run_config` builds the :class:`~prefopt.config.RunConfig` of one run.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from prefopt.config import (
    _SECTION_CLASSES,
    SECTIONS,
    TRAINING_DEFAULTS,
    DataConfig,
    HealthConfig,
    ListsConfig,
    LoraSettings,
    ModelConfig,
    ReferenceConfig,
    RunConfig,
    default_prompt_length,
    field_types,
    local_path_or_id,
    model_short_name,
)
from prefopt.config_checks import check_values
from prefopt.config_values import coerce, parse_scalar
from prefopt.errors import ConfigError, UsageError
from prefopt.training_arguments import (
    training_argument_names,
    training_argument_table,
    training_argument_types,
    type_from_text,
)


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
            "health": dataclasses.asdict(HealthConfig()),
            "lists": dataclasses.asdict(ListsConfig()),
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
            data["max_prompt_length"] = default_prompt_length(data["max_length"])
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
            health=HealthConfig(**values["health"]),
            lists=ListsConfig(**values["lists"]),
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


def resolve_run_config(
    spec: Any,
    config_file: str | Path | Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
    sets: list[str] | tuple[str, ...] = (),
    overrides: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Resolve a run config for algorithm ``spec`` from all layers, lowest first.

    ``config_file`` is a YAML file or a mapping of its sections (the Python API's ``config``);
    ``flags`` maps dotted keys to values given on the command line (``None`` = not given);
    ``overrides`` maps dotted keys (or a section name) to values given from Python, where
    ``None`` is a value (``lora: None`` is full fine-tuning).
    Fills in the default run name (the algorithm's, else ``<algorithm>_<model short name>``)
    and the default output folder ``runs/<run name>``.
    """
    builder = ConfigBuilder(spec.name, spec.config_class)
    builder.apply_dotted(dict(spec.defaults), f"defaults of algorithm '{spec.name}'")
    if isinstance(config_file, Mapping):
        builder.apply_mapping(config_file, "config")
    elif config_file is not None:
        builder.apply_mapping(load_yaml(config_file), str(config_file))
    if flags:
        builder.apply_dotted({k: v for k, v in flags.items() if v is not None}, "command line")
    if overrides:  # the Python API's keyword arguments: None is a value there (lora=None)
        builder.apply_dotted(overrides, "keyword arguments")
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
