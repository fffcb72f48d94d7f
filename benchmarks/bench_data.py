"""The model and the synthetic pairs of benchmarks/dpo_vs_trl.py.

A ≈20M-parameter Llama-style model built locally (the tiny BPE tokenizer of
``prefopt.testing``, 8 layers, hidden 384, 6 heads / 2 KV heads, vocabulary 10240) and pairs of
two shapes: prompt-heavy (≈200-token prompts, ≈60-token answers) and completion-heavy
(≈50 / ≈250).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

SHAPES = {  # words per field (mean); the tiny tokenizer gives ≈1.1 tokens a word
    "prompt-heavy": (182, 55),
    "completion-heavy": (45, 228),
}
MODEL = {
    "hidden_size": 384,
    "num_layers": 8,
    "num_heads": 6,
    "num_kv_heads": 2,
    "intermediate_size": 1024,
}
VOCAB = 10240


def build_model(folder: Path) -> Path:
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoModelForCausalLM

    from prefopt.testing import build_tiny_tokenizer, tiny_model_config

    tokenizer = build_tiny_tokenizer()
    config = tiny_model_config("llama", vocab_size=VOCAB, tokenizer=tokenizer, **MODEL)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def make_rows(count: int, shape: str, seed: int) -> list[dict[str, Any]]:
    from prefopt.testing import COLOURS, HOMES, creature_names

    words = creature_names(24) + COLOURS + HOMES
    words += ["the", "a", "is", "of", "in", "and", "lives", "where", "what", "colour", "me"]
    rng = random.Random(seed)
    prompt_words, answer_words = SHAPES[shape]

    def text(mean: int) -> str:
        return " ".join(
            rng.choice(words) for _ in range(rng.randint(int(mean * 0.85), int(mean * 1.15)))
        )

    return [
        {
            "prompt": text(prompt_words),
            "chosen": text(answer_words),
            "rejected": text(answer_words),
            "h_w": 0,
            "h_l": rng.choice((0, 1)),
        }
        for _ in range(count)
    ]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path
