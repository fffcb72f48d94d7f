"""Secrets stay out of what a run saves and reports: configs, wandb runs, command lines.

A secret is recognised by its name or by its value:

- a config key or environment variable whose name has a ``key``, ``token``, ``secret``,
  ``password``, ``credential`` or ``auth`` word (``hub_token``, ``judge_api_key``,
  ``WANDB_API_KEY``, ``HF_TOKEN``; ``tokenizer`` and ``max_tokens`` are no such words);
- any text containing the value of such an environment variable (8 characters or more).

:func:`redact` replaces those strings by ``<redacted>`` (``prefopt_config.yaml`` and
``--print-config`` through :func:`redacted_config_yaml`, the config sent to wandb);
:func:`redact_argv` does the same for a command line (wandb records the program's arguments).
``training.hub_token`` is refused outright
(:func:`check_training_secrets`): the Trainer pickles its arguments into every
``training_args.bin``, so a token there would land on disk; ``HF_TOKEN`` works instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from prefopt.errors import ConfigError

REDACTED = "<redacted>"
_SECRET_WORDS = {
    "key",
    "apikey",
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
    "credentials",
    "auth",
}


def is_secret_name(name: str) -> bool:
    """Whether a config key or environment variable name names a secret (word match)."""
    words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower())
    return any(word in _SECRET_WORDS for word in words)


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-named environment variables (8 characters or more)."""
    environ = os.environ if environ is None else environ
    return [value for name, value in environ.items() if is_secret_name(name) and len(value) >= 8]


def redact(value: Any, secrets: list[str] | None = None, key: str = "") -> Any:
    """A copy of ``value`` (nested dicts/lists) with secret strings replaced by ``<redacted>``."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, Mapping):
        return {k: redact(v, secrets, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item, secrets, key) for item in value]
    secret_key = bool(key) and is_secret_name(key)
    if isinstance(value, str) and ((secret_key and value) or any(s in value for s in secrets)):
        return REDACTED
    return value


def redacted_config_yaml(config: Any) -> str:
    """A run config (``RunConfig``) as YAML with its secrets redacted: what
    ``prefopt_config.yaml`` holds and ``--print-config`` prints."""
    import yaml

    return yaml.safe_dump(redact(config.to_dict()), sort_keys=False)


def redact_argv(argv: list[str], secrets: list[str] | None = None) -> list[str]:
    """A command line with secret values hidden: ``key=value`` and ``--secret-flag value``
    pairs whose key names a secret, and any argument holding a secret value."""
    secrets = secret_values() if secrets is None else secrets
    hidden: list[str] = []
    for index, argument in enumerate(argv):
        key, sep, _ = argument.lstrip("-").partition("=")
        previous = argv[index - 1] if index else ""
        if sep and is_secret_name(key.rpartition(".")[2]):
            hidden.append(f"{argument.partition('=')[0]}={REDACTED}")
        elif any(s in argument for s in secrets) or (
            previous.startswith("--") and "=" not in previous and is_secret_name(previous[2:])
        ):
            hidden.append(REDACTED)
        else:
            hidden.append(argument)
    return hidden


def check_training_secrets(training: Mapping[str, Any]) -> None:
    """Refuse credentials among the ``TrainingArguments`` (they would be pickled to disk)."""
    if training.get("hub_token"):
        raise ConfigError(
            "training.hub_token: a token in the run config would be saved in training_args.bin; "
            "set HF_TOKEN in the environment (or run `hf auth login`) instead"
        )
