"""Per-sequence log-probabilities of completion tokens, with the LM head only where needed.

For a sequence with completion tokens ``C``, the sequence log-prob is
``Σ_{t∈C} log p(x_t | x_<t) = Σ_t (z_t[x_t] − logsumexp(z_t))`` where ``z_t`` are the logits
of the hidden state that predicts token ``t`` (the one before it). Every layout reduces to four
(K,) vectors over the K scored tokens: the row and position of the predicting hidden state, the
target token and the output sequence it counts for (see :mod:`prefopt.data.collate`).

Lean path: the model runs with ``logits_to_keep=1`` (so its own LM head projects one position
per row), and a forward hook on the backbone applies the LM head to the final hidden states of
the K predicting positions only, inside the model's call (so under the same autocast as the
model's own head), in chunks of :data:`CHUNK_BYTES` of fp32 logits (per device type). Under
autograd a chunk keeps no logits (a linear head has a hand-written backward in
:mod:`prefopt.modeling.head_logprobs`; other heads are checkpointed), so memory for logits is one
chunk × vocabulary, not rows × width × vocabulary; the backward recomputes a chunk's logits. A
head that does more than a projection gets the model's own transform applied after it (Granite's
logit scaling, Cohere's logit scale, Gemma 2/3's soft-capping: see
:mod:`prefopt.modeling.logit_transform`). Models that lack the ``get_decoder``/``logits_to_keep``
surface, announce a scaling prefopt cannot interpret, or failed the first-batch self-check
(:func:`use_full_logits`, :mod:`prefopt.modeling.head_check`) take the full-logits path, which
gives the same numbers. The logsumexp is taken in fp32; per-sequence sums are returned in fp64:
a sum of hundreds of token log-probs loses its last digits in fp32, and the (N,) vectors are
tiny.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any

from prefopt.modeling.logit_transform import LogitTransform, logit_transform

#: Logit elements per LM-head chunk on a CPU (16M floats = 64 MB in fp32).
CHUNK_ELEMENTS = 1 << 24
#: Bytes of fp32 logits per LM-head chunk, by device type: a GPU's head matmul wants more rows
#: at once (512 MiB: 880 rows of a 152k vocabulary), a CPU's cache less.
CHUNK_BYTES = {"cpu": 4 * CHUNK_ELEMENTS, "cuda": 512 << 20}


def chunk_rows(vocab_size: int, device_type: str) -> int:
    """Rows of hidden states per LM-head chunk: :data:`CHUNK_BYTES` of fp32 logits."""
    budget = CHUNK_BYTES.get(device_type, CHUNK_BYTES["cpu"])
    return max(1, budget // (4 * max(1, vocab_size)))


def gather_completion_logps(logits: Any, input_ids: Any, completion_mask: Any) -> tuple[Any, Any]:
    """Sum of completion-token log-probs per row, and the completion lengths.

    ``logits``: (N, T, V); ``input_ids``: (N, T); ``completion_mask``: (N, T) bool marking the
    tokens to score. Returns ``(logps (N,), lengths (N,))``.
    """
    import torch

    target_mask = completion_mask[:, 1:]
    rows, positions = target_mask.nonzero(as_tuple=True)
    selected = logits[:, :-1][rows, positions].float()  # (K, V) predicting tokens t = pos + 1
    targets = input_ids[:, 1:][rows, positions]
    token_logps = torch.log_softmax(selected, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    # Sums of many log-probs reach hundreds, where fp32 spacing is ~1e-5: accumulate in fp64.
    logps = torch.zeros(input_ids.shape[0], dtype=torch.float64, device=token_logps.device)
    logps = logps.index_add(0, rows, token_logps.double())
    lengths = target_mask.sum(dim=1)
    return logps, lengths


def score_vectors(batch: dict[str, Any]) -> tuple[Any, Any, Any, Any, int]:
    """``(rows, positions, targets, index, sequences)`` of the scored tokens of any layout."""
    if "score_index" in batch:
        return (
            batch["score_rows"],
            batch["score_positions"],
            batch["score_targets"],
            batch["score_index"],
            int(batch["sequence_count"]),
        )
    input_ids, completion_mask = batch["input_ids"], batch["completion_mask"]
    rows, positions = completion_mask[:, 1:].nonzero(as_tuple=True)
    targets = input_ids[rows, positions + 1]
    return rows, positions, targets, rows, int(input_ids.shape[0])


def unwrap(model: Any) -> Any:
    """The ``PreTrainedModel`` inside DDP/accelerate and PEFT wrappers."""
    for _ in range(8):
        if hasattr(model, "module") and not hasattr(model, "config"):
            model = model.module
        elif hasattr(model, "get_base_model"):
            model = model.get_base_model()
        else:
            break
    return model


#: Models whose lean path disagreed with their own forward (see :func:`use_full_logits`).
_FULL_LOGITS: weakref.WeakSet[Any] = weakref.WeakSet()


def use_full_logits(model: Any) -> None:
    """Score ``model`` (and anything wrapping it) through its own full-logits forward from now
    on: its lean path disagreed with that forward in the first-batch self-check."""
    _FULL_LOGITS.add(unwrap(model))


def lean_path_parts(model: Any) -> tuple[Any, Any, LogitTransform] | None:
    """``(backbone, lm_head, transform)`` when the lean path applies to ``model``, else
    ``None`` (the full-logits path)."""
    inner = unwrap(model)
    config = getattr(inner, "config", None)
    get_decoder = getattr(inner, "get_decoder", None)
    get_head = getattr(inner, "get_output_embeddings", None)
    if config is None or get_decoder is None or get_head is None or inner in _FULL_LOGITS:
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    transform = logit_transform(text_config)
    if transform is None:
        return None
    try:
        parameters = inspect.signature(type(inner).forward).parameters
    except (TypeError, ValueError):
        return None
    if "logits_to_keep" not in parameters:
        return None
    backbone, head = get_decoder(), get_head()
    if backbone is None or head is None or backbone is inner:
        return None
    if hasattr(getattr(head, "weight", None), "ds_id"):  # partitioned by DeepSpeed ZeRO-3
        _note_partitioned_head(inner)
        return None
    return backbone, head, transform


def _note_partitioned_head(model: Any) -> None:
    """ZeRO-3 gathers a partitioned weight only inside its module's own forward and backward;
    the lean path applies the head from the backbone's hook, outside them. Say once that the
    model's own full-logits forward runs instead, and what keeps the lean head."""
    if model in _FULL_LOGITS:
        return
    _FULL_LOGITS.add(model)
    import logging
    import os

    if os.environ.get("RANK", "0") != "0":  # one line for the run, not one per process
        return
    logging.getLogger("prefopt").warning(
        "DeepSpeed ZeRO-3 partitions the LM head: log-probs come from the model's full logits "
        "(more memory); ZeRO-2 or training.fsdp keep the lean LM head"
    )


def _forward_parameters(model: Any) -> Any:
    try:
        return inspect.signature(type(unwrap(model)).forward).parameters
    except (TypeError, ValueError):
        return {}


def model_inputs(model: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for the model's forward for any layout.

    An MoE model is asked for no router logits (``output_router_logits=False``, whatever its
    config says): prefopt trains on log-probs alone and never adds the router's load-balancing
    loss, which would only cost compute and, computed from a 4D custom mask, fail."""
    extra: dict[str, Any] = {}
    if "output_router_logits" in _forward_parameters(model):
        extra["output_router_logits"] = False
    if "segment_ids" not in batch:
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], **extra}
    import torch

    from prefopt.modeling.attention_masks import mask_for

    inner = unwrap(model)
    dtype = next(inner.parameters()).dtype
    device_type = batch["input_ids"].device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
    return {
        "input_ids": batch["input_ids"],
        "position_ids": batch["position_ids"],
        "attention_mask": mask_for(
            inner, batch["segment_ids"], batch["parts"], dtype, batch.get("forks")
        ),
        **extra,
    }


def head_logps(
    head: Any, hidden: Any, targets: Any, transform: LogitTransform | None = None
) -> Any:
    """``log p(target)`` for each row of ``hidden`` (k, H) through ``head`` and the model's
    logit ``transform``; fp32 (k,)."""
    import torch

    logits = head(hidden)
    if transform is not None and not transform.is_identity:
        logits = transform.apply(logits)  # in the head's dtype, as the model's own forward
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def chunked_head_logps(
    head: Any,
    hidden: Any,
    targets: Any,
    vocab_size: int,
    transform: LogitTransform | None = None,
) -> Any:
    """:func:`head_logps` in chunks of :func:`chunk_rows` rows (sized in bytes per device).

    A plain ``nn.Linear`` head goes through :class:`~prefopt.modeling.head_logprobs.HeadLogProbs`
    (keeps no logits for the backward); any other head module is checkpointed chunk by chunk
    when gradients are needed.
    """
    import functools

    import torch
    from torch.utils.checkpoint import checkpoint

    score: Any
    if type(head) is torch.nn.Linear:
        from prefopt.modeling.head_logprobs import IDENTITY, linear_head_logps

        score = functools.partial(linear_head_logps, head, transform=transform or IDENTITY)
    elif torch.is_grad_enabled() and (
        hidden.requires_grad or any(p.requires_grad for p in head.parameters())
    ):

        def score(hidden: Any, targets: Any) -> Any:
            return checkpoint(head_logps, head, hidden, targets, transform, use_reentrant=False)

    else:
        score = functools.partial(head_logps, head, transform=transform)
    size = chunk_rows(vocab_size, hidden.device.type)
    pieces = [
        score(hidden[start : start + size], targets[start : start + size])
        for start in range(0, hidden.shape[0], size)
    ]
    if not pieces:
        return hidden.new_zeros(0, dtype=torch.float32)
    return torch.cat(pieces)


def sequence_logps(model: Any, batch: dict[str, Any], lean: bool = True) -> tuple[Any, Any]:
    """Run ``model`` on a batch of any layout; per-sequence completion log-probs and lengths.

    Returns ``(logps (S,) fp64, lengths (S,))`` where S is the number of output sequences (2B
    for a batch of B pairs: chosen first, then rejected). ``lean=False`` takes the model's own
    full-logits forward (the self-check's yardstick).
    """
    import torch

    rows, positions, targets, index, sequences = score_vectors(batch)
    kwargs = model_inputs(model, batch)
    parts = lean_path_parts(model) if lean else None
    if parts is None:
        logits = model(**kwargs, use_cache=False).logits
        token_logps = head_logps(torch.nn.Identity(), logits[rows, positions], targets)
    else:
        backbone, head, transform = parts
        vocab = int(getattr(head, "out_features", 0) or unwrap(model).config.vocab_size)
        scored: list[Any] = []

        # The head runs inside the backbone's call, so under whatever autocast wraps the
        # model's forward (accelerate's mixed precision), like the model's own LM head.
        def score_hidden(module: Any, args: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
            scored.append(
                chunked_head_logps(head, hidden[rows, positions], targets, vocab, transform)
            )

        handle = backbone.register_forward_hook(score_hidden)
        try:
            model(**kwargs, use_cache=False, logits_to_keep=1)
        finally:
            handle.remove()
        token_logps = scored[-1]
    logps = torch.zeros(sequences, dtype=torch.float64, device=token_logps.device)
    logps = logps.index_add(0, index, token_logps.double())
    lengths = torch.bincount(index, minlength=sequences)
    return logps, lengths


# -- precision -----------------------------------------------------------------------------
def embedding_parameter_ids(model: Any) -> set[int]:
    """``id`` of every embedding table's parameter in ``model`` (a head tied to the embedding
    shares its weight: the same id)."""
    import torch

    return {
        id(parameter)
        for module in model.modules()
        if isinstance(module, torch.nn.Embedding)
        for parameter in module.parameters(recurse=False)
    }


def cast_frozen_linears(model: Any, dtype: Any) -> int:
    """Store the weights of frozen plain ``nn.Linear`` layers in ``dtype``; returns how many.

    Under autocast a matmul casts its fp32 weight to bf16 on every call, and a frozen weight
    (LoRA's base layers, the LM head) is never cached, so every step re-rounds the whole model.
    Rounding once gives the same bf16 operands (round-to-nearest-even either way), so the
    results are unchanged while the casts and half the weight memory go. Norms, embeddings and
    trainable or quantized layers are left alone, and so is a head tied to the embedding (its
    weight is the embedding's: casting it would start the residual stream in bf16). Only for
    runs that always compute under autocast.
    """
    import torch

    embedded = embedding_parameter_ids(model)
    count = 0
    for module in model.modules():
        if type(module) is not torch.nn.Linear:  # bitsandbytes layers subclass Linear
            continue
        own = list(module.parameters(recurse=False))
        if any(parameter.requires_grad or id(parameter) in embedded for parameter in own):
            continue
        module.to(dtype)
        count += 1
    return count
