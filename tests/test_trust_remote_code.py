"""``--trust-remote-code`` on merge and eval: a model whose folder ships its own Python code is
refused (one line, exit 2) unless the flag is given, and works with it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from prefopt.cli.main import app
from prefopt.testing import synthetic_pairs, write_pairs

CONFIGURATION = """
from transformers import LlamaConfig


class PrefoptCustomConfig(LlamaConfig):
    model_type = "prefopt_custom_llama"
"""
MODELING = """
from transformers import LlamaForCausalLM

from .configuration_prefopt_custom import PrefoptCustomConfig


class PrefoptCustomForCausalLM(LlamaForCausalLM):
    config_class = PrefoptCustomConfig
"""


@pytest.fixture(scope="module")
def custom_code_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama as a model with custom code (``auto_map`` to Python files in its folder)."""
    folder = tmp_path_factory.mktemp("custom") / "custom-llama"
    shutil.copytree(tiny_model, folder)
    (folder / "configuration_prefopt_custom.py").write_text(CONFIGURATION)
    (folder / "modeling_prefopt_custom.py").write_text(MODELING)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="prefopt_custom_llama",
        architectures=["PrefoptCustomForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_prefopt_custom.PrefoptCustomConfig",
            "AutoModelForCausalLM": "modeling_prefopt_custom.PrefoptCustomForCausalLM",
        },
    )
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def custom_adapter(custom_code_model: Path) -> Path:
    """A LoRA adapter (non-zero B) on the custom-code model, saved with PEFT."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(custom_code_model, trust_remote_code=True)
    model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)
    out = custom_code_model.parent / "adapter"
    model.save_pretrained(out)
    return out


def test_merge_needs_the_flag(custom_adapter: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    refused = runner.invoke(app, ["merge", str(custom_adapter), "-o", str(tmp_path / "m")])
    assert refused.exit_code == 2
    assert refused.stderr.startswith("error: cannot load base model")
    assert "ships its own Python code; pass --trust-remote-code" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    assert not (tmp_path / "m").exists()

    merged = runner.invoke(
        app, ["merge", str(custom_adapter), "-o", str(tmp_path / "m"), "--trust-remote-code"]
    )
    assert merged.exit_code == 0, merged.stderr
    assert (tmp_path / "m" / "model.safetensors").is_file()
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "prefopt_custom_llama"


def test_eval_pairs_and_generate_need_the_flag(custom_code_model: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    data = write_pairs(tmp_path / "pairs.jsonl", synthetic_pairs(4))
    args = ["eval", "pairs", str(custom_code_model), "--data", str(data), "--no-ref"]
    args += ["--results", str(tmp_path / "results.json")]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "pass --trust-remote-code" in refused.stderr
    assert not (tmp_path / "results.json").exists()
    scored = runner.invoke(app, [*args, "--trust-remote-code"])
    assert scored.exit_code == 0, scored.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["metrics"]["pairs"] == 4

    prompts = write_pairs(tmp_path / "prompts.jsonl", [{"prompt": "Where?"}])
    answers = tmp_path / "answers.jsonl"
    generate = ["eval", "generate", str(custom_code_model), "--prompts", str(prompts)]
    generate += ["--out", str(answers), "--max-new-tokens", "3"]
    refused = runner.invoke(app, generate)
    assert refused.exit_code == 2 and "pass --trust-remote-code" in refused.stderr
    made = runner.invoke(app, [*generate, "--trust-remote-code"])
    assert made.exit_code == 0, made.stderr
    assert len(answers.read_text().splitlines()) == 1
