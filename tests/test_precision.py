"""Precision as asked: the rules (explicit training.bf16/fp16 decide, auto only where neither
is set), what a run prints and records, fp32 training equal to TRL's DPOTrainer, SFT under the
same rules, and the load dtype that fits the device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prefopt.errors import ConfigError
from prefopt.modeling import precision as precision_module
from prefopt.modeling.precision import load_dtype_name, resolve_precision
from prefopt.precision_rules import Precision, explicit_precision
from prefopt.testing import synthetic_pairs, write_pairs
from prefopt.testing.cli_runner import run_cli_in_process as run_cli


@pytest.mark.parametrize(
    ("mode", "training", "expected"),
    [
        ("auto", {"bf16": False}, ("fp32", "training.bf16: false")),
        ("auto", {"bf16": True}, ("bf16", "training.bf16: true")),
        ("auto", {"fp16": True}, ("fp16", "training.fp16: true")),
        ("auto", {"fp16": False}, ("fp32", "training.fp16: false")),
        ("auto", {"bf16": False, "fp16": False}, ("fp32", "training.bf16: false")),
        ("fp32", {}, ("fp32", "model.precision: fp32")),
        ("fp32", {"bf16": False}, ("fp32", "model.precision: fp32")),
        ("bf16", {"fp16": False}, ("bf16", "model.precision: bf16")),
        ("fp16", {}, ("fp16", "model.precision: fp16")),
    ],
)
def test_explicit_settings_decide(mode: str, training: dict, expected: tuple[str, str]) -> None:
    decided = explicit_precision(mode, training)
    assert decided is not None
    assert (decided.mode, decided.reason) == expected


def test_auto_is_the_hardwares_only_when_nothing_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert explicit_precision("auto", {}) is None
    assert explicit_precision("auto", {"bf16": None, "fp16": None}) is None
    monkeypatch.setattr(precision_module, "_fast_bf16_hardware", lambda: "CPU with AMX-BF16")
    assert resolve_precision("auto", {}) == Precision("bf16", "auto: CPU with AMX-BF16")
    # the bug this guards against: an explicit false fell through to the hardware's bf16
    assert resolve_precision("auto", {"bf16": False}) == Precision("fp32", "training.bf16: false")
    monkeypatch.setattr(precision_module, "_fast_bf16_hardware", lambda: "")
    assert resolve_precision("auto", {}).mode == "fp32"


@pytest.mark.parametrize(
    ("mode", "training", "message"),
    [
        ("fp32", {"bf16": True}, "model.precision is fp32 but training.bf16 is true"),
        ("bf16", {"bf16": False}, "model.precision is bf16 but training.bf16 is false"),
        ("bf16", {"fp16": True}, "model.precision is bf16 but training.fp16 is true"),
        ("auto", {"bf16": True, "fp16": True}, "both true"),
        ("half", {}, "model.precision must be one of auto, bf16, fp16, fp32"),
    ],
)
def test_contradictions_are_config_errors(mode: str, training: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        explicit_precision(mode, training)


def test_a_contradiction_is_answered_before_torch_loads(tmp_path: Path) -> None:
    code, _, stderr = run_cli(
        "train", "dpo", "--model", str(tmp_path / "nowhere"), "--train-file", "x.jsonl",
        "--set", "model.precision=fp32", "--set", "training.bf16=true",
    )  # fmt: skip
    assert code == 2
    assert stderr.strip() == (
        "error: model.precision is fp32 but training.bf16 is true: set one of them"
    )


def _metrics(output_dir: Path) -> tuple[list[dict], dict]:
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "loss" in r], records[-1]["summary"]


@pytest.mark.parametrize("algorithm", ["dpo", "sft"])
def test_run_prints_and_records_its_precision(
    algorithm: str, tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code, _, stderr = run_cli(
        "train", algorithm, "--model", str(tiny_model), "--train-file", str(pairs_file),
        "-o", str(out), "--max-steps", "1", "--set", "training.bf16=false",
    )  # fmt: skip
    assert code == 0, stderr
    assert "precision: fp32 (training.bf16: false)" in stderr.splitlines()
    saved = (out / "prefopt_config.yaml").read_text()
    assert saved.startswith("# precision: fp32 (training.bf16: false)\n")
    import yaml

    recorded = yaml.safe_load(saved)
    assert recorded["model"]["precision"] == "fp32"  # what auto + training.bf16: false chose
    assert recorded["training"]["bf16"] is False and "fp16" not in recorded["training"]
    _, summary = _metrics(out)
    assert (summary["precision"], summary["precision_reason"]) == ("fp32", "training.bf16: false")


def test_sft_follows_model_precision(tiny_model: Path, pairs_file: Path, tmp_path: Path) -> None:
    """SFT has its own runner; it used to ignore model.precision and train in fp32."""
    from prefopt.cli.common import quiet_libraries
    from prefopt.config_layers import resolve_run_config
    from prefopt.registry import get_algorithm
    from prefopt.training.run import train

    spec = get_algorithm("sft")
    flags = {
        "model.name_or_path": str(tiny_model),
        "data.train": str(pairs_file),
        "training.output_dir": str(tmp_path / "sft"),
        "training.max_steps": 1,
    }
    config = resolve_run_config(spec, None, flags, ["model.precision=bf16"])
    quiet_libraries()
    seen: dict[str, bool] = {}
    from transformers import Trainer

    original = Trainer.train

    def spy(self: Trainer, *args: object, **kwargs: object) -> object:
        seen["bf16"] = bool(self.args.bf16)
        return original(self, *args, **kwargs)

    Trainer.train = spy  # type: ignore[method-assign]
    try:
        train(config, spec, quiet=True)
    finally:
        Trainer.train = original  # type: ignore[method-assign]
    assert seen == {"bf16": True}
    _, summary = _metrics(tmp_path / "sft")
    assert summary["precision"] == "bf16"


# -- fp32 equals TRL ---------------------------------------------------------------------------
STEPS, PAIRS, LEARNING_RATE = 6, 8, 1e-3


def _trl_losses(model_dir: Path, data: Path, out: Path) -> list[float]:
    """Per-step losses of TRL's DPOTrainer, full fine-tuning in fp32 (its own frozen copy)."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = DPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=PAIRS,
        max_steps=STEPS,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        learning_rate=LEARNING_RATE,
        beta=0.1,
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        disable_tqdm=True,
        seed=42,
    )
    rows = datasets.load_dataset("json", data_files=str(data), split="train")
    trainer = DPOTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer)
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_bf16_false_trains_in_fp32_like_trl(tiny_model: Path, tmp_path: Path) -> None:
    """``--set training.bf16=false``, full fine-tuning, 6 steps on one batch of 8 pairs (the
    same batch every step, so the data order cannot differ): every step's loss equals TRL's
    DPOTrainer in fp32 within 1e-6. Under bf16 autocast (what the run did before) they
    differed by up to 3e-4."""
    rows = [
        {k: r[k] for k in ("prompt", "chosen", "rejected")}
        for r in synthetic_pairs(PAIRS, conversational=True)
    ]
    data = write_pairs(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "prefopt"
    code, _, stderr = run_cli(
        "train", "dpo", "--model", str(tiny_model), "--train-file", str(data), "-o", str(out),
        "--max-steps", str(STEPS), "--set", "lora=null", "--beta", "0.1",
        "--set", "training.bf16=false", "--set", f"training.learning_rate={LEARNING_RATE}",
        "--set", f"training.per_device_train_batch_size={PAIRS}",
        "--set", "training.logging_steps=1", "--set", "training.save_strategy=no", "-q",
    )  # fmt: skip
    assert code == 0, stderr
    ours = [record["loss"] for record in _metrics(out)[0]]
    theirs = _trl_losses(tiny_model, data, tmp_path / "trl")
    assert len(ours) == len(theirs) == STEPS
    assert ours[-1] < ours[0] - 1e-3  # the steps trained
    assert ours == pytest.approx(theirs, abs=1e-6, rel=0)


# -- the load dtype that fits the device -------------------------------------------------------
BF16 = Precision("bf16", "auto: CUDA with bf16")
FP32 = Precision("fp32", "training.bf16: false")


@pytest.mark.parametrize(
    ("dtype", "precision", "full", "device", "expected"),
    [
        ("auto", BF16, False, "cuda", "bfloat16"),  # LoRA base: frozen, loaded in bf16 at once
        ("auto", BF16, True, "cuda", "auto"),  # full fine-tuning keeps fp32 master weights
        ("auto", BF16, False, "cpu", "auto"),  # CPU: fp32 load, frozen linears cast later
        ("auto", FP32, False, "cuda", "auto"),  # fp32 training loads fp32
        ("float16", BF16, False, "cuda", "float16"),  # an explicit dtype is kept
    ],
)
def test_load_dtype_decision(
    dtype: str, precision: Precision, full: bool, device: str, expected: str
) -> None:
    assert load_dtype_name(dtype, precision, full, device) == expected


def test_lora_base_loads_in_bf16_when_the_device_is_cuda(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device is faked where it is chosen; the tiny model really loads."""
    from prefopt.config_layers import resolve_run_config
    from prefopt.registry import get_algorithm
    from prefopt.training.stages import load_models

    spec = get_algorithm("dpo")
    monkeypatch.setattr(precision_module, "accelerator_type", lambda: "cuda")
    lora = resolve_run_config(spec, None, {"model.name_or_path": str(tiny_model)})
    built = load_models(lora, spec, BF16)
    model, reference = built.policy, built.frozen_copy
    assert reference is None
    base = {p.dtype for n, p in model.named_parameters() if "lora_" not in n}
    adapter = {p.dtype for n, p in model.named_parameters() if "lora_" in n}
    assert base == {torch.bfloat16}
    assert adapter == {torch.float32}  # PEFT keeps trainable adapter weights in fp32

    full = resolve_run_config(spec, None, {"model.name_or_path": str(tiny_model)}, ["lora=null"])
    built = load_models(full, spec, BF16)
    model, reference = built.policy, built.frozen_copy
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    # the frozen copy as the policy: a bf16 copy would run its norms in bf16 and miss ln 2
    assert {p.dtype for p in reference.parameters()} == {torch.float32}
