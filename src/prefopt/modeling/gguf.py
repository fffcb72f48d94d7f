"""GGUF checkpoints as model sources: ``path/to/model.gguf`` (or ``org/repo/model.gguf`` on the
hub) is loaded through transformers' GGUF support, which de-quantizes the weights into an
ordinary torch model.

A GGUF source is written as one string, ``<folder or repo id>/<file>.gguf``, wherever prefopt
records a model (``model.name_or_path``, an adapter's base, a merge record), so every command
that loads it again (train, merge, eval, generate) finds the file without extra settings;
``model.gguf_file`` in YAML is folded into that form when the config is resolved.

What is saved from such a model (adapters, full fine-tunes, merged models) is an ordinary
safetensors folder that loads without GGUF: the weights are plain tensors after loading, and
:func:`drop_gguf_marker` removes the quantization marker that would make ``save_pretrained``
refuse them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path, PurePosixPath
from typing import Any

from prefopt.errors import UsageError

GGUF_SUFFIX = ".gguf"
INSTALL_HINT = "pip install gguf"


def is_gguf(source: str | Path | None) -> bool:
    """Whether ``source`` names a GGUF file (by its suffix; the file need not exist yet)."""
    return bool(source) and str(source).lower().endswith(GGUF_SUFFIX)


def split_gguf(source: str) -> tuple[str, str | None]:
    """``(folder or repo id, file name)`` of a GGUF source; ``(source, None)`` for any other."""
    if not is_gguf(source):
        return source, None
    path = Path(source).expanduser()
    if path.exists() or source.startswith((".", "/", "~")):
        return str(path.parent), path.name
    repo, _, name = str(PurePosixPath(source)).rpartition("/")
    return repo, name


def pretrained_arguments(source: str) -> tuple[str, dict[str, Any]]:
    """What ``from_pretrained`` takes for ``source``: the location and, for a GGUF source,
    ``gguf_file`` (after checking that the ``gguf`` package is installed)."""
    location, name = split_gguf(source)
    if name is None:
        return source, {}
    require_gguf(source)
    return location, {"gguf_file": name}


def require_gguf(source: str) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise UsageError(
            f"{source}: loading a GGUF checkpoint needs the 'gguf' package ({INSTALL_HINT})"
        )


def gguf_load_error(source: str, exc: BaseException) -> UsageError:
    """A one-line error for a GGUF file transformers cannot load (architecture or
    quantization type it does not support, or a damaged file)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UsageError(f"cannot load GGUF checkpoint {source}: {text}")


def drop_gguf_marker(model: Any) -> Any:
    """Make a model loaded from GGUF saveable: its weights are already de-quantized plain
    tensors, only the ``quantization_config`` marker (and the quantizer object) remain."""
    config: Any = getattr(model, "config", None)
    quantization = getattr(config, "quantization_config", None)
    method = getattr(quantization, "quant_method", None)
    if quantization is None or str(getattr(method, "value", method)) != "gguf":
        return model
    del config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    if hasattr(model, "quantization_method"):
        model.quantization_method = None
    return model
