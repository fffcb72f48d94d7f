"""Local data files for lm-evaluation-harness task YAMLs, named relative to the YAML itself.

The harness's own ``dataset_path: json`` with ``dataset_kwargs: {data_files: ...}`` hands the
paths to ``datasets.load_dataset``, which resolves them against the current folder, so a task
folder only works from where it was written. A task YAML that says::

    custom_dataset: !function prefopt.eval.harness_data.local_files
    dataset_kwargs:
      data_files: {validation: questions.jsonl}

gets its files from beside the YAML instead, from any folder, under ``prefopt eval harness`` and
the plain ``lm_eval --include_path`` alike (the harness passes every task's metadata, which
holds ``config_source``, the YAML's path, to ``custom_dataset``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Suffix -> the ``datasets`` packaged builder that reads it.
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def local_files(
    data_files: str | list[str] | dict[str, Any] | None = None,
    config_source: str | None = None,
    builder: str | None = None,
    **_metadata: Any,
) -> Any:
    """``datasets.DatasetDict`` of ``data_files`` (a path, list of paths or ``{split: path}``);
    relative paths are taken from the folder of ``config_source``. ``builder`` defaults to the
    one the files' suffix names (json for .jsonl/.json, csv, parquet)."""
    import datasets

    if not data_files:
        raise ValueError("custom_dataset local_files: dataset_kwargs needs data_files")
    base = Path(config_source).parent if config_source else Path.cwd()
    files = _resolve(data_files, base)
    if builder is None:
        suffixes = {Path(path).suffix.lower() for path in _paths(files)}
        names = {BUILDERS.get(suffix) for suffix in suffixes}
        if len(names) != 1 or None in names:
            raise ValueError(
                f"custom_dataset local_files: cannot tell the format of {sorted(suffixes)}; "
                "set dataset_kwargs.builder (json, csv or parquet)"
            )
        builder = names.pop()
    for path in _paths(files):
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such data file: {path}")
    return datasets.load_dataset(builder, data_files=files)


def _resolve(files: Any, base: Path) -> Any:
    if isinstance(files, dict):
        return {split: _resolve(value, base) for split, value in files.items()}
    if isinstance(files, list | tuple):
        return [_resolve(value, base) for value in files]
    path = Path(str(files)).expanduser()
    return str(path if path.is_absolute() else base / path)


def _paths(files: Any) -> list[str]:
    if isinstance(files, dict):
        return [path for value in files.values() for path in _paths(value)]
    if isinstance(files, list):
        return [path for value in files for path in _paths(value)]
    return [files]
