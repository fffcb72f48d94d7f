"""The hand-written LM-head backward and grouped-query attention without K/V copies: the same
numbers as the plain computations, less work."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.integrations import sdpa_attention

from prefopt.data.collate import PackedCollator, PaddedCollator
from prefopt.data.tokenize import TokenizationSettings, tokenize_pairs
from prefopt.modeling.head_logprobs import HeadLogProbs, linear_head_logps
from prefopt.modeling.logprobs import chunked_head_logps, head_logps, sequence_logps
from prefopt.modeling.sdpa_gqa import FORCE_GQA_VARIABLE, native_gqa_on_cpu
from prefopt.testing import synthetic_pairs


def test_head_logprobs_by_hand() -> None:
    # Two rows, a 3-token vocabulary, identity-like head: the logits are easy to write down.
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    bias = torch.tensor([0.0, 0.5, -1.0], dtype=torch.float64)
    hidden = torch.tensor([[2.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    targets = torch.tensor([0, 2])
    got = HeadLogProbs.apply(hidden, weight, bias, targets, torch.float64)
    # row 0: logits (2, 0.5, 1); row 1: logits (0, -0.5, -2)
    expected = [
        2 - math.log(math.exp(2) + math.exp(0.5) + math.exp(1)),
        -2 - math.log(math.exp(0) + math.exp(-0.5) + math.exp(-2)),
    ]
    assert got.tolist() == pytest.approx(expected, abs=1e-12)


def test_head_logprobs_gradients_match_autograd() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(9, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 9, (6,))
    upstream = torch.randn(6, dtype=torch.float64)

    ours = HeadLogProbs.apply(hidden, weight, bias, targets, torch.float64)
    grads = torch.autograd.grad(ours, (hidden, weight, bias), upstream)
    # Independent: autograd through log_softmax + gather.
    logits = hidden @ weight.T + bias
    plain = torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    expected = torch.autograd.grad(plain, (hidden, weight, bias), upstream)
    assert torch.allclose(ours, plain, atol=1e-12)
    for got, want in zip(grads, expected, strict=True):
        assert torch.allclose(got, want, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda h, w, b: HeadLogProbs.apply(h, w, b, targets, torch.float64),
        (hidden, weight, bias),
    )


@pytest.mark.parametrize("autocast", [False, True])
def test_linear_head_equals_checkpointed_head(autocast: bool) -> None:
    torch.manual_seed(1)
    head = torch.nn.Linear(16, 40, bias=False)
    hidden = torch.randn(11, 16, requires_grad=True)
    targets = torch.randint(0, 40, (11,))
    upstream = torch.randn(11)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        ours = linear_head_logps(head, hidden, targets)
        plain = head_logps(head, hidden, targets)
    assert ours.dtype == plain.dtype == torch.float32
    assert torch.equal(ours, plain)  # the same bf16 matmul, then the same fp32 arithmetic
    (got,) = torch.autograd.grad(ours, hidden, upstream)
    (want,) = torch.autograd.grad(plain, hidden, upstream)
    assert torch.allclose(got, want, atol=1e-6 if not autocast else 1e-2, rtol=0)


def test_head_keeps_no_logits_for_backward() -> None:
    vocab = 300
    head = torch.nn.Linear(8, vocab, bias=False)
    hidden = torch.randn(20, 8, requires_grad=True)
    targets = torch.randint(0, vocab, (20,))
    saved_shapes: list[tuple[int, ...]] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved_shapes.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        chunked_head_logps(head, hidden, targets, vocab).sum().backward()
    assert saved_shapes  # hidden, weight, targets, logsumexp
    assert all(shape != (20, vocab) for shape in saved_shapes), saved_shapes
    assert hidden.grad is not None


def test_native_gqa_setting_is_scoped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FORCE_GQA_VARIABLE, raising=False)
    with native_gqa_on_cpu("cpu") as active:
        assert active and os.environ[FORCE_GQA_VARIABLE] == "1"
    assert FORCE_GQA_VARIABLE not in os.environ
    with native_gqa_on_cpu("cuda") as active:  # masked GQA would hit the math kernel there
        assert not active and FORCE_GQA_VARIABLE not in os.environ
    monkeypatch.setenv(FORCE_GQA_VARIABLE, "0")  # the user's choice stands
    with native_gqa_on_cpu("cpu") as active:
        assert not active and os.environ[FORCE_GQA_VARIABLE] == "0"
    assert os.environ[FORCE_GQA_VARIABLE] == "0"


@pytest.mark.parametrize("collator_class", [PaddedCollator, PackedCollator])
def test_native_gqa_gives_identical_logps_without_kv_copies(
    collator_class: type, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(FORCE_GQA_VARIABLE, raising=False)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    rows = synthetic_pairs(5, seed=3)
    rows[0]["chosen"] += " and a few more words to make the rows uneven"
    pairs, _ = tokenize_pairs(enumerate(rows, 1), tokenizer, TokenizationSettings())
    batch = collator_class(tokenizer.pad_token_id)(pairs)

    repeats = {"count": 0}
    repeat_kv = sdpa_attention.repeat_kv

    def counting_repeat_kv(*args: object, **kwargs: object) -> torch.Tensor:
        repeats["count"] += 1
        return repeat_kv(*args, **kwargs)

    monkeypatch.setattr(sdpa_attention, "repeat_kv", counting_repeat_kv)

    def logps_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        logps, _ = sequence_logps(model, batch)
        logps.sum().backward()
        return logps.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    copied_logps, copied_grads = logps_and_grads()
    assert repeats["count"] > 0  # the masked path copies K/V heads by default
    repeats["count"] = 0
    with native_gqa_on_cpu("cpu"):
        native_logps, native_grads = logps_and_grads()
    assert repeats["count"] == 0
    assert torch.allclose(native_logps, copied_logps, atol=1e-9, rtol=0)
    for native, copied in zip(native_grads, copied_grads, strict=True):
        assert torch.allclose(native, copied, atol=1e-6, rtol=1e-5)
