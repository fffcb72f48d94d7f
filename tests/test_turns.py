"""Per-turn preferences: the record, the tree-shaped row (later context sees the earlier chosen
answers, never a rejected one), and each turn's log-probs equal to a separate forward of that
turn's own conversation, on the matrix and on SmolLM2 with its chat template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from prefopt.data.tokenize import TokenizationSettings
from prefopt.data.turns import (
    TokenizedTurns,
    TurnCollator,
    TurnSpan,
    tokenize_turns,
    turns_length,
    validate_turns_record,
)
from prefopt.errors import DataError
from prefopt.modeling.attention_masks import allowed
from prefopt.modeling.logprobs import sequence_logps
from prefopt.testing.architectures import ARCHITECTURES, build_architecture_model, tiny_tokenizer


def conversations() -> list[dict[str, Any]]:
    def user(text: str) -> dict[str, str]:
        return {"role": "user", "content": text}

    def answer(chosen: str, rejected: str | None = None) -> dict[str, str]:
        message = {"role": "assistant", "content": chosen}
        if rejected is not None:
            message["rejected"] = rejected
        return message

    return [
        {"messages": [user("What colour is the zora?"), answer("Red.", "Blue, I think."),
                      user("And where does it live?"), answer("In the cave.", "The river.")]},
        {"messages": [user("Hello."), answer("Hi! How can I help?"),
                      user("Tell me the mufilo."), answer("It is green.", "No.")]},
        {"messages": [user("Where is the peralo?"), answer("In the forest.", "Far away, maybe."),
                      user("Colour?"), answer("Blue.", "It is a long and winding story."),
                      user("Thanks."), answer("You are welcome.", "Whatever.")]},
    ]  # fmt: skip


def naive(model: Any, items: list[TokenizedTurns]) -> torch.Tensor:
    """Each turn's chosen and rejected answer after its own context, alone: chosen of every
    turn first, then rejected (the tree layout's order)."""
    pairs = [pair for item in items for pair in item.pairs()]
    sums = []
    for field in ("chosen_ids", "rejected_ids"):
        for pair in pairs:
            ids = torch.tensor([pair.prompt_ids + getattr(pair, field)])
            logps = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            scored = torch.arange(len(pair.prompt_ids), ids.shape[1])
            sums.append(logps[scored - 1, ids[0, scored]].double().sum())
    return torch.stack(sums)


def check(model: Any, items: list[TokenizedTurns], pad: int, atol: float) -> None:
    expected = naive(model, items)
    budget = 3 * max(turns_length(item) for item in items)
    for layout in ("padded", "prefix", "packed"):
        collator = TurnCollator(layout, pad, pack_tokens=budget)
        if layout == "packed":
            assert any(len(row) > 1 for row in collator.rows(items))
        got, _ = sequence_logps(model, collator(items))
        error = (got - expected).abs().max().item()
        assert error < atol, f"{layout}: off by {error:.4g}"


def test_the_tree_mask_by_hand() -> None:
    # trunk: p p A A q q B (turn 1 answer A at 2..4, turn 2 answer B at 6..7); branches a, b
    item = TokenizedTurns([1, 2, 3, 4, 5, 6, 7], [TurnSpan(2, 4, [8]), TurnSpan(6, 7, [9, 9])])
    batch = TurnCollator("prefix", 0)([item])
    assert batch["parts"].tolist() == [[0, 0, 0, 0, 0, 0, 0, 1, 2, 2]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 6, 2, 6, 7]]
    mask = allowed(batch["segment_ids"], batch["parts"], batch["forks"])[0, 0].int().tolist()
    assert mask[7] == [1, 1, 0, 0, 0, 0, 0, 1, 0, 0]  # rejected a: the context of turn 1 only
    assert mask[8] == [1, 1, 1, 1, 1, 1, 0, 0, 1, 0]  # rejected b: turn 2's context (chosen A)
    assert mask[9] == [1, 1, 1, 1, 1, 1, 0, 0, 1, 1]
    assert mask[6] == [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]  # B sees A, never a rejected answer
    # sequences: chosen A 0, chosen B 1, rejected a 2, rejected b 3 (scored turn by turn)
    assert batch["score_index"].tolist() == [0, 0, 2, 1, 3, 3]
    assert batch["sequence_count"] == 4


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"messages": []}, "messages", "expected a list of messages"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            "messages",
            "no assistant turn has a rejected alternative",
        ),  # fmt: skip
        (
            {"messages": [{"role": "user", "content": "q", "rejected": "x"}]},
            "messages[0].rejected",
            "only an assistant turn",
        ),  # fmt: skip
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a", "rejected": ""},
                ]
            },
            "messages[1].rejected",
            "expected a non-empty string",
        ),  # fmt: skip
    ],
)
def test_a_bad_conversation_names_its_field(
    change: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(DataError) as raised:
        validate_turns_record(change, "c.jsonl", 3)
    assert raised.value.field == field and problem in raised.value.problem


CASES = [a.name for a in ARCHITECTURES if not a.fallback and "sdpa" not in a.unsupported]


@pytest.mark.parametrize("name", CASES)
def test_each_turn_equals_its_own_forward(name: str) -> None:
    torch.set_num_threads(1)
    items, report = tokenize_turns(list(enumerate(conversations(), 1)), tiny_tokenizer(),
                                   TokenizationSettings())  # fmt: skip
    assert report.pairs == 6 and report.dropped == 0
    model = build_architecture_model(name, "sdpa")
    with torch.no_grad():
        check(model, items, tiny_tokenizer().pad_token_id, 1e-4)


def test_each_turn_equals_its_own_forward_on_the_real_model(smollm2: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    items, _ = tokenize_turns(list(enumerate(conversations(), 1)), tokenizer,
                              TokenizationSettings())  # fmt: skip
    first = items[0]
    assert tokenizer.decode(first.trunk_ids[first.turns[0].start : first.turns[0].end]).endswith(
        "<|im_end|>\n"
    )
    with torch.no_grad():
        check(model, items, tokenizer.pad_token_id or 0, 2e-3)


def test_turns_that_do_not_fit_are_counted_each() -> None:
    rows = conversations()[2:]  # three preference turns
    settings = TokenizationSettings(max_length=24, max_prompt_length=12)
    items, report = tokenize_turns(list(enumerate(rows, 1)), tiny_tokenizer(), settings)
    kept = sum(len(item.turns) for item in items)
    assert kept + report.dropped == 3 and report.dropped >= 1


def test_validate_and_doctor_understand_conversations(tmp_path: Any) -> None:
    import json

    from prefopt.data.doctor import examine
    from prefopt.data.validate import validate_file

    path = tmp_path / "turns.jsonl"
    row = conversations()[0]
    row["messages"][3]["rejected"] = row["messages"][3]["content"]
    path.write_text(json.dumps(conversations()[2]) + "\n" + json.dumps(row) + "\n")
    report = validate_file(path)
    assert report.record_kinds["conversation"] == 2
    assert report.counts["identical"] == 1 and not report.clean
    assert examine(path).pairs == 3 + 2  # every turn as the pair it trains as


def test_token_lengths_of_conversations_are_said_to_be_unmeasured(
    tmp_path: Path, tiny_model: Path
) -> None:
    """validate --model and doctor --model do not measure conversations yet, and say so
    (validate printed an empty table, doctor 'ok: dropped 0 of 0')."""
    import json

    from prefopt.testing import run_cli, synthetic_conversations, write_pairs

    path = write_pairs(tmp_path / "turns.jsonl", synthetic_conversations(3))
    code, out, err = run_cli("data", "validate", str(path), "--model", str(tiny_model))
    assert code == 0, err
    assert "token lengths: not measured (per-turn conversations are not measured yet)" in out
    code, out, err = run_cli("data", "doctor", str(path), "--model", str(tiny_model), "--json")
    assert code == 0, err
    [check] = [c for c in json.loads(out)["checks"] if c["name"] == "truncation"]
    assert check["status"] == "skipped" and "conversations are not measured" in check["finding"]
