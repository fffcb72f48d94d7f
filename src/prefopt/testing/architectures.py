"""The architecture matrix: tiny random models of every causal-LM family users train on
preference data, built from configs alone (no download), and the table of what prefopt does
with each.

Each :class:`Architecture` names a ``transformers`` model type and the config fields that make a
two-layer model of it a few hundred kilobytes big, with every head transform set to a value that
bites (Granite's ``logits_scaling`` and multipliers, Cohere's ``logit_scale``, Gemma 2/3's
soft-capping) and the sliding windows that should bite shorter than the test pairs: a code
path that forgets one gives visibly wrong log-probs instead of passing by luck.
``tests/test_architectures.py`` checks each family in each batch layout and attention
implementation against the naive per-sequence computation; :func:`markdown_table` asks the
same questions the trainer asks (can the model be built with this attention, what does
``choose_layout`` pick) and gives the table of ``docs/architectures.md``::

    python -m prefopt.testing.architectures --markdown          # print the table
    python -m prefopt.testing.architectures --write docs/architectures.md
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The attention implementations the matrix covers (both take prefopt's dense 4D masks).
ATTENTIONS = ("sdpa", "eager")
#: Layouts in table order (``prefopt.data.collate.LAYOUTS``).
LAYOUTS = ("padded", "prefix", "packed")
#: Weights are drawn wider than the usual 0.02 so that logits spread over a few units: a
#: soft-cap at 5 or a scale of 8 then changes every log-prob, not only the fifth decimal.
INITIALIZER_RANGE = 0.2
#: The window of the sliding-window families: shorter than the test pairs, so it hides keys.
SLIDING_WINDOW = 8
#: The lines of ``docs/architectures.md`` that enclose the generated table.
TABLE_START = "<!-- architecture-matrix:start (python -m prefopt.testing.architectures) -->"
TABLE_END = "<!-- architecture-matrix:end -->"

#: Sizes of the Llama-like families (GPT-2 and GPT-NeoX spell theirs themselves).
_SIZES: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 512,
}
#: Few experts, two per token; a large aux-loss coefficient, so that a loss that included it
#: would differ visibly.
_MOE: dict[str, Any] = {"num_experts_per_tok": 2, "router_aux_loss_coef": 0.5}
_SLIDING_REASON = "sliding-window attention would be replaced by the custom mask"
_UNCHECKED_REASON = "is not checked for custom attention masks"
_SOFTCAP_HEAD = "soft-capped at final_logit_softcapping = 5"


@dataclass(frozen=True)
class Architecture:
    """One family of the matrix and what the matrix expects of it.

    ``fields``: config keyword arguments on top of the shared sizes (``sized=False``: the family
    spells its sizes itself). ``head``: what the LM head does besides the projection.
    ``fallback``: part of the reason ``choose_layout`` gives when the prefix/packed layouts
    fall back to padded (empty: they are taken, and must be exact). ``forced``: what the
    prefix/packed layouts give when forced on a family that falls back: ``"wrong"`` (the
    fallback is needed), ``"exact"`` (it is only conservative) or ``"error"``.
    ``unsupported``: attention implementations the family refuses, with why.
    """

    name: str
    model_type: str
    fields: dict[str, Any] = field(default_factory=dict)
    head: str = ""
    moe: bool = False
    fallback: str = ""
    forced: str = "exact"
    unsupported: dict[str, str] = field(default_factory=dict)
    sized: bool = True

    def config(self, tokenizer: Any = None) -> Any:
        """The tiny config for ``tokenizer``'s vocabulary and special tokens (default: the tiny
        tokenizer of :func:`prefopt.testing.build_tiny_tokenizer`)."""
        from transformers import AutoConfig

        tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
        values: dict[str, Any] = dict(_SIZES) if self.sized else {}
        values.update(
            vocab_size=len(tokenizer),
            initializer_range=INITIALIZER_RANGE,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        values.update(self.fields)
        return AutoConfig.for_model(self.model_type, **values)


ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("llama", "llama"),
    # Mistral 7B v0.1's window: longer than any test row, so the custom-mask layouts are exact.
    Architecture("mistral", "mistral", {"sliding_window": 4096}),
    Architecture(
        "mistral-sliding",
        "mistral",
        {"sliding_window": SLIDING_WINDOW},
        fallback=_SLIDING_REASON,
        forced="wrong",
    ),
    Architecture("qwen2", "qwen2"),
    Architecture("qwen3", "qwen3"),
    Architecture(
        "qwen3-moe",
        "qwen3_moe",
        {**_MOE, "num_experts": 4, "moe_intermediate_size": 32, "norm_topk_prob": True},
        moe=True,
    ),
    Architecture("mixtral", "mixtral", {**_MOE, "num_local_experts": 4}, moe=True),
    Architecture(
        "mixtral-router-aux",
        "mixtral",
        {**_MOE, "num_local_experts": 4, "output_router_logits": True},
        moe=True,
    ),
    Architecture("gemma", "gemma"),
    Architecture(
        "gemma2",
        "gemma2",
        {
            "final_logit_softcapping": 5.0,
            "attn_logit_softcapping": 2.0,
            "sliding_window": SLIDING_WINDOW,
            "query_pre_attn_scalar": 16,
        },
        head=_SOFTCAP_HEAD,
        fallback=_UNCHECKED_REASON,
        forced="wrong",
        unsupported={"sdpa": "SDPA cannot soft-cap attention scores (attn_logit_softcapping)"},
    ),
    Architecture(
        "gemma3-text",
        "gemma3_text",
        {
            "final_logit_softcapping": 5.0,
            "sliding_window": SLIDING_WINDOW,
            "layer_types": ["sliding_attention", "full_attention"],
            "query_pre_attn_scalar": 16,
        },
        head=_SOFTCAP_HEAD,
        fallback=_UNCHECKED_REASON,
        forced="wrong",
    ),
    Architecture("phi3", "phi3", {"sliding_window": None}),
    Architecture(
        "granite",
        "granite",
        {
            "logits_scaling": 8.0,
            "embedding_multiplier": 6.0,
            "residual_multiplier": 0.5,
            "attention_multiplier": 0.1,
        },
        head="divided by logits_scaling = 8",
    ),
    Architecture("cohere", "cohere", {"logit_scale": 0.5}, head="multiplied by logit_scale = 0.5"),
    Architecture("olmo", "olmo"),
    Architecture("olmo2", "olmo2"),
    Architecture("smollm3", "smollm3", {"no_rope_layers": [1, 0]}),
    Architecture(
        "gpt2",
        "gpt2",
        {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_inner": 128, "n_positions": 512},
        fallback=_UNCHECKED_REASON,
        sized=False,
    ),
    Architecture(
        "gpt-neox",
        "gpt_neox",
        {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 512,
        },
        fallback=_UNCHECKED_REASON,
        sized=False,
    ),
)
BY_NAME = {architecture.name: architecture for architecture in ARCHITECTURES}


@functools.cache
def tiny_tokenizer() -> Any:
    """The tiny BPE tokenizer, trained once per process (half a second)."""
    from prefopt.testing.models import build_tiny_tokenizer

    return build_tiny_tokenizer()


def build_architecture_model(
    name: str, attn_implementation: str | None = "sdpa", seed: int = 0, tokenizer: Any = None
) -> Any:
    """A randomly initialised fp32 model of family ``name`` in eval mode, deterministic for
    ``seed``; ``attn_implementation=None`` lets transformers pick, as a plain load does.

    Raises ``ValueError`` when the family refuses ``attn_implementation`` (Gemma 2 under
    ``sdpa``), as ``from_pretrained`` does for a real checkpoint.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = BY_NAME[name].config(tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(
        config, dtype=torch.float32, attn_implementation=attn_implementation
    )
    return model.eval()


def matrix_pairs(conversational: bool = False, count: int = 7) -> list[Any]:
    """The tokenized pairs the matrix scores: uneven lengths (one long completion, or one long
    prompt in the chat variant), so padded rows pad and packed rows hold several pairs."""
    from prefopt.data.tokenize import TokenizationSettings, tokenize_pairs
    from prefopt.testing.world import synthetic_pairs

    rows = synthetic_pairs(count, seed=5, conversational=conversational)
    if conversational:
        rows[0]["prompt"] = [{"role": "user", "content": "A much longer question about the zora?"}]
    else:
        rows[0]["chosen"] = "The answer is long and has many words in it, more than most."
    pairs, report = tokenize_pairs(enumerate(rows, 1), tiny_tokenizer(), TokenizationSettings())
    if report.dropped:
        raise AssertionError(f"{report.dropped} synthetic pairs dropped by tokenization")
    return pairs


def longest_row(pairs: Sequence[Any]) -> int:
    """The longest prefix-shared row of ``pairs``: what the trainer asks ``choose_layout``
    about (it decides whether a sliding window could bite)."""
    from prefopt.data.collate import pair_length

    return max(pair_length(pair) for pair in pairs)


# -- the support table ---------------------------------------------------------------------
def attention_support(architecture: Architecture, attention: str) -> tuple[Any, str]:
    """``(model, "")`` when the family builds with ``attention``, else ``(None, reason)``."""
    try:
        return build_architecture_model(architecture.name, attention), ""
    except ValueError as exc:
        reason = architecture.unsupported.get(attention)
        return None, reason or str(exc).split(". ")[0].strip()


def layout_cells(architecture: Architecture, attention: str, longest: int) -> dict[str, str]:
    """What prefopt does for each layout: ``exact``, ``falls back to padded: <reason>`` or
    ``unsupported: <reason>``, as the trainer's own checks answer (the tests hold "exact" to
    the naive computation)."""
    from prefopt.data.collate import choose_layout

    model, reason = attention_support(architecture, attention)
    if model is None:
        return {layout: f"unsupported: {reason}" for layout in LAYOUTS}
    cells = {}
    for layout in LAYOUTS:
        chosen, why = choose_layout(layout, model, longest)
        cells[layout] = "exact" if chosen == layout else f"falls back to padded: {why}"
    return cells


def markdown_table() -> str:
    """The Markdown table architecture × attention × layout of ``docs/architectures.md``."""
    longest = longest_row(matrix_pairs())
    lines = [
        f"Longest row of the test pairs: {longest} tokens.",
        "",
        "| architecture | model type | logits | attention | padded | prefix | packed |",
        "|---|---|---|---|---|---|---|",
    ]
    for architecture in ARCHITECTURES:
        head = architecture.head or "projection"
        for attention in ATTENTIONS:
            cells = layout_cells(architecture, attention, longest)
            row = [architecture.name, f"`{architecture.model_type}`", head, attention]
            lines.append("| " + " | ".join(row + [cells[layout] for layout in LAYOUTS]) + " |")
    return "\n".join(lines) + "\n"


def replace_table(document: str, table: str) -> str:
    """``document`` with the text between :data:`TABLE_START` and :data:`TABLE_END` replaced
    by ``table``."""
    head, start, rest = document.partition(TABLE_START)
    _, end, tail = rest.partition(TABLE_END)
    if not start or not end:
        raise ValueError(f"the document lacks the {TABLE_START!r} ... {TABLE_END!r} markers")
    return f"{head}{TABLE_START}\n{table}{TABLE_END}{tail}"


def committed_table(document: str) -> str:
    """The table between the markers of ``document``, as :func:`markdown_table` gives it."""
    _, _, rest = document.partition(TABLE_START)
    return rest.partition(TABLE_END)[0].lstrip("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prefopt.testing.architectures", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--markdown", action="store_true", help="print the table")
    parser.add_argument("--write", type=Path, help="replace the table in this Markdown file")
    args = parser.parse_args(argv)
    from prefopt.cli.common import quiet_libraries

    quiet_libraries()
    table = markdown_table()
    if args.write is not None:
        text = args.write.read_text(encoding="utf-8")
        args.write.write_text(replace_table(text, table), encoding="utf-8")
    if args.markdown or args.write is None:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
