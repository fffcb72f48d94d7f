"""Fixtures for the loss pack's tests: the tiny model from ``prefopt.testing``, built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prefopt.testing import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny-llama")
