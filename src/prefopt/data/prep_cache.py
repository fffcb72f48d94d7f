"""Fast preparation of preference data, and a cache so the second run starts at once.

Preparing a data file means: read and validate every record, render chat records, tokenize,
truncate. The result depends only on the file's bytes, the tokenizer, the tokenization
settings and what the algorithm validates (its name and extra columns), so it is stored
content-addressed under ``<cache dir>/prep/<key>.npz`` (cache dir: ``$PREFOPT_CACHE_DIR`` or
the user cache dir): one flat int32 token array with per-pair lengths, the extras, and the
tokenization report. A hit loads in well under a second for tens of thousands of pairs; an
entry that fails to load (truncated, corrupt, wrong version) is removed and the data prepared
again. Hub datasets (no local file to hash) are prepared without the cache.

The file hash itself is memoised per (path, size, mtime) in ``<cache dir>/file-hashes.json``,
so large files, and model weights for the reference cache, are hashed once.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import tempfile
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefopt.data.tokenize import (
    TokenizationReport,
    TokenizationSettings,
    TokenizedPair,
    tokenize_pairs,
)
from prefopt.paths import as_if_created
from prefopt.paths import default_cache_dir as default_cache_dir  # re-exported

log = logging.getLogger("prefopt")

#: Bump when the prepared format or the tokenization policy changes.
PREP_VERSION = 2
_HASH_MEMO = "file-hashes.json"
_READ_CHUNK = 1 << 22

Rows = list[tuple[int, dict[str, Any]]]


def cache_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``explicit``, else :func:`default_cache_dir`."""
    if explicit:
        return Path(explicit).expanduser()
    return default_cache_dir()


# -- fingerprints --------------------------------------------------------------------------
def digest(value: Any) -> str:
    """sha256 of a JSON-serialisable value (keys sorted)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | os.PathLike[str], root: Path | None = None) -> str:
    """sha256 of a file's bytes, memoised by (absolute path, size, mtime) under ``root``."""
    path = Path(path).resolve()
    stat = path.stat()
    stamp = [stat.st_size, stat.st_mtime_ns]
    memo_file = (root or cache_root()) / _HASH_MEMO
    memo = _read_memo(memo_file)
    entry = memo.get(str(path))
    if (
        isinstance(entry, dict)
        and entry.get("stamp") == stamp
        and isinstance(entry.get("sha256"), str)
    ):
        return str(entry["sha256"])
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            hasher.update(chunk)
    value = hasher.hexdigest()
    memo = _read_memo(memo_file)  # another process may have added entries meanwhile
    memo[str(path)] = {"stamp": stamp, "sha256": value}
    with contextlib.suppress(OSError):  # a read-only cache only costs the memo
        atomic_write_bytes(memo_file, json.dumps(memo).encode("utf-8"))
    return value


def _read_memo(memo_file: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(memo_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Identity of a tokenizer: its full serialisation (fast tokenizers) or vocabulary, special
    tokens and chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = (
        backend.to_str()
        if backend is not None
        else json.dumps(sorted(tokenizer.get_vocab().items()))
    )
    return digest(
        {
            "class": type(tokenizer).__name__,
            "body": hashlib.sha256(body.encode("utf-8")).hexdigest(),
            "special": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
            "chat_template": getattr(tokenizer, "chat_template", None),
            "eos": tokenizer.eos_token_id,
            "bos": tokenizer.bos_token_id,
        }
    )


def pairs_fingerprint(pairs: Sequence[TokenizedPair]) -> str:
    """sha256 of the token ids of ``pairs`` (in order): what reference log-probs depend on."""
    hasher = hashlib.sha256()
    for pair in pairs:
        hasher.update(
            array(
                "i", (len(pair.prompt_ids), len(pair.chosen_ids), len(pair.rejected_ids))
            ).tobytes()
        )
        hasher.update(array("i", pair.prompt_ids).tobytes())
        hasher.update(array("i", pair.chosen_ids).tobytes())
        hasher.update(array("i", pair.rejected_ids).tobytes())
    return hasher.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (a temporary file renamed into place),
    with the permissions a plain ``open()`` gives under the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        as_if_created(temporary)  # mkstemp makes 0600
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


# -- storage -------------------------------------------------------------------------------
def save_prepared(
    path: Path,
    pairs: Sequence[TokenizedPair],
    report: TokenizationReport,
    extra_columns: Sequence[str],
) -> None:
    """Write prepared pairs to ``path`` (``.npz``) atomically."""
    import io

    import numpy as np

    lengths = np.array(
        [(len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)) for p in pairs], dtype=np.int32
    ).reshape(-1, 3)
    flat = array("i")
    for pair in pairs:
        flat.extend(pair.prompt_ids)
        flat.extend(pair.chosen_ids)
        flat.extend(pair.rejected_ids)
    extras = np.array(
        [[pair.extras[name] for name in extra_columns] for pair in pairs], dtype=np.float64
    ).reshape(len(pairs), len(extra_columns))
    meta = {
        "version": PREP_VERSION,
        "extra_columns": list(extra_columns),
        "report": vars(report),
    }
    buffer = io.BytesIO()
    np.savez(
        buffer,
        tokens=np.frombuffer(flat, dtype=np.int32) if len(flat) else np.zeros(0, np.int32),
        lengths=lengths,
        extras=extras,
        meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
    )
    atomic_write_bytes(path, buffer.getvalue())


def load_prepared(path: Path) -> tuple[list[TokenizedPair], TokenizationReport]:
    """Read what :func:`save_prepared` wrote; raises ``ValueError`` when it is unusable."""
    import zipfile

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode("utf-8"))
            tokens = data["tokens"].tolist()
            lengths = data["lengths"].tolist()
            extras = data["extras"].tolist()
    except (OSError, KeyError, zipfile.BadZipFile, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(f"unreadable ({type(exc).__name__}: {exc})") from None
    if meta.get("version") != PREP_VERSION:
        raise ValueError(f"version {meta.get('version')} != {PREP_VERSION}")
    if sum(sum(row) for row in lengths) != len(tokens) or len(extras) != len(lengths):
        raise ValueError("token and length arrays disagree")
    names = meta["extra_columns"]
    pairs = []
    start = 0
    # Tens of thousands of new lists would set off full collections that find nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for (prompt, chosen, rejected), values in zip(lengths, extras, strict=True):
            middle, end = start + prompt, start + prompt + chosen
            stop = end + rejected
            named = dict(zip(names, values, strict=True))
            pairs.append(
                TokenizedPair(tokens[start:middle], tokens[middle:end], tokens[end:stop], named)
            )
            start = stop
    finally:
        if collecting:
            gc.enable()
    return pairs, TokenizationReport(**meta["report"])


# -- preparation ---------------------------------------------------------------------------
def prepare_pairs(
    source: str,
    split: str,
    tokenizer: Any,
    settings: TokenizationSettings,
    extra_columns: Sequence[str],
    read_rows: Callable[[], Rows],
    validation: str = "",
    use_cache: bool = True,
    root: str | os.PathLike[str] | None = None,
) -> tuple[list[TokenizedPair], TokenizationReport, bool]:
    """Prepared pairs of ``source``: from the cache when possible, else read, tokenize, store.

    ``read_rows`` reads and validates the records (it raises on bad data, so nothing bad is
    ever cached); ``validation`` names what it checks beyond the record format (e.g. the
    algorithm), since it is part of the key. Returns ``(pairs, report, cache_hit)``.
    """
    path = Path(source)
    entry: Path | None = None
    if use_cache and path.is_file():
        base = cache_root(root)
        try:
            key = digest(
                {
                    "version": PREP_VERSION,
                    "data": file_sha256(path, base),
                    "split": split,
                    "tokenizer": tokenizer_fingerprint(tokenizer),
                    "settings": settings.fingerprint(),
                    "extra_columns": list(extra_columns),
                    "validation": validation,
                }
            )
        except OSError as exc:
            log.warning("prep cache unavailable (%s); preparing %s without it", exc, source)
        else:
            entry = base / "prep" / f"{key}.npz"
            if entry.is_file():
                try:
                    pairs, report = load_prepared(entry)
                    return pairs, report, True
                except ValueError as exc:
                    log.warning("prep cache entry %s is unusable (%s); preparing again", entry, exc)
                    entry.unlink(missing_ok=True)
    pairs, report = tokenize_pairs(read_rows(), tokenizer, settings, extra_columns, source)
    if entry is not None and pairs:
        try:
            save_prepared(entry, pairs, report, extra_columns)
        except OSError as exc:
            log.warning("could not write prep cache entry %s: %s", entry, exc)
    return pairs, report, False
