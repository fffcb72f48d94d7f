"""Batch layouts: prefix-shared and packed rows give the padded layout's per-pair log-probs,
pairs in a packed row cannot see each other, the mask rule, lean log-probs, and training
end to end with each layout."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefopt.data.collate import (
    PackedCollator,
    PaddedCollator,
    PrefixSharedCollator,
    choose_layout,
    first_fit_decreasing,
    pair_length,
)
from prefopt.data.tokenize import TokenizationSettings, TokenizedPair, tokenize_pairs
from prefopt.modeling import logprobs
from prefopt.modeling.attention_masks import allowed
from prefopt.modeling.logprobs import gather_completion_logps, sequence_logps
from prefopt.testing import synthetic_pairs, train_one_step, write_pairs
from prefopt.testing.cli_runner import run_cli_in_process as run_cli


def _pairs(tokenizer, conversational: bool, count: int = 7) -> list[TokenizedPair]:
    rows = synthetic_pairs(count, seed=5, conversational=conversational)
    # Uneven lengths, so rows pad and several pairs share a packed row.
    if conversational:
        rows[0]["prompt"] = [{"role": "user", "content": "A much longer question about the zora?"}]
    else:
        rows[0]["chosen"] = "The answer is long and has many words in it, more than most."
    pairs, report = tokenize_pairs(enumerate(rows, 1), tokenizer, TokenizationSettings())
    assert report.dropped == 0
    return pairs


def _logps(model, collator, pairs) -> torch.Tensor:
    with torch.no_grad():
        logps, lengths = sequence_logps(model, collator(pairs))
    expected_lengths = [len(p.chosen_ids) for p in pairs] + [len(p.rejected_ids) for p in pairs]
    assert lengths.tolist() == expected_lengths
    return logps


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("conversational", [False, True])
def test_prefix_and_packed_match_padded(
    arch: str, conversational: bool, tiny_model: Path, tiny_qwen2: Path
) -> None:
    folder = tiny_model if arch == "llama" else tiny_qwen2
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    pairs = _pairs(tokenizer, conversational)
    pad = tokenizer.pad_token_id
    packer = PackedCollator(pad, pack_tokens=3 * max(pair_length(p) for p in pairs))
    assert any(len(row) > 1 for row in packer.rows(pairs))  # really packs several pairs
    padded = _logps(model, PaddedCollator(pad), pairs)
    for collator in (PrefixSharedCollator(pad), packer):
        other = _logps(model, collator, pairs)
        assert torch.allclose(other, padded, atol=1e-4, rtol=0), (collator.layout, other - padded)


def test_padded_lean_logps_match_full_logits(tiny_model: Path, monkeypatch) -> None:
    """LM head only at completion positions, in small chunks: same values and gradients as
    log-softmax over full logits."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    pairs = _pairs(tokenizer, conversational=False)
    batch = PaddedCollator(tokenizer.pad_token_id)(pairs)
    monkeypatch.setitem(logprobs.CHUNK_BYTES, "cpu", 4 * 5 * 512)  # 5 tokens a chunk
    results = []
    for lean in (True, False):
        model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
        if lean:
            value, _ = sequence_logps(model, batch)
        else:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            value, _ = gather_completion_logps(
                out.logits, batch["input_ids"], batch["completion_mask"]
            )
        value.sum().backward()
        grad = model.model.layers[0].mlp.up_proj.weight.grad.clone()
        results.append((value.detach(), grad, model.lm_head.weight.grad.clone()))
    (lean_v, lean_g, lean_h), (full_v, full_g, full_h) = results
    assert torch.allclose(lean_v, full_v, atol=1e-4, rtol=0)
    assert torch.allclose(lean_g, full_g, atol=1e-5, rtol=1e-4)
    assert torch.allclose(lean_h, full_h, atol=1e-5, rtol=1e-4)


def test_packed_pairs_do_not_see_each_other(tiny_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    pairs = _pairs(tokenizer, conversational=False, count=6)
    collator = PackedCollator(tokenizer.pad_token_id, pack_tokens=10_000)  # one row for all
    assert collator.rows(pairs) == [sorted(range(6), key=lambda i: -pair_length(pairs[i]))]
    before = _logps(model, collator, pairs)
    victim = 2
    changed = list(pairs)
    changed[victim] = TokenizedPair(
        [tokenizer.bos_token_id] + [17] * 9,
        [23] * len(pairs[victim].chosen_ids),
        [29] * len(pairs[victim].rejected_ids),
    )
    after = _logps(model, collator, changed)
    others = [i for i in range(6) if i != victim]
    index = others + [6 + i for i in others]
    assert torch.allclose(before[index], after[index], atol=1e-5, rtol=0)
    assert not torch.allclose(before[[victim, 6 + victim]], after[[victim, 6 + victim]])


def test_rejected_tokens_do_not_see_chosen_tokens(tiny_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    pairs = _pairs(tokenizer, conversational=False, count=3)
    collator = PrefixSharedCollator(tokenizer.pad_token_id)
    before = _logps(model, collator, pairs)
    pairs[1] = TokenizedPair(pairs[1].prompt_ids, [31] * 12, pairs[1].rejected_ids)
    after = _logps(model, collator, pairs)
    assert torch.allclose(before[3:], after[3:], atol=1e-5, rtol=0)  # every rejected unchanged
    assert before[1] != after[1]


def test_mask_rule_by_hand() -> None:
    # Row: pair 0 = prompt 2, chosen 2, rejected 1; pair 1 = prompt 1, chosen 1, rejected 1; pad.
    segments = [0, 0, 0, 0, 0, 1, 1, 1, -1]
    parts = [0, 0, 1, 1, 2, 0, 1, 2, 0]
    mask = allowed(torch.tensor([segments]), torch.tensor([parts]))[0, 0]
    for q in range(9):
        for k in range(9):
            same = segments[q] == segments[k] and segments[q] != -1
            expected = q == k or (same and k <= q and not (parts[q] == 2 and parts[k] == 1))
            assert bool(mask[q, k]) == expected, (q, k)


def test_first_fit_decreasing_packs_within_budget() -> None:
    lengths = [50, 20, 70, 30, 90, 10]
    rows = first_fit_decreasing(lengths, 100)
    assert rows == [[4, 5], [2, 3], [0, 1]]
    assert sorted(i for row in rows for i in row) == list(range(6))


def test_models_without_custom_masks_fall_back_to_padded() -> None:
    def fake(model_type: str, attention: str) -> SimpleNamespace:
        return SimpleNamespace(
            config=SimpleNamespace(model_type=model_type, _attn_implementation=attention)
        )

    assert choose_layout("auto", fake("llama", "sdpa")) == ("packed", "")
    assert choose_layout("prefix", fake("qwen2", "eager")) == ("prefix", "")
    layout, why = choose_layout("prefix", fake("gpt2", "sdpa"))
    assert layout == "padded" and "gpt2" in why
    layout, why = choose_layout("packed", fake("llama", "flash_attention_2"))
    assert layout == "padded" and "flash_attention_2" in why
    assert choose_layout("padded", fake("gpt2", "sdpa")) == ("padded", "")


@pytest.mark.parametrize("layout", ["padded", "prefix", "packed"])
def test_train_with_each_layout_starts_at_ln2(
    tiny_model: Path, tmp_path: Path, layout: str
) -> None:
    """Through the CLI for the default (packed) layout; in-process (the same run.train) for the
    others, which saves an interpreter start each."""
    rows = synthetic_pairs(16, seed=2, conversational=layout == "prefix")
    out = tmp_path / "run"
    sets = [f"data.layout={layout}", "model.precision=fp32", "training.save_strategy=no"]
    if layout == "packed":
        data = write_pairs(tmp_path / "pairs.jsonl", rows)
        held_out = write_pairs(tmp_path / "eval.jsonl", synthetic_pairs(12, held_out=True))
        code, _, stderr = run_cli(
            "train", "dpo", "--model", str(tiny_model), "--train-file", str(data),
            "--eval-file", str(held_out), "--output-dir", str(out), "--max-steps", "2", "--quiet",
            "--set", "training.per_device_train_batch_size=8", "--set", "training.logging_steps=1",
            *[item for key in sets for item in ("--set", key)],
            env={"PREFOPT_CACHE_DIR": str(tmp_path / "cache")},
        )  # fmt: skip
        assert code == 0, stderr
        lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        first = json.loads(lines[0])
        assert any("eval_loss" in json.loads(line) for line in lines)  # length-grouped eval
    else:
        sets.append(f"reference.cache_dir={tmp_path / 'cache'}")
        first = train_one_step("dpo", tiny_model, tmp_path, rows=rows, pairs=8, steps=2, sets=sets)
    saved = (out / "prefopt_config.yaml").read_text(encoding="utf-8")
    assert f"layout: {layout}" in saved
    assert abs(first["loss"] - math.log(2)) < 1e-5


def test_frozen_linears_in_bf16_change_nothing_under_autocast(tiny_model: Path) -> None:
    """Rounding frozen weights to bf16 once gives the operands autocast makes on every call."""
    from prefopt.config import LoraSettings
    from prefopt.modeling.logprobs import cast_frozen_linears
    from prefopt.modeling.lora import apply_lora

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    batch = PackedCollator(tokenizer.pad_token_id)(_pairs(tokenizer, conversational=False))
    results = []
    for cast in (False, True):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
        model = apply_lora(base, LoraSettings())
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.data.normal_(0, 0.1)
        if cast:
            assert cast_frozen_linears(model, torch.bfloat16) == 2 * 7 + 1  # layers' + LM head
            assert base.model.embed_tokens.weight.dtype == torch.float32  # left alone
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logps, _ = sequence_logps(model, batch)
        logps.sum().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        results.append((logps.detach(), grads))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1], strict=True))


def test_a_head_tied_to_the_embedding_stays_in_fp32(tiny_model: Path) -> None:
    """With tied embeddings (SmolLM2, Gemma, Qwen2.5-0.5B) the LM head's weight is the
    embedding's: rounding it would make every embedding lookup bf16, and the results would not
    be those of autocast alone (they are, with the tied head left as it is)."""
    from prefopt.config import LoraSettings
    from prefopt.modeling.logprobs import cast_frozen_linears
    from prefopt.modeling.lora import apply_lora

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    batch = PackedCollator(tokenizer.pad_token_id)(_pairs(tokenizer, conversational=False))
    results = []
    for cast in (False, True):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
        base.lm_head.weight = base.model.embed_tokens.weight  # tied, as SmolLM2's are
        model = apply_lora(base, LoraSettings())
        if cast:
            assert cast_frozen_linears(model, torch.bfloat16) == 2 * 7  # the layers', no head
            assert base.model.embed_tokens.weight.dtype == torch.float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logps, _ = sequence_logps(model, batch)
        results.append(logps.detach())
    assert torch.equal(results[0], results[1])


def test_lm_head_chunks_are_sized_in_bytes_per_device() -> None:
    from prefopt.modeling.logprobs import chunk_rows

    assert chunk_rows(151_936, "cpu") == (64 << 20) // (4 * 151_936) == 110
    assert chunk_rows(151_936, "cuda") == (512 << 20) // (4 * 151_936) == 883
    assert chunk_rows(49_152, "mps") == chunk_rows(49_152, "cpu")  # unknown: the CPU's budget
    assert chunk_rows(10**12, "cpu") == 1
