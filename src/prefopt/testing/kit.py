"""Helpers for tests of prefopt and of plugins: the CLI in a subprocess, preference batches
from plain lists, one real training step, and installed-looking fake distributions."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prefopt.testing.world import synthetic_pairs, write_pairs


# -- CLI -----------------------------------------------------------------------------------
def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> tuple[int, str, str]:
    """Run ``python -m prefopt ARGS`` in a subprocess; returns ``(exit code, stdout, stderr)``.

    The subprocess gets a wide terminal (no wrapped tables) and ``HF_HUB_OFFLINE=1``.
    """
    import subprocess
    import sys

    full_env = dict(os.environ, COLUMNS="200", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "prefopt", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr


# -- plugin authors ------------------------------------------------------------------------
def make_batch(
    policy_chosen: Iterable[float],
    policy_rejected: Iterable[float],
    reference_chosen: Iterable[float] | None = None,
    reference_rejected: Iterable[float] | None = None,
    *,
    chosen_lengths: Iterable[int] | None = None,
    rejected_lengths: Iterable[int] | None = None,
    extras: dict[str, Iterable[float]] | None = None,
    requires_grad: bool = False,
    dtype: Any = None,
) -> Any:
    """A :class:`prefopt.api.PreferenceBatch` from plain lists, for unit-testing a loss.

    Reference log-probs left out are ``None`` (as for a reference-free algorithm); lengths
    default to 1 token. ``requires_grad`` makes the policy log-probs leaves to differentiate
    against. ``dtype`` defaults to float64 so hand-computed values compare tightly.
    """
    import torch

    from prefopt.api import PreferenceBatch

    dtype = dtype or torch.float64

    def tensor(values: Iterable[float], grad: bool = False) -> Any:
        return torch.tensor(list(values), dtype=dtype, requires_grad=grad)

    chosen = tensor(policy_chosen, requires_grad)
    rejected = tensor(policy_rejected, requires_grad)
    size = chosen.shape[0]
    ones = [1] * size
    return PreferenceBatch(
        policy_chosen_logps=chosen,
        policy_rejected_logps=rejected,
        reference_chosen_logps=None if reference_chosen is None else tensor(reference_chosen),
        reference_rejected_logps=None if reference_rejected is None else tensor(reference_rejected),
        chosen_lengths=torch.tensor(
            ones if chosen_lengths is None else list(chosen_lengths), dtype=torch.long
        ),
        rejected_lengths=torch.tensor(
            ones if rejected_lengths is None else list(rejected_lengths), dtype=torch.long
        ),
        extras={name: tensor(values) for name, values in (extras or {}).items()},
    )


def train_one_step(
    spec_or_name: Any,
    model_dir: str | Path,
    tmp_dir: str | Path,
    *,
    rows: list[dict[str, Any]] | None = None,
    pairs: int = 4,
    steps: int = 1,
    sets: Iterable[str] = (),
    **algorithm_config: Any,
) -> dict[str, Any]:
    """Run a loss through a real training of the tiny model; return the first logged metrics.

    ``spec_or_name`` is an :class:`~prefopt.api.AlgorithmSpec` (no installation needed) or the
    name of a registered algorithm. Trains ``steps`` optimizer steps (LoRA, batches of
    ``pairs``, logging every step, no checkpoints) in ``tmp_dir/run`` on ``rows`` or synthetic
    pairs carrying ``h_w``/``h_l``; ``algorithm_config`` sets fields of the algorithm's config
    (``beta=0.5``), ``sets`` any other key (``"training.save_strategy=steps"``). Returns the
    first line of ``metrics.jsonl`` (``loss``, ``grad_norm``, ``rewards/*``, your metrics).
    Bad config values raise :class:`prefopt.errors.ConfigError`, as on the command line.
    prefopt's caches go to ``tmp_dir/cache`` unless ``$PREFOPT_CACHE_DIR`` is set.
    """
    from prefopt.api import AlgorithmSpec
    from prefopt.cli.common import quiet_libraries
    from prefopt.config_layers import resolve_run_config
    from prefopt.registry import get_algorithm
    from prefopt.training.run import train

    spec = spec_or_name if isinstance(spec_or_name, AlgorithmSpec) else get_algorithm(spec_or_name)
    tmp = Path(tmp_dir)
    if rows is None:
        rows = synthetic_pairs(pairs * steps, seed=3, with_h_flags=True)
    missing = sorted({c for c in spec.extra_columns for row in rows if c not in row})
    if missing:
        raise ValueError(f"rows lack the extra column(s) {missing} that '{spec.name}' needs")
    data = write_pairs(tmp / "train_one_step.jsonl", rows)
    output_dir = tmp / "run"
    flags: dict[str, Any] = {
        "model.name_or_path": str(model_dir),
        "data.train": str(data),
        "training.output_dir": str(output_dir),
        "training.max_steps": steps,
        "training.per_device_train_batch_size": pairs,
        "training.logging_steps": 1,
        "training.save_strategy": "no",
    }
    flags.update({f"algorithm.{name}": value for name, value in algorithm_config.items()})
    config = resolve_run_config(spec, None, flags, list(sets))
    quiet_libraries()
    own_cache = "PREFOPT_CACHE_DIR" not in os.environ
    if own_cache:  # keep tokenization and reference caches out of the user's cache folder
        os.environ["PREFOPT_CACHE_DIR"] = str(tmp / "cache")
    try:
        train(config, spec, quiet=True)
    finally:
        if own_cache:
            os.environ.pop("PREFOPT_CACHE_DIR", None)
    for line in (output_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "loss" in record:
            return dict(record)
    raise AssertionError(f"{output_dir / 'metrics.jsonl'} has no logged training step")


def write_distribution(
    root: str | Path,
    name: str,
    version: str = "0.1.0",
    entry_points: dict[str, str] | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    """Lay out an installed-looking distribution under ``root`` without pip.

    Writes ``files`` (relative path -> source text) and ``<name>-<version>.dist-info`` with
    ``METADATA`` and ``entry_points.txt`` (``entry_points`` as entry point name -> target in
    group ``prefopt``). With ``root`` on ``sys.path`` (or ``PYTHONPATH`` of a subprocess)
    ``importlib.metadata`` finds it like a pip-installed package. Returns ``root``.
    """
    root = Path(root)
    for relative, text in (files or {}).items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = ["[prefopt]"] + [f"{key} = {value}" for key, value in (entry_points or {}).items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
