"""A run's output folder: what shows that it holds a run, what belongs to that run, and whether
the run is finished. ``prefopt train`` refuses to start a fresh run over an existing one unless
told to continue it (``--resume``) or to replace it (``--overwrite``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from prefopt.errors import UsageError
from prefopt.training.checkpoints import latest_checkpoint

CONFIG_FILE = "prefopt_config.yaml"
#: Files of a saved adapter or model: with a ``checkpoint-<step>`` folder, what shows that a
#: folder holds a run. The config and metrics a run writes first do not: a start that failed
#: before its first checkpoint leaves nothing to continue or lose, so its rerun replaces them.
MODEL_FILES = (
    "adapter_model.safetensors",
    "model.safetensors",
    "model.safetensors.index.json",
)
#: Everything that names a folder as a run's: its config, its metrics and its saved model.
RUN_MARKERS = (CONFIG_FILE, "metrics.jsonl", *MODEL_FILES)
#: What ``--overwrite`` removes: everything a run (and ``prefopt eval``) writes into its folder.
RUN_OUTPUTS = (
    *RUN_MARKERS,
    "checkpoint-*",
    "tmp-checkpoint-*",
    "model-*-of-*.safetensors",
    "adapter_config.json",
    "config.json",
    "generation_config.json",
    "training_args.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "prefopt_done.json",
    "eval_results.json",
    "judge_results.json",
    "harness_results.json",
    "*.judgments.jsonl",
    "*.partial.json",
)


def existing_run(output_dir: Path) -> list[str]:
    """The names in ``output_dir`` that show it already holds a run, a checkpoint or a saved
    adapter/model (empty when it does not)."""
    if not output_dir.is_dir():
        return []
    found = [name for name in MODEL_FILES if (output_dir / name).exists()]
    found += sorted(
        child.name
        for child in output_dir.iterdir()
        if child.is_dir() and child.name.startswith("checkpoint-")
    )
    return found


def check_output_dir(output_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an output folder the run cannot write (a file of that name, a file where a
    parent folder should be, no write permission), and a fresh run over an existing one unless
    ``overwrite`` says to replace it (``train(replace_existing=True)`` then removes the old
    run's files once the new run's data and model have loaded, so a failing start loses
    nothing). A missing or empty folder, or one without a checkpoint or a saved model (the
    config and metrics of a start that failed), is fine."""
    from prefopt import paths

    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"{output_dir}: is a file, not a folder; -o/--output-dir names a folder")
    problem = paths.write_problem(output_dir)
    if problem is not None:
        raise UsageError(f"{output_dir}: cannot write the output folder: {problem}")
    if resume or overwrite:
        return
    found = existing_run(output_dir)
    if found:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise UsageError(
            f"{output_dir} already holds a run ({shown}): pass --resume to continue it "
            "or --overwrite to replace it"
        )


#: The weights files a run saves; safetensors writes them 0600, whatever the umask.
WEIGHTS_FILES = ("adapter_model.safetensors", "model.safetensors", "model-*-of-*.safetensors")


def settle_permissions(output_dir: Path) -> None:
    """Give the weights a run saved in ``output_dir`` the permissions a plain ``open()`` gives
    under the umask, like every other file of the run (:func:`prefopt.paths.as_if_created`)."""
    from prefopt.paths import as_if_created

    for pattern in WEIGHTS_FILES:
        for path in output_dir.glob(pattern):
            if path.is_file() and not path.is_symlink():
                as_if_created(path)


def remove_run_outputs(output_dir: Path) -> None:
    """Delete what belongs to a run in ``output_dir`` (checkpoints, metrics, the saved
    adapter/model and tokenizer, the config, evaluation results); other files stay."""
    for pattern in RUN_OUTPUTS:
        for path in output_dir.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def finished_step(output_dir: Path, max_steps: int) -> int | None:
    """The step a finished run in ``output_dir`` stopped at, or ``None`` when there is
    something left to train: a run is finished when its newest checkpoint reached
    ``max_steps`` (the checkpoint's own target when ``max_steps`` is not set), or when its final
    adapter/model is saved and no checkpoint below a larger ``max_steps`` is left to continue."""
    checkpoint = latest_checkpoint(output_dir)
    state: dict[str, Any] = {}
    if checkpoint is not None:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    step = int(state.get("global_step") or 0)
    target = max_steps if max_steps > 0 else int(state.get("max_steps") or 0)
    if checkpoint is not None and target and step >= target:
        return step
    saved = any((output_dir / name).is_file() for name in MODEL_FILES)
    if saved and not (checkpoint is not None and max_steps > 0 and step < max_steps):
        return step
    return None
