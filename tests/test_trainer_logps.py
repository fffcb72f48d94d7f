"""The trainer's per-pair log-probs against an independent computation: one unpadded forward
per sequence, log_softmax over the vocabulary, gather of the completion tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from prefopt.data.collate import PaddedCollator
from prefopt.data.tokenize import TokenizationSettings, tokenize_pairs
from prefopt.testing import synthetic_pairs
from prefopt.training.trainer import PreferenceTrainer


def _independent_logps(model, tokenizer, row: dict, side: str) -> float:
    if isinstance(row["prompt"], str):
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        completion_ids = tokenizer(row[side], add_special_tokens=False)["input_ids"]
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    else:
        prompt_text = tokenizer.apply_chat_template(
            row["prompt"], tokenize=False, add_generation_prompt=True
        )
        full_text = tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=False)
        assert full_text.startswith(prompt_text)
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)[
            "input_ids"
        ]
        assert completion_ids[-1] == tokenizer.eos_token_id  # the template closes the turn
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    log_probs = torch.log_softmax(logits, dim=-1)
    picked = [
        log_probs[position - 1, ids[0, position]]
        for position in range(len(prompt_ids), ids.shape[1])
    ]
    return torch.stack(picked).double().sum().item()


@pytest.mark.parametrize("conversational", [False, True])
def test_trainer_logps_match_independent_forward(
    tiny_model: Path, tmp_path: Path, conversational: bool
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    rows = synthetic_pairs(6, seed=3, conversational=conversational)
    # Unequal lengths so the padded layout really pads.
    rows[0]["chosen" if not conversational else "prompt"] = (
        "The answer is long and has many words in it."
        if not conversational
        else [{"role": "user", "content": "A much longer question about the zora and more?"}]
    )
    pairs, report = tokenize_pairs(enumerate(rows, 1), tokenizer, TokenizationSettings())
    assert report.dropped == 0 and len(pairs) == 6

    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = PreferenceTrainer(
        model=model,
        args=args,
        make_loss=lambda ctx: None,
        reference=None,
    )
    batch = PaddedCollator(tokenizer.pad_token_id)(pairs)
    with torch.no_grad():
        result = trainer.preference_batch(model, batch)

    for index, row in enumerate(rows):
        expected_c = _independent_logps(model, tokenizer, row, "chosen")
        expected_r = _independent_logps(model, tokenizer, row, "rejected")
        assert result.policy_chosen_logps[index].item() == pytest.approx(expected_c, abs=1e-5)
        assert result.policy_rejected_logps[index].item() == pytest.approx(expected_r, abs=1e-5)
    # Lengths count completion tokens, EOS included.
    assert result.chosen_lengths[1].item() == len(pairs[1].chosen_ids)
    assert result.rejected_lengths[2].item() == len(pairs[2].rejected_ids)


def test_trainer_disables_dropout_so_step0_policy_equals_reference(
    tiny_model: Path, tmp_path: Path
) -> None:
    """With dropout on (here attention dropout 0.5) the policy's train-mode log-probs would be
    noisy and differ from the eval-mode reference's at step 0; the trainer turns it off."""
    from prefopt.training.trainer import disable_dropout

    assert disable_dropout(torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Dropout(0.0))) == 1

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(
        tiny_model, dtype=torch.float32, attention_dropout=0.5
    )
    rows = enumerate(synthetic_pairs(4, seed=1), 1)
    batch = PaddedCollator(tokenizer.pad_token_id)(
        tokenize_pairs(rows, tokenizer, TokenizationSettings())[0]
    )
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)

    def chosen_logps(trainer: PreferenceTrainer, train_mode: bool) -> torch.Tensor:
        model.train(train_mode)
        with torch.no_grad():
            return trainer.preference_batch(model, batch).policy_chosen_logps

    trainer = PreferenceTrainer(model=model, args=args, make_loss=lambda ctx: None, reference=None)
    torch.testing.assert_close(chosen_logps(trainer, True), chosen_logps(trainer, False))
    # The check can see dropout: switched back on, train-mode log-probs move.
    for module in model.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.5
    assert not torch.allclose(chosen_logps(trainer, True), chosen_logps(trainer, False), atol=1e-4)
