"""Tokenization: prompt/completion boundary, EOS, truncation policy, dropped pairs."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from prefopt.data.tokenize import (
    TokenizationReport,
    TokenizationSettings,
    tokenize_pairs,
    truncate_pair,
)


def test_truncation_keeps_prompt_end_and_completion_start() -> None:
    report = TokenizationReport()
    pair = truncate_pair(
        list(range(10)), [20, 21, 22, 23], [30, 31], TokenizationSettings(8, 5), report
    )
    assert pair is not None
    assert pair.prompt_ids == [5, 6, 7, 8, 9]
    assert pair.chosen_ids == [20, 21, 22]  # room = 8 - 5
    assert pair.rejected_ids == [30, 31]
    assert (report.prompts_truncated, report.completions_truncated) == (1, 1)


def test_pair_without_room_is_dropped() -> None:
    assert truncate_pair([1, 2, 3], [4], [5], TokenizationSettings(3, 10)) is None


def test_standard_record_gets_bos_and_eos(tiny_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = [(1, {"prompt": "Question: hi", "chosen": "The zora is red.", "rejected": "No."})]
    pairs, report = tokenize_pairs(rows, tokenizer, TokenizationSettings())
    assert report.pairs == 1
    pair = pairs[0]
    assert pair.prompt_ids[0] == tokenizer.bos_token_id
    assert pair.chosen_ids[-1] == tokenizer.eos_token_id
    assert pair.rejected_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(pair.chosen_ids[:-1]) == "The zora is red."


def test_conversational_record_completion_is_the_assistant_turn(tiny_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    row = {
        "prompt": [{"role": "user", "content": "Where does the zora live?"}],
        "chosen": [{"role": "assistant", "content": "In the cave."}],
        "rejected": [{"role": "assistant", "content": "In the sea."}],
        "h_w": 0,
        "h_l": True,
    }
    pairs, _ = tokenize_pairs([(1, row)], tokenizer, TokenizationSettings(), ["h_w", "h_l"])
    pair = pairs[0]
    assert tokenizer.decode(pair.prompt_ids).endswith("<|assistant|>\n")
    assert tokenizer.decode(pair.chosen_ids) == "In the cave.</s>"
    assert pair.chosen_ids.count(tokenizer.eos_token_id) == 1  # the template's EOS, not two
    assert pair.extras == {"h_w": 0.0, "h_l": 1.0}


def test_chat_completion_is_what_the_template_appends(tiny_model: Path) -> None:
    """A ChatML-style template ends a turn with EOS + newline: no EOS is added after it."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = (
        "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
        "{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    row = {
        "prompt": [{"role": "user", "content": "Where does the zora live?"}],
        "chosen": [{"role": "assistant", "content": "In the cave."}],
        "rejected": [{"role": "assistant", "content": "In the sea."}],
    }
    pairs, _ = tokenize_pairs([(1, row)], tokenizer, TokenizationSettings())
    chosen = pairs[0].chosen_ids
    full = tokenizer.apply_chat_template([*row["prompt"], *row["chosen"]], tokenize=False)
    prompt = tokenizer.apply_chat_template(
        row["prompt"], tokenize=False, add_generation_prompt=True
    )
    expected = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    assert chosen == expected
    assert tokenizer.decode(chosen) == "In the cave.</s>\n"
    assert chosen.count(tokenizer.eos_token_id) == 1


def test_dropped_pairs_are_counted(tiny_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = [
        (1, {"prompt": "short", "chosen": "a", "rejected": "b"}),
        (2, {"prompt": "a much longer prompt " * 10, "chosen": "a", "rejected": "b"}),
    ]
    pairs, report = tokenize_pairs(rows, tokenizer, TokenizationSettings(8, 8))
    assert len(pairs) == 1
    assert report.dropped == 1


@pytest.mark.parametrize("side", ["chosen", "rejected"])
def test_chat_record_needs_a_chat_template(tiny_model: Path, side: str) -> None:
    from prefopt.errors import DataError

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = None
    row = {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "a"}],
        "rejected": [{"role": "assistant", "content": "b"}],
    }
    with pytest.raises(DataError, match="no chat template"):
        tokenize_pairs([(7, row)], tokenizer, TokenizationSettings(), source="f.jsonl")
    del side
