"""Where prefopt keeps what it computes once and reuses: the cache folder.

``$PREFOPT_CACHE_DIR`` if set, else the user cache dir (``~/.cache/prefopt`` on Linux). It
holds the tokenization and reference log-prob caches, converted models and small tables such as
the names of ``TrainingArguments`` (so config mistakes are reported without importing
transformers). At the bottom of the layering: every layer may need it.
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
