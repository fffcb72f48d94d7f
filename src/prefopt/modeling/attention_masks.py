"""Attention masks for the prefix-shared and packed layouts, and who can take them.

A row of those layouts holds one or more segments ``[prompt | response 1 | ... | response N]``
(a pair is ``[prompt | chosen | rejected]``, a list of N ranked responses has N). Each token
carries a *segment id* (which segment of the row it belongs to, ``-1`` for padding) and a
*part* (``0`` prompt, ``j`` response ``j``: chosen is 1, rejected 2). Query ``q`` may attend key
``k`` when

    seg[q] == seg[k]  and  k <= q  and  (part[k] == 0 or part[k] == part[q])      (or q == k)

i.e. causal attention inside a segment, except that a response does not see the other
responses: its tokens see the prompt and its own earlier tokens, exactly what they would see in
their own ``prompt + response`` row. ``q == k`` keeps every row of the mask non-empty (padding
attends to itself), so no softmax runs over an empty set. Every response keeps the
*positions* it would have in its own row (they continue from the end of the prompt), so the
collators pass ``position_ids`` explicitly.

A per-turn conversation is a tree (:mod:`prefopt.data.turns`): the conversation with its chosen
answers is part 0, each turn's rejected answer a branch part after it, and a per-token *fork*
limits what a branch sees of part 0 to the tokens before its turn's answer: with ``forks``,
``part[k] == 0`` reads ``part[k] == 0 and k < fork[q]``.

The same rule is given three ways: a dense boolean 4D mask ``(R, 1, T, T)`` for the SDPA
attention implementation, an additive float 4D mask for ``eager``, and a FlexAttention
``BlockMask`` (CUDA only). transformers 5 passes a ready 4D mask through untouched
(``masking_utils._preprocess_mask_arguments``) and uses the given ``position_ids`` for rotary
embeddings. Models that would lose something by that (sliding-window attention, absolute or
ALiBi position schemes, attention kernels without custom masks) are refused by
:func:`custom_mask_support`, and the run falls back to the padded layout.
``tests/test_architectures.py`` checks each family against the naive per-sequence log-probs;
``docs/architectures.md`` lists what each one gets.
"""

from __future__ import annotations

from typing import Any

#: Architectures checked to build their mask with ``masking_utils.create_causal_mask`` (which
#: passes a 4D mask through) and to take positions only from ``position_ids`` (rotary); each
#: is held to the naive per-sequence log-probs in every layout by ``tests/test_architectures.py``.
ROTARY_CAUSAL_MODELS = frozenset(
    {
        "llama",
        "qwen2",
        "qwen3",
        "qwen3_moe",
        "mistral",
        "mixtral",
        "gemma",
        "phi3",
        "olmo",
        "olmo2",
        "granite",
        "cohere",
        "smollm3",
    }
)
#: Architectures that apply ``config.sliding_window`` to every layer when it is set (their mask
#: function is ``create_sliding_window_causal_mask`` then): a custom mask replaces the window,
#: which is harmless only while no row is longer than it.
WHOLE_MODEL_WINDOW = frozenset({"mistral", "mixtral", "qwen3_moe", "phi3"})
#: Attention implementations that take a dense 4D mask (bool for sdpa, additive for eager).
DENSE_MASK_ATTENTION = frozenset({"sdpa", "eager"})
FLEX_ATTENTION = "flex_attention"


def _config_of(model: Any) -> Any:
    seen = 0
    while hasattr(model, "module") and not hasattr(model, "config") and seen < 8:
        model = model.module
        seen += 1
    return model.config


def attention_implementation(model: Any) -> str:
    config = _config_of(model)
    return str(getattr(config, "_attn_implementation", None) or "eager")


def custom_mask_support(model: Any, longest_row: int | None = None) -> tuple[bool, str]:
    """Whether ``model`` can run rows with a custom 4D mask; ``(False, reason)`` if not."""
    config = _config_of(model)
    model_type = str(getattr(config, "model_type", ""))
    if model_type not in ROTARY_CAUSAL_MODELS:
        return False, f"model type '{model_type}' is not checked for custom attention masks"
    implementation = attention_implementation(model)
    if implementation == FLEX_ATTENTION:
        if not flex_attention_available():
            return False, "flex_attention needs CUDA and torch.nn.attention.flex_attention"
    elif implementation not in DENSE_MASK_ATTENTION:
        return False, f"attention implementation '{implementation}' takes no custom 4D mask"
    if model_type == "qwen2" and getattr(config, "use_sliding_window", False):
        return False, "sliding-window attention would be replaced by the custom mask"
    window = getattr(config, "sliding_window", None)
    if (
        model_type in WHOLE_MODEL_WINDOW
        and window is not None
        and (longest_row is None or longest_row > int(window))
    ):
        return False, "sliding-window attention would be replaced by the custom mask"
    if getattr(config, "layer_types", None) and any(
        kind != "full_attention" for kind in config.layer_types
    ):
        return False, "the model mixes attention kinds per layer"
    return True, ""


def flex_attention_available() -> bool:
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def allowed(segment_ids: Any, parts: Any, forks: Any = None) -> Any:
    """Dense boolean ``(R, 1, T, T)`` mask of the rule above (True = may attend); with
    ``forks`` (per token), a part-0 key is visible only before the query's fork."""
    import torch

    width = segment_ids.shape[1]
    same = segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)
    causal = torch.ones(width, width, dtype=torch.bool, device=segment_ids.device).tril()
    key_part = parts.unsqueeze(1)
    shared = key_part == 0
    if forks is not None:
        keys = torch.arange(width, device=segment_ids.device)
        shared = shared & (keys.view(1, 1, width) < forks.unsqueeze(2))
    visible = shared | (key_part == parts.unsqueeze(2))
    mask = same & causal & visible
    mask |= torch.eye(width, dtype=torch.bool, device=segment_ids.device)
    return mask.unsqueeze(1)


def additive(mask: Any, dtype: Any) -> Any:
    """A boolean mask as the additive float mask eager attention expects (0 or dtype min)."""
    import torch

    zeros = torch.zeros((), dtype=dtype, device=mask.device)
    blocked = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=mask.device)
    return torch.where(mask, zeros, blocked)


def block_mask(segment_ids: Any, parts: Any, forks: Any = None) -> Any:
    """The same rule as a FlexAttention ``BlockMask`` (CUDA; untested on the CPU-only CI)."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask

    if forks is None:
        forks = torch.full_like(segment_ids, segment_ids.shape[1])

    def mask_mod(b: Any, h: Any, q: Any, k: Any) -> Any:
        same = segment_ids[b, q] == segment_ids[b, k]
        shared = (parts[b, k] == 0) & (k < forks[b, q])
        visible = shared | (parts[b, k] == parts[b, q])
        return (same & (k <= q) & visible) | (q == k)

    rows, width = segment_ids.shape
    return create_block_mask(mask_mod, rows, None, width, width, device=segment_ids.device)


def mask_for(
    model: Any, segment_ids: Any, parts: Any, compute_dtype: Any, forks: Any = None
) -> Any:
    """The mask object ``model``'s attention implementation takes for these rows."""
    implementation = attention_implementation(model)
    if implementation == FLEX_ATTENTION:
        return block_mask(segment_ids, parts, forks)
    mask = allowed(segment_ids, parts, forks)
    if implementation == "eager":
        return additive(mask, compute_dtype)
    return mask
