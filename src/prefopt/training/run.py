"""One training run from a resolved :class:`RunConfig`, stage by stage
(:mod:`prefopt.training.stages`).

The output folder holds the adapter (or full model), the tokenizer, the resolved config
(``prefopt_config.yaml``), ``metrics.jsonl`` and the Trainer's ``checkpoint-<step>`` folders.
"""

from __future__ import annotations

from prefopt.api import AlgorithmSpec
from prefopt.config import RunConfig
from prefopt.training.stages import (
    RunResult,
    build_model,
    build_reference,
    build_trainer,
    finish,
    fit,
    prepare_data,
    prepare_reference,
    start_run,
)

__all__ = ["RunResult", "train"]


def train(
    config: RunConfig,
    spec: AlgorithmSpec,
    resume: bool = False,
    quiet: bool = False,
    replace_existing: bool = False,
) -> RunResult:
    """Train ``spec`` as configured; returns where the outputs are and the final metrics.

    ``replace_existing`` removes an earlier run's files from the output folder (checkpoints,
    metrics, adapter/model, evaluation results) after the data and the model have loaded."""
    if spec.for_config is not None:  # e.g. a mix: the spec its parts make
        spec = spec.for_config(config.algorithm)
    if spec.runner is not None:  # deprecated: a plugin's own run replaces the stages
        return _run_legacy_runner(config, spec, resume, quiet, replace_existing)
    from prefopt.modeling.sdpa_gqa import native_gqa_on_cpu
    from prefopt.training.wandb_setup import wandb_session

    run = start_run(config, spec, resume, quiet, replace_existing)
    data = prepare_data(run)
    model = build_model(run)
    reference = build_reference(run, model)
    trainer = build_trainer(run, data, model, reference)
    del model, reference  # the trainer alone holds them: a release frees their memory
    with native_gqa_on_cpu(run.args.device.type):
        prepare_reference(run, trainer, data)
        with wandb_session(config, run.args, resume):
            fit(run, trainer)
            return finish(run, trainer, data)


def _run_legacy_runner(
    config: RunConfig, spec: AlgorithmSpec, resume: bool, quiet: bool, replace_existing: bool
) -> RunResult:
    """A plugin's ``runner`` (plugin API 1.0), which bypasses the stages: only what the old
    ``train()`` did before handing over is done for it (CPU workers, ``report_to``, the folder
    replacement)."""
    from prefopt.training.launch import configure_cpu_workers, is_main_process
    from prefopt.training.run_folder import remove_run_outputs
    from prefopt.training.wandb_setup import check_report_to

    assert spec.runner is not None
    configure_cpu_workers()
    check_report_to(config.training.get("report_to"))
    if replace_existing and not resume and is_main_process():
        remove_run_outputs(config.output_dir)
    result: RunResult = spec.runner(config, spec, resume=resume, quiet=quiet)
    return result
