"""``prefopt eval harness``: benchmarks through EleutherAI's lm-evaluation-harness.

The run's model (a run/adapter folder with its adapters merged into the base, a merged folder,
a plain model folder or a hub id) is loaded with prefopt's own loaders and handed to the
harness's ``HFLM`` wrapper; ``lm_eval.simple_evaluate`` runs the tasks. The base model the run
started from (an adapter's parent, or the base a ``prefopt merge`` folder records) is evaluated
first on the same tasks, so every metric comes with a base → run delta. An adapter run loads
its base once: the base is scored, then the adapter is merged into it and the run is scored.

Results go to ``harness_results.json`` beside ``eval_results.json`` in the model folder: per
model the harness's numbers for every task and group, and a flat ``metrics`` mapping of the
run's (``task/metric``, ``task/metric[filter]`` for filters other than ``none``) that
``prefopt eval compare`` reads like any other results file.

lm-eval is an optional extra (``pip install 'prefopt[harness]'``) imported only here, inside
the functions. Remote code stays off: models load without ``trust_remote_code`` unless the user
asks, and tasks that would run model-written code (``unsafe_code``) are refused before any
model loads. One process: the harness takes a loaded model on one device as it is.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefopt.errors import UsageError

RESULTS_FILE = "harness_results.json"
SAMPLES_FILE = "harness_samples.jsonl"
RESULTS_KIND = "prefopt.harness"
MIN_LM_EVAL = "0.4.13"
INSTALL_HINT = "pip install 'prefopt[harness]'"


@dataclass
class HarnessSettings:
    """What to run and how; the CLI options one for one."""

    tasks: list[str]
    limit: float | None = None
    num_fewshot: int | None = None
    batch_size: int | str = 8
    include_path: list[str] = field(default_factory=list)
    device: str = "auto"
    dtype: str = "float32"
    apply_chat_template: bool = False
    log_samples: bool = False
    trust_remote_code: bool = False


def require_lm_eval() -> str:
    """The installed lm-eval's version; a one-line ``UsageError`` with the install hint when
    it is missing or older than :data:`MIN_LM_EVAL`."""
    from prefopt.extras import require

    require("lm_eval", "harness", "prefopt eval harness")
    import lm_eval
    from packaging.version import Version

    version = str(getattr(lm_eval, "__version__", "0"))
    if Version(version) < Version(MIN_LM_EVAL):
        raise UsageError(f"lm-eval {version} is too old (need >= {MIN_LM_EVAL}): {INSTALL_HINT}")
    return version


def split_tasks(values: list[str]) -> list[str]:
    """``--tasks a,b --tasks c`` → ``[a, b, c]``, in order, without repeats."""
    names = [name.strip() for value in values for name in value.split(",")]
    names = list(dict.fromkeys(name for name in names if name))
    if not names:
        raise UsageError("--tasks: give at least one task name")
    return names


def parse_batch_size(text: str) -> int | str:
    """An integer >= 1, ``auto`` or ``auto:N`` (the harness's batch-size search)."""
    if text == "auto" or text.startswith("auto:"):
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"--batch-size must be a positive integer or auto, got '{text}'")
    return value


def check_settings(settings: HarnessSettings) -> None:
    if settings.limit is not None and settings.limit <= 0:
        raise UsageError(f"--limit must be > 0, got {settings.limit}")
    if settings.limit is not None and settings.limit > 1 and settings.limit % 1:
        raise UsageError(f"--limit: a count of examples (or a fraction < 1), got {settings.limit}")
    if settings.num_fewshot is not None and settings.num_fewshot < 0:
        raise UsageError(f"--num-fewshot must be >= 0, got {settings.num_fewshot}")
    if settings.dtype not in ("float32", "bfloat16", "float16"):
        raise UsageError(f"--dtype must be float32, bfloat16 or float16, got '{settings.dtype}'")
    for folder in settings.include_path:
        if not Path(folder).exists():
            raise UsageError(f"--include-path: no such file or folder: {folder}")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: torch sees no CUDA device")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available")
    if kind not in ("cpu", "cuda", "mps", "xpu", "npu", "hpu"):
        raise UsageError(f"--device: expected auto, cpu, cuda[:N] or mps, got '{device}'")
    return device


# -- tasks ---------------------------------------------------------------------------------
def task_manager(settings: HarnessSettings) -> Any:
    """The harness's task index: the user's ``--include-path`` folders alone when they hold
    every requested task (indexing the ~15,000 built-in tasks takes seconds), else both."""
    from lm_eval.tasks import TaskManager

    if settings.include_path:
        local = TaskManager(include_path=settings.include_path, include_defaults=False)
        if not local.match_tasks(settings.tasks) or _unknown(local, settings.tasks):
            return TaskManager(include_path=settings.include_path)
        return local
    return TaskManager()


def _unknown(manager: Any, names: list[str]) -> list[str]:
    known = set(manager.all_tasks)
    return [name for name in names if name not in known and not manager.match_tasks([name])]


def load_tasks(manager: Any, names: list[str]) -> list[Any]:
    """The requested tasks, groups and tags as harness objects with their data loaded; a
    one-line ``UsageError`` for an unknown name or data that cannot be read (e.g. offline)."""
    import difflib

    unknown = _unknown(manager, names)
    if unknown:
        close = difflib.get_close_matches(unknown[0], manager.all_tasks, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        where = "lm-eval's tasks or --include-path"
        raise UsageError(f"unknown task {', '.join(unknown)} (not in {where}){hint}")
    patterns = [name for name in names if name not in set(manager.all_tasks)]
    expanded = [n for n in names if n not in patterns] + manager.match_tasks(patterns)
    try:
        loaded = manager.load(expanded)
    except (OSError, ValueError, ImportError, ConnectionError) as exc:
        reason = _first_line(exc)
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false", "no"):
            reason += "; HF_HUB_OFFLINE is set, so only datasets already in the cache load"
        raise UsageError(f"cannot load tasks {', '.join(names)}: {reason}") from None
    unsafe = [name for name, task in loaded["tasks"].items() if getattr(task, "UNSAFE_CODE", 0)]
    if unsafe:  # the harness refuses them only after the model has run; say so up front
        raise UsageError(
            f"task {', '.join(unsafe)} runs model-written code; prefopt does not run such tasks "
            "(lm-eval itself does, with --confirm_run_unsafe_code)"
        )
    # Hand simple_evaluate the outermost objects, so groups keep their aggregate metrics.
    children = {child for group in loaded["group_map"].values() for child in group}
    groups = [g for name, g in loaded["groups"].items() if name not in children]
    return groups + [t for name, t in loaded["tasks"].items() if name not in children]


# -- evaluation ----------------------------------------------------------------------------
def evaluate_model(
    model: Any,
    tokenizer: Any,
    tasks: list[Any],
    manager: Any,
    settings: HarnessSettings,
    quiet: bool = False,
) -> Any:
    """``simple_evaluate`` on one loaded model; the harness's whole results dict. ``quiet``
    hides its progress bars (it asks tqdm for them explicitly, so TQDM_DISABLE cannot)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=settings.batch_size,
        trust_remote_code=settings.trust_remote_code,
    )
    limit = settings.limit
    if limit is not None and limit >= 1:
        limit = int(limit)
    bars = contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext()
    with _no_environment_report(), bars:
        return simple_evaluate(
            model=lm,
            tasks=tasks,
            task_manager=manager,  # else it indexes every built-in task again
            num_fewshot=settings.num_fewshot,
            limit=limit,
            log_samples=settings.log_samples,
            apply_chat_template=settings.apply_chat_template,
            confirm_run_unsafe_code=False,
        )


@contextlib.contextmanager
def _no_environment_report() -> Iterator[None]:
    """Skip the harness's report of the environment (torch's ``collect_env``, ~6 s per call,
    and ``git describe`` in the current folder, which prints "fatal: not a git repository"
    outside one): none of it goes into prefopt's results, which record the lm-eval version."""
    import lm_eval.evaluator as evaluator

    saved: dict[str, Any] = {
        name: getattr(evaluator, name) for name in _ENVIRONMENT_REPORT if hasattr(evaluator, name)
    }
    for name in saved:
        setattr(evaluator, name, _ENVIRONMENT_REPORT[name])
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(evaluator, name, original)


_ENVIRONMENT_REPORT: dict[str, Callable[..., Any]] = {
    "get_git_commit_hash": lambda: None,
    "add_env_info": lambda storage: None,
}


# -- the command ---------------------------------------------------------------------------
@dataclass
class HarnessOutput:
    results: dict[str, Any]  # the harness_results.json document
    samples: list[dict[str, Any]] = field(default_factory=list)  # with log_samples


@dataclass
class _Model:
    role: str  # "base" or "run"
    chain: list[str]  # [root, adapters...], as prefopt.modeling.merge resolves them


def run_harness(
    model: str,
    settings: HarnessSettings,
    with_base: bool = True,
    say: Callable[[str], Any] | None = None,
    quiet: bool = False,
) -> HarnessOutput:
    """Evaluate ``model`` (and its base, first) on ``settings.tasks``: the results document
    (``harness_results.json``) and, with ``settings.log_samples``, one row per example."""
    from prefopt.eval import harness_results as kept
    from prefopt.eval.offline import plan_models
    from prefopt.modeling import merge as merging
    from prefopt.modeling.gguf import split_gguf
    from prefopt.modeling.hub import check_hub_source

    version = require_lm_eval()
    check_settings(settings)
    say = say or (lambda message: None)
    device = resolve_device(settings.device)
    plan = plan_models(model, no_ref=not with_base, trust_remote_code=settings.trust_remote_code)
    models = []
    if plan.reference is not None:
        if plan.reference_is_base:
            base_chain = plan.chain[:-1]
        elif merging.is_adapter_folder(plan.reference):
            base_chain = merging.resolve_chain(plan.reference)
        else:
            base_chain = [plan.reference]
        models.append(_Model("base", base_chain))
    elif with_base:
        say(f"no base model known for {model} (not a run or merged folder): the model alone")
    models.append(_Model("run", plan.chain))
    for entry in models:  # one line now, not transformers' retries after the tasks have loaded
        check_hub_source(split_gguf(entry.chain[0])[0], what=f"{entry.role} model")

    _quiet_harness()
    manager = task_manager(settings)
    tasks = load_tasks(manager, settings.tasks)
    results: dict[str, dict[str, Any]] = {}
    samples: list[dict[str, Any]] = []
    loaded = None
    for entry in models:
        say(f"{entry.role}: {' -> '.join(entry.chain)} on {', '.join(settings.tasks)}")
        if not (entry.role == "run" and plan.reference_is_base):
            loaded = None  # free the base before the run's own copy is loaded
        loaded = _load(entry, loaded, settings, device)
        tokenizer = merging.load_tokenizer_for(entry.chain, settings.trust_remote_code)
        raw = evaluate_model(loaded, tokenizer, tasks, manager, settings, quiet)
        results[entry.role] = kept.summarize(raw)
        samples += kept.sample_rows(entry.role, raw.get("samples") or {})
    run, base = results["run"], results.get("base")
    metrics = kept.flat_metrics(run)
    base_metrics = kept.flat_metrics(base) if base else None
    document = {
        "kind": RESULTS_KIND,
        "model": plan.model,
        "base": plan.reference,
        "tasks": settings.tasks,
        "settings": {**asdict(settings), "device": device},
        "lm_eval_version": version,
        "run": plan.run,
        "metrics": metrics,
        "base_metrics": base_metrics,
        "delta": kept.delta(metrics, base_metrics),
        "headline": list(kept.flat_metrics(run, kept.shown(run))),
        "results": results,
    }
    return HarnessOutput(document, samples)


def _load(entry: _Model, previous: Any, settings: HarnessSettings, device: str) -> Any:
    """The model of ``entry`` on ``device``; given the base just scored (``previous``), the
    run's adapter is merged into it instead of loading the base again."""
    from prefopt.modeling import merge as merging

    trust, dtype = settings.trust_remote_code, settings.dtype
    if previous is not None:
        from peft import PeftModel

        adapter = entry.chain[-1]
        try:
            model = PeftModel.from_pretrained(previous, adapter).merge_and_unload()
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot apply adapter '{adapter}': {_first_line(exc)}") from None
    else:
        model = merging.load_full_precision(entry.chain, trust, dtype=dtype)
    return model.to(device).eval()


def default_results_path(model: str) -> Path:
    """``<MODEL>/harness_results.json`` for a local folder, else ``./harness_results.json``."""
    return Path(model) / RESULTS_FILE if Path(model).is_dir() else Path(RESULTS_FILE)


def _quiet_harness() -> None:
    """The harness logs every step at INFO and chats at WARNING (e.g. that a loaded model
    was passed in); prefopt's own notes say what matters."""
    logging.getLogger("lm_eval").setLevel(logging.ERROR)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
