"""The README.md model cards prefopt writes: for a run's output folder (the adapter or model a
run saved) and for a merged model. Both say what was trained from what, how and on which data,
from the run's resolved config (``prefopt_config.yaml``), in a table a person reads and front
matter the hub reads (``base_model``, ``library_name``, tags)."""

from __future__ import annotations

import json
from typing import Any

#: Run-config keys shown in a card, when the run had them.
CARD_TRAINING_KEYS = (
    "learning_rate",
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "lr_scheduler_type",
    "warmup_steps",
    "seed",
    "bf16",
    "fp16",
)
#: Final metrics shown in a run card, when the run logged them.
CARD_METRICS = (
    "loss",
    "rewards/accuracies",
    "rewards/margins",
    "eval_loss",
    "eval_rewards/accuracies",
    "eval_rewards/margins",
)


def _front_matter(base: str, library: str, algorithm: str | None) -> list[str]:
    lines = ["---", f"base_model: {json.dumps(base)}", f"library_name: {library}", "tags:"]
    lines.append("- prefopt")
    if algorithm:
        lines.append(f"- {algorithm}")
    return [*lines, "---", ""]


def run_rows(run: dict[str, Any], merged: bool = False) -> list[str]:
    """``| key | value |`` rows for a run config: algorithm and its settings, LoRA, training
    settings, data (``merged``: the card of the merged model)."""
    model = run.get("model") or {}
    rows = [f"| algorithm | {run.get('algorithm_name', '?')} |"]
    rows += [f"| {key} | {value} |" for key, value in (run.get("algorithm") or {}).items()]
    lora = run.get("lora")
    if lora:
        rows.append(
            f"| LoRA | r={lora.get('r')}, alpha={lora.get('alpha')}, "
            f"dropout={lora.get('dropout')}, targets={lora.get('target_modules')} |"
        )
    else:
        rows.append("| LoRA | none: every weight trained |")
    if model.get("load_in_4bit"):
        merge_note = "; merged into the fp32 base" if merged else ""
        rows.append(f"| trained on | a 4-bit (NF4) base{merge_note} |")
    if model.get("precision"):
        rows.append(f"| precision | {model['precision']} |")
    training = run.get("training") or {}
    rows += [
        f"| {key} | {training[key]} |"
        for key in CARD_TRAINING_KEYS
        if key in training and training[key] is not None
    ]
    data = run.get("data") or {}
    rows.append(f"| training data | `{data.get('train')}` |")
    if data.get("eval"):
        rows.append(f"| evaluation data | `{data.get('eval')}` |")
    rows.append(
        f"| max length | {data.get('max_length')} (prompt {data.get('max_prompt_length')}) |"
    )
    return rows


def run_card(title: str, run: dict[str, Any], metrics: dict[str, Any], adapter: bool) -> str:
    """README.md of a run's output folder: a LoRA adapter (``adapter``) or a full model."""
    from prefopt import __version__

    base = str((run.get("model") or {}).get("name_or_path") or "?")
    lines = _front_matter(base, "peft" if adapter else "transformers", run.get("algorithm_name"))
    lines += [f"# {title}", ""]
    if adapter:
        lines.append(
            f"A LoRA adapter trained with prefopt {__version__} on `{base}`. Load it with "
            "`PeftModel.from_pretrained(base, folder)`, or merge it into its base with "
            "`prefopt merge FOLDER` (one ordinary model folder)."
        )
    else:
        lines.append(
            f"All weights of `{base}` trained with prefopt {__version__}; loads with "
            "`AutoModelForCausalLM.from_pretrained` alone."
        )
    lines += ["", "| | |", "|---|---|", f"| base model | `{base}` |", *run_rows(run)]
    shown = [(key, metrics[key]) for key in CARD_METRICS if isinstance(metrics.get(key), float)]
    if shown:
        lines += ["", "Final metrics (the last logged step; `eval_`: the closing evaluation):", ""]
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4f} |" for key, value in shown]
    lines += ["", "The run's full configuration is in `prefopt_config.yaml`, its log in "]
    lines[-1] += "`metrics.jsonl`."
    return "\n".join(lines) + "\n"


def model_card(title: str, record: dict[str, Any], run: dict[str, Any] | None) -> str:
    """README.md of a merged model: base, merged adapters, dtype, and the run behind them."""
    from prefopt import __version__

    algorithm = run.get("algorithm_name") if run else None
    lines = _front_matter(record["root_model"], "transformers", algorithm)
    lines += [f"# {title}", ""]
    lines.append(
        f"LoRA adapter(s) merged into full-precision weights with prefopt {__version__}; "
        "loads with `AutoModelForCausalLM.from_pretrained` alone."
    )
    lines += ["", "| | |", "|---|---|", f"| base model | `{record['root_model']}` |"]
    for adapter in record["chain"][1:]:
        lines.append(f"| merged adapter | `{adapter}` |")
    lines.append(f"| weights dtype | {record['dtype']} |")
    if run:
        lines += run_rows(run, merged=True)
    else:
        lines.append("| run | unknown (the adapter folder has no prefopt_config.yaml) |")
    return "\n".join(lines) + "\n"
