"""The keys of the reference cache (:mod:`prefopt.training.reference_cache`): what reference
log-probs depend on, hashed. An entry's key holds

- the model's identity (:func:`model_fingerprint`): sha256 of its safetensors files and
  ``config.json`` (memoised per file, so a large model is hashed once), the recorded base of
  an adapter folder, the load settings (dtype, 4-bit); the in-memory weights when no local
  files can be found (:func:`weights_fingerprint`);
- the tokenizer's fingerprint and the sha256 of every sample's token ids, in order;
- the tokenization settings and the precision (bf16 autocast or fp32).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefopt.data.prep_cache import digest, file_sha256, tokenizer_fingerprint
from prefopt.data.samples import samples_fingerprint
from prefopt.data.tokenize import TokenizationSettings

REFERENCE_VERSION = 1
_MODEL_FILES = ("config.json", "adapter_config.json")


def model_fingerprint(
    model_config: Any,
    base_model: Any = None,
    root: Path | None = None,
    weights_dtype: str | None = None,
) -> str:
    """Identity of the reference weights described by ``model_config`` (see module doc);
    ``weights_dtype`` is the dtype they were loaded in, when ``model.dtype: auto`` chose it
    (bf16 for a LoRA base on CUDA: other numbers than fp32 weights under autocast)."""
    from prefopt.modeling.loading import adapter_base, check_model_source

    source = check_model_source(model_config.name_or_path)
    settings = {
        "dtype": model_config.dtype if weights_dtype is None else weights_dtype,
        "load_in_4bit": model_config.load_in_4bit,
        "bnb_4bit_compute_dtype": model_config.bnb_4bit_compute_dtype
        if model_config.load_in_4bit
        else None,
    }
    folder = _local_folder(source, model_config.revision)
    if folder is not None:
        files: dict[str, Any] = {"model": _folder_fingerprint(folder, root)}
        base = adapter_base(str(folder))
        base_folder = None
        if base is not None:
            base_folder = _local_folder(check_model_source(base, "adapter base"), None)
            files["base"] = None if base_folder is None else _folder_fingerprint(base_folder, root)
        if base is None or base_folder is not None:
            return digest({"files": files, "settings": settings})
    if base_model is None:
        raise ValueError(
            f"cannot fingerprint model '{source}': no local files and no weights given"
        )
    return digest({"weights": weights_fingerprint(base_model), "settings": settings})


def _local_folder(source: str, revision: str | None) -> Path | None:
    path = Path(source)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(source, revision=revision, local_files_only=True)
    except Exception:  # not in the local hub cache: fall back to hashing the weights
        return None
    return Path(folder)


def _folder_fingerprint(folder: Path, root: Path | None) -> dict[str, str]:
    names = sorted(
        p.name for p in folder.iterdir() if p.suffix == ".safetensors" or p.name in _MODEL_FILES
    )
    return {name: file_sha256(folder / name, root) for name in names}


def weights_fingerprint(model: Any) -> str:
    """sha256 of a model's parameters and buffers, LoRA weights left out."""
    import torch

    hasher = hashlib.sha256()
    named = list(model.named_parameters()) + list(model.named_buffers())
    for name, tensor in sorted(named, key=lambda item: item[0]):
        if "lora_" in name:
            continue
        hasher.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        hasher.update(data.numpy().tobytes())
    return hasher.hexdigest()


def reference_key(
    model_id: str,
    tokenizer: Any,
    samples: Sequence[Any],
    settings: TokenizationSettings,
    precision: str,
) -> str:
    return digest(
        {
            "version": REFERENCE_VERSION,
            "model": model_id,
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "pairs": samples_fingerprint(samples),
            "count": len(samples),
            "settings": settings.fingerprint(),
            "precision": precision,
        }
    )
