"""Persistent, content-addressed cache of reference log-probs.

Reference log-probs depend only on the reference weights, the token ids of the samples (pairs,
lists of responses or per-turn conversations, :mod:`prefopt.data.samples`; the tokenizer, the
data and the tokenization settings determine them) and the compute precision. So
they are computed once, in eval mode without gradients, and stored under
``<cache dir>/reference/<key>.npz`` where ``key`` hashes

- the model's identity: sha256 of its safetensors files and ``config.json`` (memoised per file,
  so a large model is hashed once), the recorded base of an adapter folder, the load settings
  (dtype, 4-bit); the in-memory weights when no local files can be found;
- the tokenizer's fingerprint and the sha256 of every sample's token ids, in order;
- the tokenization settings and the precision (bf16 autocast or fp32).

Epochs, resumed runs and every job of a sweep over the same model and data reuse the entry. An
entry that does not load, has the wrong shape or fails its checksum is reported, removed and
computed again.

``reference.mode``: ``online`` recomputes reference log-probs in every step; ``cached`` fills
a missing entry with a separate pass when training begins, every process scoring its share
(:mod:`prefopt.training.reference_pass`; a full fine-tuning run then drops its frozen copy);
``auto`` reads an existing entry, and otherwise computes the reference online in the first
epoch and fills the entry from those very values
(:mod:`prefopt.training.reference_fill`): same batches, same numerics, so step 0's loss is
ln 2 under bf16 too, and a run shorter than an epoch pays for nothing it does not use.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefopt.data.prep_cache import (
    atomic_write_bytes,
    cache_root,
    digest,
    file_sha256,
    tokenizer_fingerprint,
)
from prefopt.data.samples import entry_shape, samples_fingerprint, value_count
from prefopt.data.tokenize import TokenizationSettings
from prefopt.errors import ConfigError
from prefopt.training.reference_fill import ReferenceFill, every_process, gather_objects
from prefopt.training.reference_pass import compute_reference_logps

log = logging.getLogger("prefopt")

REFERENCE_VERSION = 1
MODES = ("auto", "online", "cached")
_MODEL_FILES = ("config.json", "adapter_config.json")


# -- keys ----------------------------------------------------------------------------------
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


# -- storage -------------------------------------------------------------------------------
class ReferenceCache:
    """float64 arrays of reference log-probs, by key: ``(N, 2)`` (chosen, rejected) for pairs,
    every sample's values in a row for lists and conversations
    (:func:`prefopt.data.samples.entry_shape`)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.folder = cache_root(root) / "reference"

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def load(self, key: str, shape: tuple[int, ...]) -> Any:
        """The stored array, or ``None`` when absent, of another ``shape`` or unusable (then
        removed)."""
        import numpy as np

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                values = np.array(data["logps"], dtype=np.float64)
                meta = json.loads(bytes(data["meta"]).decode("utf-8"))
            problem = None
            if values.shape != tuple(shape):
                problem = f"shape {values.shape}, expected {tuple(shape)}"
            elif meta.get("key") != key or meta.get("sha256") != _checksum(values):
                problem = "checksum mismatch"
            elif not np.isfinite(values).all():
                problem = "non-finite values"
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            problem = f"unreadable ({type(exc).__name__})"
        if problem is None:
            return values
        log.warning("reference cache entry %s is stale or corrupt (%s); recomputing", path, problem)
        path.unlink(missing_ok=True)
        return None

    def save(self, key: str, values: Any, meta: dict[str, Any] | None = None) -> Path:
        import numpy as np

        values = np.ascontiguousarray(values, dtype=np.float64)
        info = {**(meta or {}), "key": key, "sha256": _checksum(values), "created": time.time()}
        buffer = io.BytesIO()
        np.savez(
            buffer,
            logps=values,
            meta=np.frombuffer(json.dumps(info).encode("utf-8"), dtype=np.uint8),
        )
        path = self.path(key)
        atomic_write_bytes(path, buffer.getvalue())
        return path


def _checksum(values: Any) -> str:
    return hashlib.sha256(values.tobytes()).hexdigest()


def attach(samples: Sequence[Any], values: Any) -> None:
    """Give each sample its values from an entry of ``samples`` (in order)."""
    flat = values.reshape(-1).tolist()
    start = 0
    for sample in samples:
        end = start + value_count(sample)
        sample.reference = tuple(flat[start:end])
        start = end


# -- run wiring ----------------------------------------------------------------------------
def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"reference.mode must be one of {', '.join(MODES)}, got '{mode}'")
    return mode


def reference_plan(mode: str, entry_exists: bool) -> str:
    """What ``mode`` means for a run whose training entry exists or not: ``online`` (no cache),
    ``attach`` (read the entries, computing missing ones in a separate pass) or ``fill`` (the
    first epoch's online reference fills the entry)."""
    if check_mode(mode) == "online":
        return "online"
    if mode == "cached" or entry_exists:
        return "attach"
    return "fill"


@dataclass
class MissingEntries:
    """Cache entries a ``cached`` run scores when training begins (:func:`score_missing`)."""

    cache: ReferenceCache
    keys: dict[str, str]
    precision: str


@dataclass
class ReferencePlan:
    """How a run gets its reference log-probs: ``attached`` when every pair carries cached
    values (the reference model can go), ``fill`` to hand to the trainer when the first epoch
    fills the training entry, ``missing`` entries to score when training begins."""

    attached: bool = False
    fill: ReferenceFill | None = None
    missing: MissingEntries | None = None


def provide(
    datasets: dict[str, list[Any]],
    mode: str,
    *,
    model_id: Callable[[], str],
    tokenizer: Any,
    settings: TokenizationSettings,
    args: Any,
    root: str | Path | None = None,
) -> ReferencePlan:
    """Attach cached reference log-probs to the samples of ``datasets`` as ``mode`` asks
    (:func:`reference_plan`); plan to fill the training entry from the first epoch, or name the
    entries to score when training begins."""
    if check_mode(mode) == "online" or not datasets.get("train"):
        return ReferencePlan()
    cache = ReferenceCache(root)
    precision = "bf16" if args.bf16 else ("fp16" if args.fp16 else "fp32")
    identity = model_id()
    keys = {
        name: reference_key(identity, tokenizer, samples, settings, precision)
        for name, samples in datasets.items()
    }
    # every process must take the same plan, also when only some machines hold the entry
    plan = reference_plan(mode, every_process(cache.path(keys["train"]).is_file()))
    if plan == "fill":
        return ReferencePlan(fill=_fill_plan(datasets, cache, keys, precision, args))
    missing = {
        name: keys[name]
        for name, samples in datasets.items()
        if not attach_entry(cache, keys[name], samples)
    }
    if not missing:
        return ReferencePlan(attached=True)
    return ReferencePlan(missing=MissingEntries(cache, missing, precision))


def score_missing(
    missing: MissingEntries,
    datasets: dict[str, list[Any]],
    logps_fn: Callable[[dict[str, Any]], Any],
    collator: Callable[[Sequence[Any]], dict[str, Any]],
    args: Any,
    quiet: bool = False,
) -> float:
    """Score the missing entries on every process (:mod:`prefopt.training.reference_pass`),
    attach them to the samples and store them (one process of each machine writes); returns the
    seconds it took. The entry's ``scored_by`` says how many samples each process scored."""
    started = time.perf_counter()
    for name, key in missing.keys.items():
        samples = datasets[name]
        shares: list[int] = []
        gather = functools.partial(_gather_counting, shares)
        values = compute_reference_logps(
            samples,
            logps_fn,
            collator,
            args.per_device_eval_batch_size,
            args.device,
            bf16=args.bf16,
            progress=not quiet and args.process_index == 0,
            label=f"reference log-probs ({name})",
            gather=gather,
            rank=args.process_index,
            world_size=args.world_size,
        )
        attach(samples, values)
        if args.local_process_index != 0:
            continue
        meta = {"samples": len(samples), "precision": missing.precision, "scored_by": shares}
        path = store_entry(missing.cache, key, values, meta)
        if path is not None:
            log.info("reference log-probs of %d %s samples cached in %s", len(samples), name,
                     path)  # fmt: skip
    return time.perf_counter() - started


def _gather_counting(shares: list[int], values: dict[int, tuple[float, ...]]) -> list[Any]:
    """Every process's values (:func:`gather_objects`), noting how many each one scored."""
    parts: list[Any] = gather_objects(values)
    shares.extend(len(part) for part in parts)
    return parts


def _fill_plan(
    datasets: dict[str, list[Any]],
    cache: ReferenceCache,
    keys: dict[str, str],
    precision: str,
    args: Any,
) -> ReferenceFill:
    """The recorder that fills the training entry from the first epoch; an existing eval
    entry is attached now (else evaluation runs the reference online)."""
    train = datasets["train"]

    def store(values: Any) -> None:
        values = values.reshape(entry_shape(train))
        attach(train, values)  # this run reads them from here on, stored or not
        if args.local_process_index != 0:  # one process of each machine writes the entry
            return
        meta = {"samples": len(train), "precision": precision, "filled_from": "training"}
        store_entry(cache, keys["train"], values, meta)

    if "eval" in datasets:  # an existing entry serves; else evaluation runs online
        attach_entry(cache, keys["eval"], datasets["eval"])
    return ReferenceFill([value_count(sample) for sample in train], store)


def attach_entry(cache: ReferenceCache, key: str, samples: list[Any]) -> bool:
    """Attach the stored entry ``key`` to ``samples`` when every process holds it (a reference
    that is sharded, or a pass that is collective, runs on every process or on none)."""
    values = cache.load(key, entry_shape(samples))
    if not every_process(values is not None):
        return False
    attach(samples, values)
    return True


def store_entry(cache: ReferenceCache, key: str, values: Any, meta: dict[str, Any]) -> Path | None:
    """Save an entry; a cache that cannot hold it (a full disk) costs a warning, not the run."""
    try:
        return cache.save(key, values, meta)
    except OSError as exc:
        log.warning("reference log-probs not cached (%s): %s", cache.folder, exc)
        return None


def provide_for_run(
    trainer: Any,
    config: Any,
    datasets: dict[str, list[Any]],
    base: Any,
    mode: str,
) -> ReferencePlan:
    """:func:`provide` for a built trainer: its tokenizer and arguments; ``base`` holds the
    reference weights (fingerprinted when no local files name them)."""
    return provide(
        datasets,
        mode,
        model_id=lambda: model_fingerprint(
            config.model, base, cache_root(config.reference.cache_dir), _loaded_dtype(base)
        ),
        tokenizer=trainer.processing_class,
        settings=TokenizationSettings(config.data.max_length, config.data.max_prompt_length),
        args=trainer.args,
        root=config.reference.cache_dir,
    )


def _loaded_dtype(model: Any) -> str | None:
    """The dtype ``model``'s weights were loaded in: its first parameter's (the embedding,
    which no later cast touches); ``None`` for a model without parameters."""
    first = next(iter(model.parameters()), None)
    return None if first is None else str(first.dtype).removeprefix("torch.")
