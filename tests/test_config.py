"""Run config resolution: precedence, typing of values, unknown keys."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from prefopt.api import AlgorithmSpec
from prefopt.config_layers import resolve_run_config
from prefopt.config_values import coerce
from prefopt.errors import ConfigError, UsageError


@dataclass
class ToyConfig:
    beta: float = field(default=0.1, metadata={"help": "β"})
    steps: int = 3
    flag: bool = False
    names: list[str] = field(default_factory=lambda: ["a"])


SPEC = AlgorithmSpec(
    "toy",
    "A toy algorithm.",
    ToyConfig,
    lambda config, ctx=None: None,
    defaults={"lora.r": 4, "training.learning_rate": 1e-3, "algorithm.beta": 0.2},
    run_name=lambda config, short: f"Toy_{short}_b{config.beta}",
)


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_precedence_defaults_algorithm_yaml_flags_set(tmp_path: Path) -> None:
    config_file = _yaml(
        tmp_path,
        "model:\n  name_or_path: org/base\nlora:\n  r: 8\ntraining:\n"
        "  learning_rate: 2e-5\n  logging_steps: 5\nalgorithm:\n  beta: 0.3\n  steps: 7\n",
    )
    config = resolve_run_config(
        SPEC,
        config_file,
        flags={"algorithm.beta": 0.4, "training.max_steps": 9, "model.dtype": None},
        sets=["algorithm.beta=0.5", "training.logging_steps=2", "algorithm.names=[x, y]"],
    )
    assert config.lora is not None and config.lora.r == 8  # YAML over algorithm default
    assert config.training["learning_rate"] == 2e-5  # YAML's "2e-5" string became a float
    assert isinstance(config.training["learning_rate"], float)
    assert config.training["max_steps"] == 9  # flag
    assert config.training["logging_steps"] == 2  # --set over YAML
    assert config.algorithm.beta == 0.5  # --set over flag over YAML over default
    assert config.algorithm.steps == 7
    assert config.algorithm.names == ["x", "y"]
    assert config.model.dtype == "auto"  # a flag left at None does not override
    assert config.training["run_name"] == "Toy_base_b0.5"
    assert config.training["output_dir"] == str(Path("runs") / "Toy_base_b0.5")


def test_algorithm_defaults_apply_without_yaml() -> None:
    config = resolve_run_config(SPEC)
    assert config.lora is not None and config.lora.r == 4
    assert config.training["learning_rate"] == 1e-3
    assert config.algorithm.beta == 0.2


def test_lora_null_means_full_finetuning(tmp_path: Path) -> None:
    config = resolve_run_config(SPEC, _yaml(tmp_path, "lora: null\n"))
    assert config.lora is None
    assert config.to_dict()["lora"] is None


def test_set_types_values_by_field() -> None:
    config = resolve_run_config(
        SPEC, sets=["algorithm.flag=true", "algorithm.steps=12", "training.bf16=false"]
    )
    assert config.algorithm.flag is True
    assert config.algorithm.steps == 12
    assert config.training["bf16"] is False


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["training.learnin_rate=1"], "unknown config key 'training.learnin_rate'"),
        (["algorithm.bta=1"], "Did you mean 'beta'?"),
        (["modle.dtype=float32"], "Did you mean 'model'?"),
        (["algorithm.steps=many"], "algorithm.steps: expected an integer"),
        (["algorithm.flag=maybe"], "expected true or false"),
        (["noequals"], "--set expects key.path=value"),
    ],
)
def test_bad_settings_are_named(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        resolve_run_config(SPEC, sets=sets)


def test_unknown_yaml_key_is_named_with_file(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "training:\n  per_device_batch_size: 4\n")
    with pytest.raises(ConfigError) as info:
        resolve_run_config(SPEC, path)
    assert "training.per_device_batch_size" in str(info.value)
    assert str(path) in str(info.value)
    assert "per_device_train_batch_size" in str(info.value) or "per_device_eval_batch_size" in str(
        info.value
    )


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "model:\n  name_or_path: [unclosed\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:\d+: invalid YAML"):
        resolve_run_config(SPEC, path)


def test_missing_config_file() -> None:
    with pytest.raises(UsageError, match="config file not found"):
        resolve_run_config(SPEC, Path("does/not/exist.yaml"))


def test_coerce_union_prefers_specific_types() -> None:
    assert coerce("3", int | float, "k") == 3
    assert coerce("0.5", int | float, "k") == 0.5
    assert coerce("null", int | None, "k") is None
    assert coerce("none", str | None, "k") == "none"
    assert coerce("a,b", list[str], "k") == ["a", "b"]
    with pytest.raises(ConfigError):
        coerce("x", float, "k")


def test_saved_config_reads_back_as_written(tmp_path: Path) -> None:
    first = resolve_run_config(
        SPEC, sets=["training.report_to=none", "lora.target_modules=all-linear"]
    )
    saved = tmp_path / "prefopt_config.yaml"
    saved.write_text(first.to_yaml())
    again = resolve_run_config(SPEC, saved)
    assert again.lora is not None and again.lora.target_modules == "all-linear"
    assert again.training["report_to"] == "none"
    assert again.to_dict() == first.to_dict()


def test_list_values_from_the_command_line() -> None:
    config = resolve_run_config(SPEC, sets=["lora.target_modules=[q_proj, v_proj]"])
    assert config.lora is not None and config.lora.target_modules == ["q_proj", "v_proj"]


def test_an_empty_section_means_no_overrides(tmp_path: Path) -> None:
    config = resolve_run_config(SPEC, _yaml(tmp_path, "algorithm:\ntraining:\n"))
    assert config.algorithm == resolve_run_config(SPEC).algorithm
    assert config.training == resolve_run_config(SPEC).training


def test_a_local_model_path_resolves_to_absolute_and_a_hub_id_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my-model").mkdir()
    monkeypatch.chdir(tmp_path)
    config = resolve_run_config(SPEC, sets=["model.name_or_path=my-model"])
    assert config.model.name_or_path == str(tmp_path / "my-model")
    config = resolve_run_config(SPEC, sets=["model.name_or_path=org/some-model"])
    assert config.model.name_or_path == "org/some-model"


def test_unknown_training_key_is_found_before_transformers_is_imported(tmp_path: Path) -> None:
    """The names of TrainingArguments are cached per transformers version: a mistyped key
    costs no transformers import (seconds) once the cache exists."""

    script = (
        "import sys\n"
        "from prefopt.config_layers import resolve_run_config\n"
        "from prefopt.errors import ConfigError\n"
        "from prefopt.registry import get_algorithm\n"
        "try:\n"
        "    resolve_run_config(get_algorithm('dpo'), sets=['training.max_step=3'])\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
        "print('transformers' in sys.modules)\n"
    )
    runs = [output.splitlines() for output in _twice_in_fresh_interpreters(script, tmp_path)]
    expected = "unknown config key 'training.max_step' in --set. Did you mean 'max_steps'?"
    assert runs[0] == [expected, "True"]  # the first run builds the name cache
    assert runs[1] == [expected, "False"]
    assert list((tmp_path / "config").glob("training-arguments-*.json"))


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["training.max_steps=0"],
            "training.max_steps: expected a positive number of steps, or -1 for no limit "
            "(num_train_epochs decides), got 0",
        ),
        (
            ["training.max_steps=-5"],
            "training.max_steps: expected a positive number of steps, or -1 for no limit "
            "(num_train_epochs decides), got -5",
        ),
        (
            ["training.per_device_train_batch_size=-4"],
            "training.per_device_train_batch_size: expected a positive integer, got -4",
        ),
        (
            ["training.per_device_eval_batch_size=0"],
            "training.per_device_eval_batch_size: expected a positive integer, got 0",
        ),
        (
            ["training.gradient_accumulation_steps='0'"],  # text until typed: checked after
            "training.gradient_accumulation_steps: expected a positive integer, got 0",
        ),
        (["lora.r=0"], "lora.r: expected a positive integer (the LoRA rank), got 0"),
        (["data.max_length=0"], "data.max_length: expected a positive number of tokens, got 0"),
        (
            ["data.max_prompt_length=2048"],
            "data.max_prompt_length (2048) must be smaller than data.max_length (1024): "
            "a prompt that long leaves no room for a completion",
        ),
        (
            ["data.max_length=256", "data.max_prompt_length=256"],
            "data.max_prompt_length (256) must be smaller than data.max_length (256): "
            "a prompt that long leaves no room for a completion",
        ),
    ],
)
def test_settings_no_run_can_use_are_config_errors(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_run_config(SPEC, sets=sets)
    assert str(caught.value) == message


def test_the_limits_of_the_value_rules() -> None:
    config = resolve_run_config(SPEC, sets=["training.max_steps=-1", "lora.r=0", "lora=null"])
    assert config.training["max_steps"] == -1 and config.lora is None  # no LoRA: no rank
    config = resolve_run_config(
        SPEC, sets=["training.max_steps=1", "data.max_length=2", "data.max_prompt_length=1"]
    )
    assert (config.data.max_length, config.data.max_prompt_length) == (2, 1)


def test_training_values_are_typed_from_the_cached_table(tmp_path: Path) -> None:
    """Plain-typed training.* values (numbers, flags, report_to) need no transformers import
    once the name cache exists; the table types them exactly as TrainingArguments does."""

    from prefopt.training_arguments import training_argument_types, type_from_text, type_text

    for name, annotation in training_argument_types().items():
        text = type_text(annotation)
        if text is not None:
            for value in ("1", "1e-5", "true", "no", "[a, b]", "null", 3, 2.0, None, "none"):
                real, cached = (
                    _typed(value, annotation, name),
                    _typed(value, type_from_text(text), name),
                )
                # A str enum (eval_strategy: IntervalStrategy | str) is typed as str: what it
                # takes is taken alike; what it refuses ("[a, b]") TrainingArguments refuses.
                if isinstance(real, Refused) and _has_str_enum(annotation):
                    continue
                assert real == cached, (name, value, real, cached)
    script = (
        "import sys\n"
        "from prefopt.config_layers import resolve_run_config\n"
        "from prefopt.registry import get_algorithm\n"
        "sets = ['training.max_steps=3', 'training.learning_rate=1e-5',\n"
        "        'training.report_to=[wandb]']\n"
        "config = resolve_run_config(get_algorithm('dpo'), sets=sets)\n"
        "print(config.training['max_steps'], config.training['learning_rate'],\n"
        "      config.training['report_to'], 'transformers' in sys.modules)\n"
    )
    runs = [output.split() for output in _twice_in_fresh_interpreters(script, tmp_path)]
    assert runs[0] == ["3", "1e-05", "['wandb']", "True"]  # the first run builds the cache
    assert runs[1] == ["3", "1e-05", "['wandb']", "False"]


def _has_str_enum(annotation: object) -> bool:
    import enum
    import typing

    return any(
        isinstance(arg, type) and issubclass(arg, str) and issubclass(arg, enum.Enum)
        for arg in typing.get_args(annotation)
    )


class Refused(str):
    """A coercion's error message."""


def _typed(value: object, annotation: object, key: str) -> object:
    try:
        return coerce(value, annotation, key)
    except ConfigError as exc:
        return Refused(exc)


def test_yaml_no_for_a_strategy_stays_no(tmp_path: Path) -> None:
    """YAML 1.1 reads ``save_strategy: no`` as false; typed from the cached table (the str
    enum as text) it is "no" again, as TrainingArguments' own type makes it."""
    from prefopt.training_arguments import training_argument_names

    training_argument_names()
    path = tmp_path / "run.yaml"
    path.write_text("training:\n  save_strategy: no\n  eval_strategy: no\n")
    config = resolve_run_config(SPEC, path)
    assert config.training["save_strategy"] == "no"
    assert (
        type(config.training["eval_strategy"]) is str and config.training["eval_strategy"] == "no"
    )


def test_a_short_max_length_alone_halves_the_default_prompt_budget() -> None:
    """``--set data.max_length=256`` alone was refused: the default prompt budget (512) left
    no room for a completion. Unset, the budget is 512 or half of max_length, if smaller."""
    assert resolve_run_config(SPEC, sets=["data.max_length=256"]).data.max_prompt_length == 128
    assert resolve_run_config(SPEC, sets=["data.max_length=4096"]).data.max_prompt_length == 512
    assert resolve_run_config(SPEC).data.max_prompt_length == 512
    given = ["data.max_length=256", "data.max_prompt_length=200"]
    assert resolve_run_config(SPEC, sets=given).data.max_prompt_length == 200


def _twice_in_fresh_interpreters(script: str, cache_dir: Path) -> list[str]:
    """The stdout of ``script`` run in two fresh interpreters sharing the prefopt cache
    ``cache_dir``: the first builds the TrainingArguments table, the second reads it."""
    import subprocess
    import sys

    env = {**os.environ, "PREFOPT_CACHE_DIR": str(cache_dir)}
    return [
        subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    ]
