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

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefopt.errors import UsageError
from prefopt.extras import installed
from prefopt.training.redaction import redact, redact_argv

DEFAULT_PROJECT = "prefopt"
RUN_ID_FILE = "wandb_run_id"


def reports_to_wandb(report_to: Any) -> bool:
    """Whether ``report_to`` asks for wandb: by name, or ``all`` when wandb is installed
    (as transformers reads ``all``: every integration that is installed)."""
    items = [report_to] if isinstance(report_to, str) else list(report_to or [])
    return "wandb" in items or ("all" in items and installed("wandb"))


def check_wandb_installed(report_to: Any) -> None:
    """Fail before any model loads when wandb is asked for by name but not installed."""
    if reports_to_wandb(report_to):
        from prefopt.extras import require

        require("wandb", "wandb", "training.report_to: wandb")


#: ``WANDB_MODE`` values under which wandb logs without a server, so without a login.
LOCAL_MODES = ("offline", "disabled", "dryrun")
DEFAULT_HOST = "https://api.wandb.ai"


def check_report_to(report_to: Any) -> None:
    """Fail in one line, before any model loads, when ``training.report_to`` asks for what
    this machine cannot give: wandb not installed or not logged in, tensorboard not
    installed (the Trainer's own checks come after the model has loaded)."""
    items = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if "tensorboard" in items and not (installed("tensorboard") or installed("tensorboardX")):
        raise UsageError(
            "training.report_to: tensorboard needs the 'tensorboard' package: "
            "pip install tensorboard"
        )
    if not reports_to_wandb(report_to):
        return
    check_wandb_installed(report_to)
    if not has_wandb_login():
        raise UsageError(
            "training.report_to: wandb needs a login: run 'wandb login' or set WANDB_API_KEY "
            "(WANDB_MODE=offline logs to the run folder without one)"
        )


def has_wandb_login() -> bool:
    """Whether wandb can start a run here without asking for a key: a run already started, a
    mode that logs locally (offline/disabled: ``WANDB_MODE`` or wandb's settings files),
    ``WANDB_API_KEY`` or ``WANDB_IDENTITY_TOKEN_FILE``, or an entry for the server's host
    (``WANDB_BASE_URL``, default api.wandb.ai) in the netrc file (``$NETRC``, else
    ``~/.netrc``), which ``wandb login`` writes."""
    import netrc
    from urllib.parse import urlsplit

    active = getattr(sys.modules.get("wandb"), "run", None)
    if active is not None:  # the caller started (and so logged in to) a run of its own
        return True
    if _wandb_mode() in LOCAL_MODES:
        return True
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("true", "1", "yes"):
        return True
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST).netloc
    candidates = [os.environ["NETRC"]] if os.environ.get("NETRC") else ["~/.netrc", "~/_netrc"]
    for candidate in candidates:
        try:
            entry = netrc.netrc(os.path.expanduser(candidate)).authenticators(host)
        except (OSError, netrc.NetrcParseError):
            continue
        if entry and entry[2]:
            return True
    return False


def _wandb_mode() -> str:
    """wandb's mode: ``WANDB_MODE``, else what ``wandb offline``/``wandb disabled`` wrote in its
    settings files (the folder's ``wandb/settings``, then ``~/.config/wandb/settings``)."""
    import configparser

    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode:
        return mode
    config_dir = os.environ.get("WANDB_CONFIG_DIR") or os.path.expanduser("~/.config/wandb")
    workspace = os.environ.get("WANDB_DIR") or os.getcwd()
    for folder in (os.path.join(workspace, "wandb"), config_dir):
        settings = configparser.RawConfigParser()
        try:
            settings.read(os.path.join(folder, "settings"), encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):
            continue
        mode = settings.get("default", "mode", fallback="").strip().lower()
        if mode:
            return mode
    return ""


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


@contextlib.contextmanager
def wandb_session(config: Any, args: Any, resume: bool = False) -> Iterator[Any]:
    """:func:`start_wandb_run` around a block (the training and the final evaluation), closed
    as failed when the block raises."""
    run = start_wandb_run(config, args, resume=resume)
    try:
        yield run
    except BaseException:
        finish_wandb_run(run, failed=True)
        raise
    finish_wandb_run(run)
