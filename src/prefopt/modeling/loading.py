"""Load a model and its tokenizer from a hub id or a local folder, with safe defaults.

``trust_remote_code`` is off unless the config asks for it and weights are read from
safetensors only. A folder holding a PEFT adapter (``adapter_config.json``) is accepted as a
model: its base is loaded and the adapter merged in, so an SFT run can feed a DPO run. A GGUF
file (``path/model.gguf``) loads through transformers' GGUF support (see ``modeling.gguf``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefopt.config import ModelConfig
from prefopt.errors import UsageError
from prefopt.modeling.gguf import (
    drop_gguf_marker,
    gguf_load_error,
    pretrained_arguments,
    split_gguf,
)
from prefopt.modeling.hub import check_hub_source

_DTYPES = ("auto", "float32", "bfloat16", "float16")


def looks_like_local_path(name: str) -> bool:
    """A path-like string (``./x``, ``/x``, ``~/x``, ``x/y/z``), not a hub id ``org/name``."""
    return (
        name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or "\\" in name
        or Path(name).exists()
    )


def check_model_source(name_or_path: str | None, what: str = "model") -> str:
    from prefopt.local_models import resolve_model_name

    name_or_path = resolve_model_name(name_or_path)
    if not name_or_path:
        raise UsageError(f"no {what} given: pass --model or set model.name_or_path")
    location, gguf_file = split_gguf(name_or_path)
    local = looks_like_local_path(location if gguf_file else name_or_path)
    if local and not Path(name_or_path).expanduser().exists():
        raise UsageError(f"{what} path does not exist: {name_or_path}")
    return (
        str(Path(name_or_path).expanduser())
        if Path(name_or_path).expanduser().exists()
        else name_or_path
    )


def check_model_available(config: ModelConfig) -> None:
    """Fail fast, before torch loads: the model (and tokenizer) named in ``config`` must be a
    path that exists, or a hub id that is cached or reachable."""
    for name, what in ((config.name_or_path, "model"), (config.tokenizer, "tokenizer")):
        if name is None and what == "tokenizer":
            continue
        source = check_model_source(name, what)
        check_hub_source(split_gguf(source)[0], config.revision, what)


def adapter_base(path: str) -> str | None:
    """The base model recorded in an adapter folder, or ``None`` if ``path`` is no adapter."""
    config_file = Path(path) / "adapter_config.json"
    if not config_file.is_file():
        return None
    base = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise UsageError(f"{config_file}: no base_model_name_or_path recorded")
    return str(base)


def torch_dtype(name: str, key: str = "model.dtype") -> Any:
    import torch

    if name not in _DTYPES:
        raise UsageError(f"{key} must be one of {', '.join(_DTYPES)}, got '{name}'")
    if name == "auto":
        return torch.float32
    return getattr(torch, name)


def load_tokenizer(config: ModelConfig) -> Any:
    from transformers import AutoTokenizer

    source = check_model_source(
        config.tokenizer or config.name_or_path, "tokenizer" if config.tokenizer else "model"
    )
    location, gguf = pretrained_arguments(source)
    check_hub_source(location, config.revision, "tokenizer" if config.tokenizer else "model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            location, trust_remote_code=config.trust_remote_code, revision=config.revision, **gguf
        )
    except (OSError, ValueError, NotImplementedError) as exc:
        if gguf:
            raise gguf_load_error(source, exc) from None
        base = adapter_base(source) if Path(source).is_dir() else None
        if base is None:
            raise UsageError(f"cannot load tokenizer '{source}': {_first_line(exc)}") from None
        tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=config.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(config: ModelConfig, for_training: bool = True, dtype: str | None = None) -> Any:
    """The causal LM described by ``config`` (an adapter folder is merged into its base).

    ``dtype`` overrides ``config.dtype`` with the run's decision (see
    :func:`prefopt.modeling.precision.load_dtype_name`). ``attn_implementation: auto`` lets
    transformers pick the best implementation the architecture supports (sdpa, else eager:
    Gemma 2 has no sdpa path); an explicit one is passed on as it is."""
    from transformers import AutoModelForCausalLM

    source = check_model_source(config.name_or_path)
    # An adapter folder (maybe trained on another adapter: SFT -> DPO) loads as its root base
    # with every adapter of the chain merged in, innermost first.
    chain = [source]
    if Path(source).is_dir() and adapter_base(source) is not None:
        from prefopt.modeling.merge import resolve_chain

        chain = resolve_chain(source)
    base, adapters = chain[0], chain[1:]
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype(dtype or config.dtype),
        "trust_remote_code": config.trust_remote_code,
        "use_safetensors": True,
    }
    if config.attn_implementation and config.attn_implementation != "auto":
        kwargs["attn_implementation"] = config.attn_implementation
    if config.revision:
        kwargs["revision"] = config.revision
    if config.load_in_4bit:
        kwargs.update(quantization_kwargs(config))
    location, gguf = pretrained_arguments(base)
    check_hub_source(location, config.revision)
    try:
        model = drop_gguf_marker(AutoModelForCausalLM.from_pretrained(location, **kwargs, **gguf))
    except (OSError, ValueError, NotImplementedError) as exc:
        if gguf:
            raise gguf_load_error(base, exc) from None
        raise UsageError(f"cannot load model '{base}': {_first_line(exc)}") from None
    for adapter in adapters:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    if config.load_in_4bit:
        keep_4bit_layers_differentiable(model)
    if config.load_in_4bit and for_training:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def keep_4bit_layers_differentiable(model: Any) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference; returns the count.

    On CPUs with AVX512-BF16, a ``Linear4bit`` run in eval mode without grad (the reference
    pass) converts its weight in place to a packed layout whose kernel has no backward: every
    later training step then silently drops the gradient through the frozen base layers, and
    the LoRA gradients of all but the last layers come out wrong.
    """
    count = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def quantization_kwargs(config: ModelConfig) -> dict[str, Any]:
    """QLoRA loading: NF4 with double quantization and the configured compute dtype; on GPUs
    each data-parallel process puts its copy on its own device (``LOCAL_RANK``)."""
    import os

    import torch
    from transformers import BitsAndBytesConfig

    from prefopt.extras import require

    require("bitsandbytes", "qlora", "model.load_in_4bit (QLoRA)")

    compute_dtype = torch_dtype(config.bnb_4bit_compute_dtype, "model.bnb_4bit_compute_dtype")
    kwargs: dict[str, Any] = {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    }
    if torch.cuda.is_available():
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    return kwargs


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
