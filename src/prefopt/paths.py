"""Where prefopt keeps what it computes once and reuses (the cache folder), and where outputs go.

``$PREFOPT_CACHE_DIR`` if set, else the user cache dir (``~/.cache/prefopt`` on Linux). It
holds the tokenization and reference log-prob caches, converted models and small tables such as
the names of ``TrainingArguments`` (so config mistakes are reported without importing
transformers). At the bottom of the layering: every layer may need it.

Also where outputs go: the permissions an output renamed into place ends with
(:func:`as_if_created`: what a plain ``open()``/``mkdir()`` gives under the umask) and whether
an output folder can be written at all (:func:`write_problem`, asked before anything heavy
loads).
"""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """prefopt's cache folder: ``$PREFOPT_CACHE_DIR``, else the user cache dir."""
    env = os.environ.get("PREFOPT_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("prefopt"))


# -- outputs ---------------------------------------------------------------------------------
def current_umask() -> int:
    """The process's umask. Read from ``/proc/self/status`` where the system offers it (Linux),
    since the portable way (set a umask, restore the old one) briefly gives every other thread
    of the process a wrong one."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_mode(directory: bool = False) -> int:
    """The permission bits a plain ``open()`` (``directory``: ``mkdir()``) gives under the
    current umask: ``0o666 & ~umask`` for a file, ``0o777 & ~umask`` for a folder."""
    return (0o777 if directory else 0o666) & ~current_umask()


def as_if_created(path: str | os.PathLike[str], tree: bool = False) -> None:
    """Give ``path`` the permissions a plain ``open()``/``mkdir()`` would have given it under the
    current umask; with ``tree``, everything below it too (symlinks are left alone).

    For outputs written as temporaries and renamed into place: ``tempfile.mkstemp`` makes
    0600 files and ``mkdtemp`` 0700 folders, and safetensors writes its files 0600 as well, so
    without this a merged model or a run's adapter would be unreadable by the other users the
    umask lets read everything else. Call it before the rename, so the output never appears
    with the tighter permissions."""
    root = Path(path)
    file_mode, folder_mode = plain_mode(False), plain_mode(True)
    paths = [root]
    if tree and root.is_dir() and not root.is_symlink():
        paths += list(root.rglob("*"))
    for item in paths:
        if item.is_symlink():
            continue
        os.chmod(item, folder_mode if item.is_dir() else file_mode)


def write_problem(folder: str | os.PathLike[str]) -> str | None:
    """Why nothing can be written in ``folder`` (created first where it does not exist), or
    ``None`` when it can: a file where a folder is needed (``folder`` or a parent), or a place
    without write permission (a read-only file system, another user's folder). The nearest
    folder that exists is probed by creating and removing a small file in it: the answer of
    the file system itself, also where permission bits do not tell (root, ACLs, NFS)."""
    import tempfile

    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        handle, probe = tempfile.mkstemp(prefix=".prefopt-write-probe-", dir=existing)
    except OSError as exc:
        return f"{existing} is not writable ({(exc.strerror or str(exc)).lower()})"
    os.close(handle)
    os.unlink(probe)
    return None
