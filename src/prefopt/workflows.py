"""prefopt from Python: ``train``, ``evaluate``, ``merge`` and ``flip``, as ``prefopt.<name>``.

Each does what its command does, with the same checks and guarantees (a run folder is never
trained over unless asked, outputs are written atomically, bad input is refused before anything
loads), and raises :class:`prefopt.errors.UsageError` (a ``ConfigError`` or ``DataError``) with
the same one-line message the command prints. The command line only parses, prints and turns
those exceptions into exit codes. ``import prefopt`` stays light: these are imported on first
use (``prefopt.__getattr__``).

::

    import prefopt

    run = prefopt.train("dpo", model="smollm2", train_file="pairs.jsonl", max_steps=20)
    scores = prefopt.evaluate(run.output_dir, "eval.jsonl")
    print(run.final_metrics["loss"], scores.results["metrics"]["accuracy"])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefopt.api import AlgorithmSpec
from prefopt.errors import UsageError

if TYPE_CHECKING:
    from prefopt.config import RunConfig
    from prefopt.data.flip import FlipSummary
    from prefopt.eval.offline import EvalOutput
    from prefopt.modeling.merge import MergeResult
    from prefopt.training.stages import RunResult

#: Short keyword arguments of :func:`train`, as the command's options name them.
SHORT_KEYS = {
    "model": "model.name_or_path",
    "train_file": "data.train",
    "eval_file": "data.eval",
    "output_dir": "training.output_dir",
    "run_name": "training.run_name",
    "max_steps": "training.max_steps",
}
SECTIONS = ("model", "lora", "data", "training", "reference", "health", "lists", "algorithm")


def train(
    algorithm: str | AlgorithmSpec[Any],
    config: str | Path | Mapping[str, Any] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = True,
    **overrides: Any,
) -> RunResult:
    """Train ``algorithm`` as ``prefopt train ALGORITHM`` does; returns the :class:`RunResult`.

    ``config`` is a YAML file or a mapping of its sections (``{"training": {...}}``).
    ``overrides`` come on top, lowest first: whole sections (``training={"learning_rate":
    1e-5}``, ``lora=None`` for full fine-tuning), then the command's options (``model``,
    ``train_file``, ``eval_file``, ``output_dir``, ``run_name``, ``max_steps``) and the
    algorithm's fields (``delta=10``), then dotted keys (``**{"lora.r": 8}``). ``resume``
    continues from the newest checkpoint; ``overwrite`` replaces a run already in the output
    folder, which is refused otherwise. Resuming a finished run trains nothing and returns
    ``already_finished=True``.
    """
    spec = _algorithm(algorithm)
    run_config = resolve(spec, config, overrides)
    return train_config(run_config, spec, resume=resume, overwrite=overwrite, quiet=quiet)


def _algorithm(algorithm: str | AlgorithmSpec[Any]) -> AlgorithmSpec[Any]:
    if isinstance(algorithm, AlgorithmSpec):
        return algorithm
    from prefopt.registry import get_algorithm

    return get_algorithm(algorithm)


def resolve(
    spec: AlgorithmSpec[Any],
    config: str | Path | Mapping[str, Any] | None,
    overrides: Mapping[str, Any],
    sets: list[str] | tuple[str, ...] = (),
) -> RunConfig:
    """The run config of :func:`train`: ``config``, then ``overrides`` as dotted keys, lowest
    first: whole sections (``training={...}``), the command's options and the algorithm's
    fields, dotted keys; ``Path`` values are taken as their text."""
    from prefopt.config_layers import resolve_run_config

    fields = {f.name for f in dataclasses.fields(spec.config_class)}
    sections: dict[str, Any] = {}  # lowest first: whole sections, options and fields, dotted
    options: dict[str, Any] = {}
    dotted: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in SHORT_KEYS:
            options[SHORT_KEYS[key]] = value
        elif key in fields:
            options[f"algorithm.{key}"] = value
        elif key in SECTIONS and isinstance(value, Mapping):
            sections.update({f"{key}.{name}": item for name, item in value.items()})
        elif key in SECTIONS or "." in key:
            dotted[key] = value
        else:  # a mistake the config builder names, with the closest algorithm field
            options[f"algorithm.{key}"] = value
    layered = {**sections, **options, **dotted}
    layered = {
        key: str(value) if isinstance(value, Path) else value for key, value in layered.items()
    }
    return resolve_run_config(spec, config, None, sets, overrides=layered)


def train_config(
    config: RunConfig,
    spec: AlgorithmSpec[Any],
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = True,
    check_folder: bool | None = None,
) -> RunResult:
    """Train a resolved config after :func:`preflight`; the libraries' chatter is kept down
    from there on (:func:`prefopt.modeling.library_noise.quiet_libraries`)."""
    from prefopt.modeling.library_noise import quiet_libraries
    from prefopt.training.stages import RunResult

    finished = preflight(config, resume, overwrite, check_folder)
    if finished is not None:
        return RunResult(config.output_dir, finished, 0, 0, already_finished=True)
    quiet_libraries(quiet)
    from prefopt.training.run import train as run_training

    return run_training(config, spec, resume=resume, quiet=quiet, replace_existing=overwrite)


def preflight(
    config: RunConfig, resume: bool, overwrite: bool, check_folder: bool | None = None
) -> int | None:
    """The checks that need no model, in seconds instead of after torch has loaded: the output
    folder (on the main process by default; not in the workers of a launched run, whose
    parent checked it), ``report_to``, the model source and the data sources. Returns the step a
    finished run ended at when ``resume`` finds it finished, else ``None``."""
    from prefopt.data.io import check_data_source
    from prefopt.modeling.loading import check_model_available
    from prefopt.training.launch import is_main_process
    from prefopt.training.wandb_setup import check_report_to

    if check_folder is None:  # one process checks (rank 0 of torchrun may be writing it)
        check_folder = is_main_process()
    if check_folder:
        finished = finished_run_step(config, resume, overwrite)
        if finished is not None:
            return finished
    check_report_to(config.training.get("report_to"))  # tensorboard installed, wandb logged in
    check_model_available(config.model)  # a mistyped path or an unreachable hub id: one line
    for source in (config.data.train, config.data.eval):
        if source:
            check_data_source(source)
    return None


def finished_run_step(config: RunConfig, resume: bool, overwrite: bool) -> int | None:
    """Check the output folder before any model loads: refuse to train over an existing run
    (usage error); for ``resume`` of a finished run, the step it finished at (0: its final
    model is saved), else ``None``."""
    from prefopt.training.run_folder import check_output_dir, finished_step

    if resume and overwrite:
        raise UsageError("--resume continues a run and --overwrite replaces it: pass one")
    if resume:
        step = finished_step(config.output_dir, int(config.training.get("max_steps") or -1))
        if step is not None:
            return step
    check_output_dir(config.output_dir, resume=resume, overwrite=overwrite)
    return None


def evaluate(
    model: str | Path,
    data: str | Path,
    *,
    results: str | Path | None = None,
    per_pair: str | Path | None = None,
    force: bool = False,
    progress: Callable[[int, str, int], Any] | None = None,
    say: Callable[[str], Any] | None = None,
    quiet: bool = True,
    **options: Any,
) -> EvalOutput:
    """Score preference pairs under a run or model, as ``prefopt eval pairs`` does.

    Writes the results JSON (default ``MODEL/eval_results.json``) and, with ``per_pair``, one
    JSON line per pair; an existing file is refused unless ``force``. ``options`` are those of
    :func:`prefopt.eval.offline.evaluate` (``ref``, ``no_ref``, ``beta``, ``batch_size``, ...);
    ``progress(done, label, total)`` and ``say(note)`` report as it goes.
    """
    from prefopt.data.io import check_data_source
    from prefopt.data.writing import check_writable, write_jsonl
    from prefopt.eval.offline import default_results_path, write_json

    model, data = str(model), str(data)
    check_data_source(data)  # the missing input first, then what the outputs would overwrite
    results_path = Path(results) if results is not None else default_results_path(model)
    check_writable(results_path, force)
    if per_pair is not None:
        check_writable(per_pair, force)
    from prefopt.eval.offline import evaluate as score_pairs
    from prefopt.modeling.library_noise import quiet_libraries

    quiet_libraries(quiet)

    output = score_pairs(model, data, progress=progress, say=say, **options)
    write_json(results_path, output.results, force)
    if per_pair is not None:
        write_jsonl(per_pair, output.per_pair, force=force)
    output.results_path = results_path
    return output


def merge(
    source: str | Path,
    output_dir: str | Path | None = None,
    *,
    base: str | None = None,
    dtype: str = "auto",
    force: bool = False,
    trust_remote_code: bool = False,
    say: Callable[[str], Any] | None = None,
    quiet: bool = True,
) -> MergeResult:
    """Fold a trained adapter into its base and save one model, as ``prefopt merge`` does
    (default output ``<SOURCE>-merged``; an existing one is refused unless ``force``)."""
    from prefopt import paths
    from prefopt.modeling.merge import default_output, merge_adapter

    source = Path(source)
    target = Path(output_dir) if output_dir is not None else default_output(source)
    problem = paths.write_problem(target.parent) if source.is_dir() else None
    if problem is not None:  # said before the base model loads
        raise UsageError(f"{target}: cannot write the merged model: {problem}")
    from prefopt.modeling.library_noise import quiet_libraries

    quiet_libraries(quiet)
    return merge_adapter(
        source,
        None if output_dir is None else Path(output_dir),
        base=base,
        dtype=dtype,
        force=force,
        say=say or (lambda message: None),
        trust_remote_code=trust_remote_code,
    )


def flip(
    source: str | Path, output: str | Path | None = None, *, force: bool = False
) -> tuple[Path, FlipSummary]:
    """Flip (1, 0) rows into the Factual-DPO orientation, as ``prefopt data flip`` does;
    returns the output file (default ``<stem>_flipped.jsonl``) and the flag counts."""
    from prefopt.data.flip import flip_file

    return flip_file(source, output, force=force)
