"""How many CPU threads torch may use, picked on purpose rather than left to its default.

Torch's default intra-op pool has one thread per core. On a machine where other processes
already keep cores busy, those threads fight them for time slices and every matmul waits on
the slowest one: with one busy process on 2 cores a matmul loop took 21-31 s at the default
against 0.68 s with one thread. So, unless told otherwise, prefopt uses the CPUs this process
may run on minus the ones the current load already occupies, and at least one.

The 1-minute load average lags: for about a minute after a busy process ends it still counts
it (0.7 after a 3-second job). Where Linux says how many tasks are runnable at this instant
(``/proc/loadavg``), a core counts as busy only if both agree, so a command started right
after another one finished still gets the cores that are free now.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefopt.errors import UsageError

#: An explicit thread count (``prefopt --threads N`` sets it); wins over the load-based default.
THREADS_VARIABLE = "PREFOPT_THREADS"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS/Windows have no affinity call
        return max(1, os.cpu_count() or 1)


def current_load() -> float:
    """The 1-minute load average (runnable processes), 0 where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return 0.0


def others_running(loadavg: str | Path = "/proc/loadavg") -> int | None:
    """Tasks runnable at this instant other than the caller (the ``R`` of ``R/T`` in
    ``/proc/loadavg``, which counts the reading thread itself), None where there is no such
    file."""
    try:
        running = Path(loadavg).read_text().split()[3].split("/")[0]
        return max(0, int(running) - 1)
    except (OSError, IndexError, ValueError):
        return None


def parse_threads(value: str | int) -> int:
    """An explicit thread count: a positive integer, else a usage error naming the source."""
    try:
        threads = int(value)
    except (TypeError, ValueError):
        threads = 0
    if threads < 1:
        raise UsageError(f"{THREADS_VARIABLE} / --threads: a positive integer, got '{value}'")
    return threads


def choose_threads(
    explicit: str | int | None = None,
    cpus: int | None = None,
    load: float | None = None,
    running: int | None = None,
) -> int:
    """torch intra-op threads: ``explicit`` when given, else ``$PREFOPT_THREADS``, else
    ``$OMP_NUM_THREADS`` (what torch itself honours; data-parallel workers get it from their
    launcher), otherwise the available CPUs minus the busy ones, at least 1. Busy: the
    rounded load average, or the other tasks ``running`` now when that is fewer (read from
    ``/proc/loadavg`` when neither ``load`` nor ``running`` is given).

    >>> choose_threads(cpus=2, load=1.0)   # one other busy process on 2 cores
    1
    >>> choose_threads(cpus=16, load=3.4)
    13
    >>> choose_threads(cpus=2, load=0.7, running=0)   # the load of a job that just ended
    2
    """
    if explicit is None or explicit == "":
        explicit = os.environ.get(THREADS_VARIABLE) or None
    if explicit is not None:
        return parse_threads(explicit)
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    cpus = available_cpus() if cpus is None else cpus
    if load is None:
        load = current_load()
        running = others_running() if running is None else running
    busy = int(load + 0.5)
    if running is not None:
        busy = min(busy, running)
    return max(1, cpus - busy)


def apply_threads(explicit: str | int | None = None) -> int:
    """Set torch's intra-op threads once for this process and return the count.

    The Rust tokenizers' own thread pool stays off (``TOKENIZERS_PARALLELISM=false``) so its
    threads do not compete with torch's, and is bounded to the same count
    (``RAYON_NUM_THREADS``) if a user turns it on; a user's own settings are kept.
    ``OMP_NUM_THREADS`` is left alone: the data-parallel launcher divides the CPUs among its
    workers through it.
    """
    threads = choose_threads(explicit)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
