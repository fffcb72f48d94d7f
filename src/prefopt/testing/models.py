"""A tiny byte-level BPE tokenizer (with a chat template) trained on the synthetic world, and
randomly initialised Llama- or Qwen2-style causal LMs of any size, saved as normal
``from_pretrained`` folders; deterministic for a given seed."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prefopt.paths import as_if_created, default_cache_dir
from prefopt.testing.world import (
    ANSWERS,
    COLOURS,
    FLUENT_ANSWERS,
    HELD_OUT_TEMPLATES,
    HOMES,
    TRAIN_TEMPLATES,
    world,
)

TINY_VERSION = "1"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


# -- tokenizer -----------------------------------------------------------------------------
def _corpus() -> list[str]:
    lines = []
    for name in world():
        for kind, values in (("colour", COLOURS), ("home", HOMES)):
            lines += [t.format(e=name) for t in TRAIN_TEMPLATES[kind] + HELD_OUT_TEMPLATES[kind]]
            for answers in (ANSWERS, FLUENT_ANSWERS):
                lines += [answers[kind].format(e=name, v=value) for value in values]
    lines += [
        "Question: Answer: The quick brown fox jumps over the lazy dog.",
        "A helpful assistant answers questions truthfully and briefly.",
        "0 1 2 3 4 5 6 7 8 9 10 100 1000, . ? ! : ; ' \" ( ) [ ] - + = / * # @ & %",
    ]
    return lines


def build_tiny_tokenizer(vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer trained on the synthetic world, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_corpus(), trainer=trainer)
    from tokenizers.processors import TemplateProcessing

    bos_id = core.token_to_id("<s>")
    core.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 2048
    return tokenizer


# -- models --------------------------------------------------------------------------------
def tiny_model_config(
    arch: str = "llama",
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_positions: int = 2048,
    tokenizer: Any = None,
) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    classes = {"llama": LlamaConfig, "qwen2": Qwen2Config}
    if arch not in classes:
        raise ValueError(f"arch must be one of {sorted(classes)}, got {arch!r}")
    special = {}
    if tokenizer is not None:
        special = {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
    return classes[arch](
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        **special,
    )


def build_tiny_model(
    arch: str = "llama", seed: int = 0, tokenizer: Any = None, **sizes: Any
) -> Any:
    """A randomly initialised causal LM (fp32), deterministic for ``seed``."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer or build_tiny_tokenizer()
    config = tiny_model_config(arch, vocab_size=len(tokenizer), tokenizer=tokenizer, **sizes)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def save_model_folder(model: Any, tokenizer: Any, path: str | Path) -> Path:
    """Save ``model`` (safetensors) and ``tokenizer`` as one folder at ``path``: written to a
    temporary folder beside it and renamed into place, replacing what was there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        as_if_created(staging, tree=True)  # not mkdtemp's 0700 nor safetensors' 0600
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return path


def save_tiny_model(path: str | Path, arch: str = "llama", seed: int = 0, **sizes: Any) -> Path:
    """Build a tiny model + tokenizer and save them to ``path`` (replaced atomically)."""
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(arch, seed=seed, tokenizer=tokenizer, **sizes)
    return save_model_folder(model, tokenizer, path)


def tiny_model_dir(path: str | Path | None = None, arch: str = "llama", seed: int = 0) -> Path:
    """A folder with the tiny model and tokenizer, built on first use.

    With ``path`` the model is built there (if absent); otherwise it lives in prefopt's cache
    folder (``$PREFOPT_CACHE_DIR`` or the user cache dir) and is shared between runs.
    """
    if path is None:
        path = default_cache_dir() / "tiny" / f"{arch}-seed{seed}-v{TINY_VERSION}"
    path = Path(path)
    if not (path / "config.json").is_file():
        save_tiny_model(path, arch=arch, seed=seed)
    return path
