"""Resumable JSONL outputs for long jobs (generation, judging).

While a job runs, each finished item is appended to ``<out>.partial`` and flushed, and the
job's settings sit in ``<out>.partial.json``. Run the same command again after a crash, an
interrupt or a failing endpoint and the items already in the partial file are skipped. When
every item is done the final file is written atomically in input order and the partial files
are removed, so ``<out>`` itself is always whole or absent. A partial file started with other
settings is refused rather than mixed in (``--restart`` discards it).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import orjson

from prefopt.errors import UsageError


class ResumableJsonl:
    """Append-as-you-go JSONL keyed by ``key_field``; thread-safe ``append``."""

    def __init__(
        self,
        out: str | Path,
        settings: dict[str, Any],
        key_field: str = "key",
        force: bool = False,
        restart: bool = False,
    ) -> None:
        self.out = Path(out)
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.meta = self.out.with_name(self.out.name + ".partial.json")
        self.settings = json.loads(json.dumps(settings, default=str))
        self.key_field = key_field
        self.done: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._handle: IO[bytes] | None = None
        if self.out.is_dir():
            raise UsageError(f"{self.out} is a folder; give an output file name")
        if self.out.exists() and not force:
            raise UsageError(f"{self.out} already exists; pass --force to overwrite it")
        if restart:
            self.discard()
        self._load()

    def _load(self) -> None:
        if not self.partial.exists():
            return
        previous = None
        if self.meta.is_file():
            try:
                previous = json.loads(self.meta.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                previous = None
        if previous != self.settings:
            changed = _differences(previous or {}, self.settings)
            raise UsageError(
                f"{self.partial} was started with other settings ({changed}); "
                "run with the same settings to resume, or pass --restart to start over"
            )
        with self.partial.open("rb") as handle:
            for raw in handle:
                try:
                    row = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue  # the last line of a killed run may be cut short
                if isinstance(row, dict) and self.key_field in row:
                    self.done[str(row[self.key_field])] = row

    def __enter__(self) -> ResumableJsonl:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.meta.write_text(json.dumps(self.settings, indent=2) + "\n", encoding="utf-8")
        if self.partial.exists() and self.done:
            self._rewrite_clean()
        self._handle = self.partial.open("ab")
        return self

    def _rewrite_clean(self) -> None:
        """Drop a cut-short last line before appending after it."""
        tmp = self.partial.with_name(self.partial.name + ".tmp")
        with tmp.open("wb") as handle:
            for row in self.done.values():
                handle.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
        tmp.replace(self.partial)

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __contains__(self, key: object) -> bool:
        return str(key) in self.done

    def append(self, row: dict[str, Any]) -> None:
        data = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
        with self._lock:
            assert self._handle is not None, "use ResumableJsonl as a context manager"
            self._handle.write(data)
            self._handle.flush()
            self.done[str(row[self.key_field])] = row

    def finish(self, keys: Iterable[str], force: bool = False) -> Path:
        """Write the rows of ``keys`` (all must be done), in that order, to ``out``; clean up."""
        from prefopt.data.writing import write_jsonl

        if self._handle is not None:
            self._handle.close()
            self._handle = None
        rows = [self.done[str(key)] for key in keys]
        write_jsonl(self.out, rows, force=force)
        self.discard()
        return self.out

    def discard(self) -> None:
        for path in (self.partial, self.meta):
            if path.exists():
                path.unlink()


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(changed[:3]) or "settings file missing"
