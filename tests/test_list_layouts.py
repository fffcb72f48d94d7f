"""A list of N responses in one row: every response's log-probs equal its own separate
forward, in every layout, on every architecture of the matrix and on the real model
(SmolLM2 with its ChatML template); and the mask rule for N responses by hand."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import torch

from prefopt.data.list_collate import ListCollator, list_length
from prefopt.data.list_tokenize import TokenizedList, tokenize_lists
from prefopt.data.tokenize import TokenizationSettings
from prefopt.modeling.attention_masks import allowed
from prefopt.modeling.logprobs import sequence_logps
from prefopt.testing.architectures import (
    ARCHITECTURES,
    BY_NAME,
    build_architecture_model,
    tiny_tokenizer,
)

FP32_ATOL = 1e-4


def list_rows(conversational: bool) -> list[dict[str, Any]]:
    """Lists of 2 to 4 responses of uneven lengths (one long), some scores tied."""
    answers = [
        ["The zora is red.", "The zora is blue, or so people say.", "Red.", "It is green."],
        ["The mufilo lives in the cave.", "In the river."],
        ["Blue.", "The peralo is blue and it lives in the forest with many friends.", "Blue!"],
    ]
    questions = ["What colour is the zora?", "Where does the mufilo live?", "Tell me the peralo."]
    rows = []
    for question, responses in zip(questions, answers, strict=True):
        if conversational:
            prompt: Any = [{"role": "user", "content": question}]
            responses = [[{"role": "assistant", "content": r}] for r in responses]
        else:
            prompt = f"Question: {question}\nAnswer: "
        rows.append(
            {"prompt": prompt, "responses": responses, "scores": list(range(len(responses)))}
        )
    return rows


@functools.cache
def matrix_lists(conversational: bool) -> tuple[TokenizedList, ...]:
    lists, report = tokenize_lists(
        enumerate(list_rows(conversational), 1), tiny_tokenizer(), TokenizationSettings()
    )
    assert report.dropped == 0
    return tuple(lists)


def naive_response_logps(model: Any, lists: tuple[TokenizedList, ...]) -> torch.Tensor:
    """Every ``prompt + response`` alone through the model's own forward and full logits, list
    by list, response by response."""
    sums = []
    for item in lists:
        for response in item.response_ids:
            ids = torch.tensor([item.prompt_ids + response])
            logps = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            scored = torch.arange(len(item.prompt_ids), ids.shape[1])
            sums.append(logps[scored - 1, ids[0, scored]].double().sum())
    return torch.stack(sums)


def check_layouts(model: Any, lists: tuple[TokenizedList, ...], pad: int, atol: float) -> None:
    expected = naive_response_logps(model, lists)
    budget = 3 * max(list_length(item) for item in lists)
    for layout in ("padded", "prefix", "packed"):
        collator = ListCollator(layout, pad, pack_tokens=budget)
        if layout == "packed":
            assert any(len(row) > 1 for row in collator.rows(lists))  # really packs lists
        batch = collator(list(lists))
        got, lengths = sequence_logps(model, batch)
        assert lengths.tolist() == [len(r) for item in lists for r in item.response_ids]
        error = (got - expected).abs().max().item()
        assert error < atol, f"{layout}: off by {error:.4g} (atol {atol})"


def test_the_mask_for_three_responses_by_hand() -> None:
    # One segment: prompt p p, response 1 (a a), response 2 (b), response 3 (c c); padding.
    segment_ids = torch.tensor([[0, 0, 0, 0, 0, 0, 0, -1]])
    parts = torch.tensor([[0, 0, 1, 1, 2, 3, 3, 0]])
    mask = allowed(segment_ids, parts)[0, 0].int().tolist()
    assert mask == [
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 1, 0, 0, 0],  # response 2 sees the prompt and itself, not response 1
        [1, 1, 0, 0, 0, 1, 0, 0],
        [1, 1, 0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 0, 0, 1],  # padding: itself only
    ]


def test_positions_restart_after_the_prompt_for_every_response() -> None:
    item = TokenizedList([5, 6, 7], [[1, 2], [3], [4, 4, 4]], [2.0, 1.0, 0.0])
    batch = ListCollator("prefix", 0)([item])
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3, 3, 4, 5]]
    assert batch["parts"].tolist() == [[0, 0, 0, 1, 1, 2, 3, 3, 3]]
    assert batch["list_offsets"].tolist() == [0, 3]
    assert batch["list_ranks"].tolist() == [0, 1, 2]


CASES = [
    *((a.name, "sdpa") for a in ARCHITECTURES if not a.fallback and "sdpa" not in a.unsupported),
    ("llama", "eager"),  # the additive form of the same mask
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(case))
def test_list_layouts_equal_separate_forwards(case: tuple[str, str]) -> None:
    name, attention = case
    torch.set_num_threads(1)
    model = build_architecture_model(name, attention)
    with torch.no_grad():
        for conversational in (False, True):
            check_layouts(model, matrix_lists(conversational), tiny_tokenizer().pad_token_id,
                          FP32_ATOL)  # fmt: skip


def test_list_layouts_on_the_real_model(smollm2: Path) -> None:
    """SmolLM2-135M-Instruct, its ChatML template (the turn ends after <|im_end|>), a 49k
    vocabulary and grouped-query attention."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    lists, _ = tokenize_lists(enumerate(list_rows(True), 1), tokenizer, TokenizationSettings())
    assert tokenizer.decode(lists[0].response_ids[0]).endswith("<|im_end|>\n")
    with torch.no_grad():
        check_layouts(model, tuple(lists), tokenizer.pad_token_id or 0, 2e-3)


def test_every_family_of_the_matrix_is_covered_or_falls_back() -> None:
    covered = {name for name, _ in CASES}
    for architecture in ARCHITECTURES:
        assert (
            architecture.name in covered
            or architecture.fallback
            or ("sdpa" in BY_NAME[architecture.name].unsupported)
        )
