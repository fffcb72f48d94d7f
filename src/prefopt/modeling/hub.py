"""Fail fast when a hub id can be neither found in the local cache nor downloaded.

Without a network, transformers retries each file for tens of seconds and prints a page of
warnings before its error; a user who typed a hub id on an offline machine gets one line instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefopt.errors import UsageError


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _in_hub_cache(name: str, revision: str | None) -> bool:
    """Whether ``name`` (a hub id) has a config in the local hub cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception:  # a malformed id: leave the error to transformers
        return False
    return isinstance(cached, str)


def hub_reachable(timeout: float = 2.5) -> bool:
    """Whether a TCP connection to the hub endpoint (or the HTTPS proxy) opens within
    ``timeout`` seconds, name resolution included."""
    import socket
    import threading
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    proxy = next(
        (
            os.environ[name]
            for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
            if os.environ.get(name)
        ),
        None,
    )
    url = proxy or constants.ENDPOINT
    target = urlsplit(url if "://" in url else f"http://{url}")
    host = target.hostname or "huggingface.co"
    port = target.port or (443 if target.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    worker.start()
    worker.join(timeout + 0.5)
    return bool(result and result[0])


def check_hub_dataset(name: str) -> None:
    """Fail fast, in one line, when hub dataset ``name`` would have to be downloaded and the
    hub cannot be reached (``datasets`` retries for tens of seconds first). Offline mode
    (``HF_HUB_OFFLINE=1``) reads ``datasets``' cache and is left to it."""
    if Path(name).expanduser().exists() or _hub_offline():
        return
    if not hub_reachable():
        from huggingface_hub import constants

        raise UsageError(
            f"no such file: {name}, and the Hugging Face hub ({constants.ENDPOINT}) cannot be "
            "reached to download it as a dataset; check the path or the network (set "
            "HF_HUB_OFFLINE=1 to read a dataset cached earlier without trying the network)"
        )


def check_hub_source(name: str, revision: str | None = None, what: str = "model") -> None:
    """Fail fast, in one line, when ``name`` is a hub id that is neither cached nor reachable
    (instead of transformers' retries, tens of seconds and a page of warnings)."""
    if Path(name).expanduser().exists() or _hub_offline() or _in_hub_cache(name, revision):
        return
    if not hub_reachable():
        from huggingface_hub import constants

        raise UsageError(
            f"cannot reach the Hugging Face hub ({constants.ENDPOINT}) to download {what} "
            f"'{name}', and it is not in the local cache; check the network, or pass a local "
            "folder (set HF_HUB_OFFLINE=1 to use only cached models without trying the network)"
        )
