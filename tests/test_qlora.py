"""QLoRA: `model.load_in_4bit` loads the base in NF4 (bitsandbytes runs 4-bit layers on CPU),
LoRA trains on it with correct gradients, and the adapter merges into the full-precision base."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SETS = [
    "training.per_device_train_batch_size=4",
    "training.logging_steps=1",
    "training.learning_rate=1e-2",
    "training.save_strategy=no",
    "model.precision=fp32",
]


def _twin_with_dequantized_weights(quantized: object, model_dir: Path) -> object:
    """An fp32 copy of the tiny model whose linear weights are the 4-bit model's, dequantized."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit

    from prefopt.config import ModelConfig
    from prefopt.modeling.loading import load_model

    twin = load_model(ModelConfig(name_or_path=str(model_dir), dtype="float32"))
    modules = dict(quantized.named_modules())  # type: ignore[attr-defined]
    count = 0
    for name, module in twin.named_modules():
        source = modules.get(name)
        if isinstance(source, bnb.nn.Linear4bit):
            weight = dequantize_4bit(source.weight.data, source.weight.quant_state)
            module.weight.data = weight.float().reshape(module.weight.shape)
            count += 1
    assert count == 14  # q, k, v, o, gate, up, down in 2 layers; lm_head stays full precision
    return twin


def test_lora_gradients_on_4bit_base_match_the_dequantized_model(tiny_model: Path) -> None:
    """Also after an eval-mode, no-grad forward (the reference pass), which on AVX512-BF16 CPUs
    made bitsandbytes repack the weights into a layout without a backward."""
    import torch

    from prefopt.config import LoraSettings, ModelConfig
    from prefopt.modeling.loading import load_model
    from prefopt.modeling.lora import apply_lora

    config = ModelConfig(
        name_or_path=str(tiny_model), load_in_4bit=True, bnb_4bit_compute_dtype="float32"
    )
    quantized = load_model(config)
    twin = _twin_with_dequantized_weights(quantized, tiny_model)
    torch.manual_seed(0)
    quantized = apply_lora(quantized, LoraSettings(r=4))
    torch.manual_seed(0)
    twin = apply_lora(twin, LoraSettings(r=4))
    generator = torch.Generator().manual_seed(1)
    for (name, p), (_, q) in zip(
        quantized.named_parameters(), twin.named_parameters(), strict=True
    ):
        if "lora_B" in name:  # non-zero B so that every LoRA weight gets a gradient
            values = torch.randn(p.shape, generator=generator) * 0.1
            p.data.copy_(values)
            q.data.copy_(values)
    ids = torch.randint(10, 500, (2, 12), generator=generator)

    quantized.eval()
    with torch.no_grad(), quantized.disable_adapter():
        quantized(input_ids=ids)  # what the reference pass does
    for model in (quantized, twin):
        model.train()
        model(input_ids=ids).logits.float().log_softmax(-1).mean().backward()
    compared = 0
    for (name, p), (_, q) in zip(
        quantized.named_parameters(), twin.named_parameters(), strict=True
    ):
        if p.grad is not None:
            assert q.grad is not None and q.grad.abs().sum() > 0, name
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-7, msg=name)
            compared += 1
    assert compared == 28  # A and B of the 14 adapted layers


def test_train_on_4bit_base_then_merge(tiny_model: Path, pairs_file: Path, tmp_path: Path) -> None:
    import bitsandbytes as bnb
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from prefopt.cli.common import quiet_libraries
    from prefopt.config_layers import resolve_run_config
    from prefopt.modeling.merge import merge_adapter
    from prefopt.registry import get_algorithm
    from prefopt.training.run import train
    from prefopt.training.stages import load_models

    spec = get_algorithm("dpo")
    out = tmp_path / "qlora"
    flags = {
        "model.name_or_path": str(tiny_model),
        "model.load_in_4bit": True,  # compute dtype: the default, bfloat16
        "data.train": str(pairs_file),
        "training.output_dir": str(out),
        "training.max_steps": 2,
    }
    config = resolve_run_config(spec, None, flags, SETS)
    quiet_libraries()
    # What the run trains: LoRA on NF4 layers, nothing else.
    built = load_models(config, spec)
    model, reference = built.policy, built.frozen_copy
    assert reference is None  # the reference is the base with the adapter switched off
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 14
    assert quantized[0].weight.quant_state.quant_type == "nf4"
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    del model

    train(config, spec, quiet=True)
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "loss" in s]
    assert [s["step"] for s in steps] == [1, 2]
    assert all(s["loss"] == s["loss"] and s["grad_norm"] > 0 for s in steps)
    assert (out / "adapter_model.safetensors").is_file()

    merged = merge_adapter(out, tmp_path / "merged")
    assert (merged.output_dir / "model.safetensors").is_file()
    assert not (merged.output_dir / "adapter_config.json").exists()
    # Independent check: base (fp32) + adapter through PEFT gives the merged model's logits.
    ids = torch.tensor([[1, 20, 30, 40, 50, 60, 70]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
        expected = PeftModel.from_pretrained(base, out)(input_ids=ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged.output_dir)(input_ids=ids).logits
    torch.testing.assert_close(got.float(), expected, rtol=1e-4, atol=1e-4)
    assert (expected - base_logits).abs().max() > 1e-3  # the adapter changed something


def test_4bit_without_lora_is_a_usage_error(tiny_model: Path) -> None:
    from prefopt.config_layers import resolve_run_config
    from prefopt.errors import UsageError
    from prefopt.registry import get_algorithm
    from prefopt.training.stages import load_models

    spec = get_algorithm("dpo")
    config = resolve_run_config(
        spec,
        None,
        {"model.name_or_path": str(tiny_model), "model.load_in_4bit": True},
        ["lora=null"],
    )
    with pytest.raises(UsageError, match="load_in_4bit trains LoRA adapters"):
        load_models(config, spec)


def test_importing_bitsandbytes_offline_prints_nothing_after_the_cli_silences_it() -> None:
    """bitsandbytes 0.50 asks the ``kernels`` package for a hub kernel on import; offline that
    logs "Skipping publisher trust check ..." to stderr, which turned prefopt's one-line
    errors into two lines. The CLI keeps those loggers to errors before anything loads."""
    pytest.importorskip("bitsandbytes")
    code = (
        "from prefopt.modeling.library_noise import silence_import_chatter\n"
        "silence_import_chatter()\n"
        "import bitsandbytes\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
