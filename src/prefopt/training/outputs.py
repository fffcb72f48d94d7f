"""What a finished run leaves in its folder: the resolved config, the trained adapter or model
with its tokenizer, a run card, and the final metrics."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefopt.training.run_folder import CONFIG_FILE, settle_permissions

if TYPE_CHECKING:
    from prefopt.config import RunConfig
    from prefopt.modeling.precision import Precision


def save_config(config: RunConfig, output_dir: Path, precision: Precision | None = None) -> Path:
    """Write the resolved config, secrets (tokens, keys) replaced by ``<redacted>``; the
    effective precision and its reason head the file as a comment."""
    from prefopt.training.redaction import redacted_config_yaml

    path = output_dir / CONFIG_FILE
    temporary = path.with_suffix(f".yaml.{os.getpid()}.tmp")  # data-parallel workers all write it
    header = f"# precision: {precision.describe()}\n" if precision is not None else ""
    temporary.write_text(header + redacted_config_yaml(config), encoding="utf-8")
    os.replace(temporary, path)
    return path


def save_and_summarize(
    trainer: Any, output_dir: Path, evaluate: bool, timer: Any = None
) -> dict[str, float]:
    """Save the trained adapter/model and tokenizer; the final metrics: the last logged training
    step's, plus a closing evaluation when there is eval data (the Trainer's own when its
    ``eval_strategy`` evaluated the final weights at the last step: not the same twice)."""
    final: dict[str, float] = {}
    if evaluate:
        if not getattr(getattr(trainer, "args", None), "load_best_model_at_end", False):
            final.update(_evaluation_at(trainer.state.log_history, trainer.state.global_step))
        if not final:
            final.update(trainer.evaluate())
            if timer is not None:
                timer.lap("evaluate")
    trainer.save_model(str(output_dir))
    settle_permissions(output_dir)
    if timer is not None:
        timer.lap("save")
    for entry in reversed(trainer.state.log_history):
        if "loss" in entry:
            final = {**entry, **final}
            break
    if getattr(getattr(trainer, "args", None), "should_save", True):
        write_run_card(output_dir, final)
    return final


def write_run_card(output_dir: Path, metrics: dict[str, Any]) -> None:
    """Replace the blank template PEFT saves as the adapter's README.md (and give a full model
    one) with a card of the run: base, algorithm, settings, data, final metrics
    (:func:`prefopt.modeling.model_cards.run_card`), from its ``prefopt_config.yaml``."""
    from prefopt.data.prep_cache import atomic_write_bytes
    from prefopt.modeling.merge import read_run_config
    from prefopt.modeling.model_cards import run_card

    run = read_run_config(str(output_dir))
    if run is None:
        return
    adapter = (output_dir / "adapter_config.json").is_file()
    title = str((run.get("training") or {}).get("run_name") or output_dir.name)
    card = run_card(title, run, metrics, adapter)
    atomic_write_bytes(output_dir / "README.md", card.encode("utf-8"))


def _evaluation_at(log_history: list[dict[str, Any]], step: int) -> dict[str, float]:
    """The metrics of an evaluation logged at ``step``, or ``{}``."""
    for entry in reversed(log_history):
        if "eval_loss" in entry and entry.get("step") == step:
            return {key: value for key, value in entry.items() if key != "step"}
    return {}
