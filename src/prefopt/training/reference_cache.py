"""Persistent, content-addressed cache of reference log-probs.

Reference log-probs depend only on the reference weights, the token ids of the samples (pairs,
lists of responses or per-turn conversations, :mod:`prefopt.data.samples`; the tokenizer, the
data and the tokenization settings determine them) and the compute precision. So they are
computed once, in eval mode without gradients, and stored under
``<cache dir>/reference/<key>.npz``, ``key`` hashing all of that
(:mod:`prefopt.training.reference_keys`).

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

from prefopt.data.prep_cache import atomic_write_bytes, cache_root
from prefopt.data.samples import entry_shape, value_count
from prefopt.data.tokenize import TokenizationSettings
from prefopt.errors import ConfigError
from prefopt.training.reference_fill import ReferenceFill, every_process, gather_objects
from prefopt.training.reference_keys import model_fingerprint, reference_key
from prefopt.training.reference_pass import compute_reference_logps

log = logging.getLogger("prefopt")

MODES = ("auto", "online", "cached")


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
