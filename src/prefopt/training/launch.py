"""``prefopt train ... --num-processes N``: relaunch one training run as N data-parallel processes.

The parent resolves the run config once (so a bad flag fails fast, with one line and exit code
2), then starts N copies of ``python -m prefopt train ALGO ...`` with the same config layers
(see :func:`child_arguments`) through PyTorch's elastic launcher, the machinery behind
``torchrun`` (and behind ``accelerate launch`` on GPUs). Each child finds
``RANK``/``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` in its environment;
accelerate (inside ``transformers.Trainer``) then sets up DDP with NCCL on GPUs and gloo on
CPUs. The parent's exit code is the first failing child's (2 for a usage error such as the
non-finite guard), else 0. A failing child leaves its one-line error in a folder the parent
names (``PREFOPT_WORKER_ERRORS``) instead of printing it, and the parent prints each distinct
line once: N workers hitting the same bad record give one line, not N.

Other launchers work as well because a child only reads the environment:
``accelerate launch --num_processes 4 -m prefopt train dpo ...`` (DeepSpeed, FSDP, multi-node:
see ``docs/distributed.md``) or ``torchrun --nproc-per-node 4 -m prefopt train dpo ...``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefopt.errors import UsageError

#: Environment variables that mark a process started by a distributed launcher.
LAUNCHER_VARIABLES = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", "ACCELERATE_PROCESS_ID")
#: Folder where workers of ``--num-processes`` leave their error line for the parent.
WORKER_ERRORS_VARIABLE = "PREFOPT_WORKER_ERRORS"


def world_size_from_env() -> int | None:
    """``WORLD_SIZE`` when this process was started by a distributed launcher, else ``None``."""
    if not any(name in os.environ for name in LAUNCHER_VARIABLES):
        return None
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return None


def is_main_process() -> bool:
    """Whether this is rank 0 (or a plain single process); rank 0 prints the summaries."""
    return os.environ.get("RANK", "0") in ("", "0")


def configure_cpu_workers() -> None:
    """In a launched worker on a machine without accelerators, make accelerate use gloo DDP.

    accelerate only treats ``LOCAL_RANK`` as data parallelism on CPUs when told to
    (``ACCELERATE_USE_CPU``, set by ``accelerate launch --cpu``); otherwise every ``torchrun``
    worker would silently train its own copy on the whole data.
    """
    if cpu_workers() and "ACCELERATE_USE_CPU" not in os.environ:
        os.environ["ACCELERATE_USE_CPU"] = "true"


def cpu_workers() -> bool:
    """Whether this is one of several launched workers on a machine without accelerators."""
    size = world_size_from_env()
    if size is None or size <= 1:
        return False
    import torch

    probe = getattr(torch, "accelerator", None)
    return not (probe.is_available() if probe is not None else torch.cuda.is_available())


def wants_launch(num_processes: int | None) -> bool:
    """Whether ``--num-processes`` asks this process to start the workers.

    Inside a launched worker (``torchrun``, ``accelerate launch``) the launcher already decided
    the world size: a matching ``--num-processes`` is accepted, a different one is an error.
    """
    if num_processes is None:
        return False
    if num_processes < 1:
        raise UsageError(f"--num-processes must be at least 1, got {num_processes}")
    launched = world_size_from_env()
    if launched is not None:
        if launched != num_processes:
            raise UsageError(
                f"--num-processes {num_processes} conflicts with the launcher's "
                f"WORLD_SIZE={launched}; drop --num-processes when using accelerate launch "
                "or torchrun"
            )
        return False
    return num_processes > 1


def child_arguments(
    algorithm: str,
    config_file: str | Path | None,
    flags: Mapping[str, Any],
    sets: list[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    debug: bool = False,
) -> list[str]:
    """The ``prefopt`` command line each worker runs: the parent's layers, re-resolved.

    The workers get the same config file and ``--set`` options; the command-line flags become
    ``--set key=<JSON value>`` placed before the user's own ``--set`` options, which keeps the
    precedence (flags < ``--set``). JSON is YAML, so every value reads back with its type.
    """
    arguments = ["--debug"] if debug else []
    arguments += ["train", algorithm]
    if config_file is not None:
        arguments += ["--config", str(config_file)]
    for key, value in flags.items():
        if value is not None:
            arguments += ["--set", f"{key}={json.dumps(value)}"]
    for assignment in sets:
        arguments += ["--set", assignment]
    if resume:
        arguments.append("--resume")
    if overwrite:
        arguments.append("--overwrite")
    if quiet:
        arguments.append("--quiet")
    return arguments


def launch(num_processes: int, arguments: list[str]) -> tuple[int, list[str]]:
    """Run ``prefopt ARGUMENTS`` as ``num_processes`` local workers; returns the exit code and
    the workers' distinct error lines (see :func:`worker_errors`)."""
    with tempfile.TemporaryDirectory(prefix="prefopt-worker-errors-") as folder:
        previous = os.environ.get(WORKER_ERRORS_VARIABLE)
        os.environ[WORKER_ERRORS_VARIABLE] = folder  # inherited by the workers
        try:
            code = _launch(num_processes, arguments)
        finally:
            if previous is None:
                os.environ.pop(WORKER_ERRORS_VARIABLE, None)
            else:
                os.environ[WORKER_ERRORS_VARIABLE] = previous
        return code, worker_errors(Path(folder), num_processes)


def _launch(num_processes: int, arguments: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the workers report their errors
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
    launch_config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=num_processes,
        run_id=f"prefopt-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.1,
    )
    try:
        elastic_launch(launch_config, sys.executable)("-m", "prefopt", *arguments)
    except ChildFailedError as exc:
        return child_exit_code(exc)
    return 0


def launched_worker() -> bool:
    """Whether this process is a worker that ``--num-processes`` started (:func:`launch`)."""
    return WORKER_ERRORS_VARIABLE in os.environ and "RANK" in os.environ


def leave_worker_error(message: str) -> bool:
    """In a worker of ``--num-processes``, leave ``message`` for the parent to print; whether
    it was left (False outside such a worker: print it yourself)."""
    folder, rank = os.environ.get(WORKER_ERRORS_VARIABLE), os.environ.get("RANK")
    if not folder or rank is None:
        return False
    try:
        (Path(folder) / f"rank-{int(rank):05d}.txt").write_text(message, encoding="utf-8")
    except (OSError, ValueError):
        return False
    return True


def worker_errors(folder: Path, workers: int) -> list[str]:
    """The distinct error lines the workers left in ``folder``, by first rank. A line every
    worker reported is given as is; one only some reported names them (``rank 1: ...``)."""
    ranks_of: dict[str, list[int]] = {}
    for path in sorted(folder.glob("rank-*.txt")):
        message = path.read_text(encoding="utf-8").strip()
        ranks_of.setdefault(message, []).append(int(path.stem.split("-", 1)[1]))
    lines = []
    for message, ranks in ranks_of.items():
        if len(ranks) == workers:
            lines.append(message)
        else:
            label = "rank" if len(ranks) == 1 else "ranks"
            lines.append(f"{label} {', '.join(map(str, ranks))}: {message}")
    return lines


def child_exit_code(exc: Any) -> int:
    """The exit code of the first worker (by rank) that failed on its own; 1 when none is
    recorded. Workers the launcher stopped after another one failed (SIGTERM) count only when
    no worker exited with a code of its own."""
    failures = getattr(exc, "failures", {}) or {}
    codes = [getattr(failures[rank], "exitcode", None) for rank in sorted(failures)]
    for code in codes:
        if isinstance(code, int) and code > 0:
            return code
    for code in codes:  # killed by a signal of its own (an abort), not the launcher's SIGTERM
        if isinstance(code, int) and code < 0 and code != -signal.SIGTERM:
            return 128 - code
    for code in codes:
        if isinstance(code, int) and code < 0:
            return 128 - code
    return 1
