"""Checkpoints that are whole or absent.

The Trainer writes ``checkpoint-<step>`` file by file (model, optimizer, scheduler, RNG
states, ``trainer_state.json``), so a process killed mid-save used to leave a folder that
looked like a checkpoint but was not one. prefopt's trainer has the Trainer write each
checkpoint into ``tmp-checkpoint-<step>/checkpoint-<step>`` in the run folder instead and,
once every process has written its part, renames it to ``checkpoint-<step>``: a rename on
one file system is atomic, so ``checkpoint-<step>`` is either complete or not there. The
``tmp-`` name keeps the staging folder out of the Trainer's ``checkpoint-*`` globs (rotation,
``get_last_checkpoint``); one left by a killed run is removed when the next run starts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from prefopt.paths import as_if_created

log = logging.getLogger("prefopt")

#: Prefix of the folder a checkpoint is written into before it is renamed into place.
STAGING_PREFIX = "tmp-"
CHECKPOINT_PREFIX = "checkpoint-"
_noticed: set[Path] = set()  # incomplete folders already named in this process


def staging_folder(run_dir: str | os.PathLike[str], step: int) -> Path:
    """The folder that stands in for the run folder while ``checkpoint-<step>`` is written."""
    return Path(run_dir) / f"{STAGING_PREFIX}{CHECKPOINT_PREFIX}{step}"


def publish_checkpoint(staging: Path, run_dir: str | os.PathLike[str]) -> Path:
    """Move the checkpoint written under ``staging`` into ``run_dir`` under its own name and
    remove ``staging``; returns the checkpoint's final path.

    A folder of the same name already there (a save cut short by an older prefopt, or a step
    saved twice) is first renamed into ``staging``, so the new checkpoint still arrives in one
    rename and the old one is deleted only after it."""
    written = [child for child in staging.iterdir() if child.name.startswith(CHECKPOINT_PREFIX)]
    if len(written) != 1:
        raise RuntimeError(f"{staging}: expected one {CHECKPOINT_PREFIX}<step> folder inside")
    final = Path(run_dir) / written[0].name
    as_if_created(written[0], tree=True)  # safetensors writes 0600 files; the rest has umask's
    if final.exists():
        os.replace(final, staging / "replaced")
    os.replace(written[0], final)
    shutil.rmtree(staging, ignore_errors=True)
    return final


def remove_stale_staging(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete the staging folders a killed run left in ``run_dir``; returns what was removed."""
    folder = Path(run_dir)
    if not folder.is_dir():
        return []
    stale = sorted(folder.glob(f"{STAGING_PREFIX}{CHECKPOINT_PREFIX}*"))
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete ``checkpoint-<step>`` folder in ``output_dir``, or ``None``.

    Checkpoints arrive whole (see the module docstring); a ``checkpoint-<step>`` without a
    readable ``trainer_state.json`` (the Trainer's last file) is a save an older prefopt cut
    short: it is skipped, with a notice the first time it is seen."""
    if not output_dir.is_dir():
        return None
    steps = []
    for child in output_dir.iterdir():
        number = child.name.removeprefix(CHECKPOINT_PREFIX)
        if child.is_dir() and child.name.startswith(CHECKPOINT_PREFIX) and number.isdigit():
            steps.append((int(number), child))
    for _, folder in sorted(steps, reverse=True):
        if _complete(folder):
            return folder
        if folder not in _noticed:
            _noticed.add(folder)
            log.warning("%s is incomplete (no readable trainer_state.json): skipped", folder)
    return None


def _complete(folder: Path) -> bool:
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True
