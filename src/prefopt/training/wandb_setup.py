"""Weights & Biases for ``training.report_to: [wandb]``: project, entity, run name, config.

prefopt starts the wandb run itself (on the main process, before the Trainer), so that:

- the project is ``training.project`` when set (``ENTITY/PROJECT`` also names the entity),
  else ``$WANDB_PROJECT``, else ``prefopt``; the entity is the one in ``training.project``, else
  ``$WANDB_ENTITY``, else wandb's default for the API key;
- the run name is ``training.run_name``, i.e. the algorithm's default run name
  (``BetaDPO_<model>``, ...) unless given;
- the run's files live in ``<output_dir>/wandb`` (unless ``$WANDB_DIR`` is set) and a resumed
  run (``--resume``) continues the same wandb run;
- the resolved prefopt config is logged under ``prefopt`` with secrets redacted, and the
  command line wandb records is redacted too (:mod:`prefopt.training.redaction`).

The Trainer's own ``WandbCallback`` then finds the run, adds the training arguments (it masks
``*_token`` fields itself) and logs the metrics. wandb reads its API key from
``WANDB_API_KEY`` or its netrc login; prefopt never copies it anywhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from prefopt.training.redaction import redact, redact_argv

DEFAULT_PROJECT = "prefopt"
RUN_ID_FILE = "wandb_run_id"


def reports_to_wandb(report_to: Any) -> bool:
    """Whether ``report_to`` asks for wandb: by name, or ``all`` when wandb is installed
    (as transformers reads ``all``: every integration that is installed)."""
    from prefopt.extras import installed

    items = [report_to] if isinstance(report_to, str) else list(report_to or [])
    return "wandb" in items or ("all" in items and installed("wandb"))


def check_wandb_installed(report_to: Any) -> None:
    """Fail before any model loads when wandb is asked for by name but not installed."""
    if reports_to_wandb(report_to):
        from prefopt.extras import require

        require("wandb", "wandb", "training.report_to: wandb")


def project_and_entity(project: str | None) -> tuple[str, str | None]:
    """``training.project`` (``ENTITY/PROJECT`` or ``PROJECT``) with the environment's defaults."""
    if project and project != "huggingface":  # TrainingArguments' default means "not set"
        entity, _, name = project.rpartition("/")
        return name, entity or os.environ.get("WANDB_ENTITY")
    return os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT), os.environ.get("WANDB_ENTITY")


def start_wandb_run(config: Any, args: Any, resume: bool = False) -> Any:
    """Start the wandb run of this training run on the main process; ``None`` if not wanted.

    ``config`` is the :class:`~prefopt.config.RunConfig`, ``args`` the built
    ``TrainingArguments``. Call :func:`finish_wandb_run` with the result when training ends.
    """
    if not reports_to_wandb(args.report_to) or args.process_index != 0:
        return None
    check_wandb_installed(args.report_to)
    import wandb

    if wandb.run is not None:  # started by the caller: use it as is
        return None
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    id_file = output_dir / RUN_ID_FILE
    run_id = None
    if resume and id_file.is_file():
        run_id = id_file.read_text(encoding="utf-8").strip() or None
    project, entity = project_and_entity(getattr(args, "project", None))
    argv = sys.argv
    sys.argv = [argv[0], *redact_argv(argv[1:])]  # wandb records the program's arguments
    try:
        run = wandb.init(
            project=project,
            entity=entity,
            name=args.run_name,
            dir=os.environ.get("WANDB_DIR") or str(output_dir),
            id=run_id,
            resume="allow" if run_id else None,
            config={"prefopt": redact(config.to_dict())},
        )
    finally:
        sys.argv = argv
    id_file.write_text(f"{run.id}\n", encoding="utf-8")
    return run


def finish_wandb_run(run: Any, failed: bool = False) -> None:
    """Close a run from :func:`start_wandb_run` (flushes an offline run's files)."""
    if run is not None:
        run.finish(exit_code=1 if failed else 0)
