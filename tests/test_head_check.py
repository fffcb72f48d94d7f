"""The lean LM head applies the model's own logit transform (scaling, soft-capping), and the
first-batch self-check catches a model whose forward does something the lean path does not
know, switching it to the full-logits path with one notice."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from prefopt.data.collate import PackedCollator, PaddedCollator
from prefopt.data.tokenize import TokenizationSettings, tokenize_pairs
from prefopt.modeling.head_check import check_lean_head, self_check
from prefopt.modeling.head_logprobs import HeadLogProbs
from prefopt.modeling.logit_transform import LogitTransform, logit_transform
from prefopt.modeling.logprobs import lean_path_parts, sequence_logps
from prefopt.testing import synthetic_pairs, write_pairs


# -- the transform ----------------------------------------------------------------------------
def test_transform_values_by_hand() -> None:
    u = torch.tensor([-30.0, 0.0, 2.0, 30.0], dtype=torch.float64)
    granite = LogitTransform(divisor=8.0)
    assert granite.apply(u).tolist() == pytest.approx([-3.75, 0.0, 0.25, 3.75])
    gemma = LogitTransform(softcap=5.0)
    expected = [5 * math.tanh(v / 5) for v in (-30.0, 0.0, 2.0, 30.0)]
    assert gemma.apply(u).tolist() == pytest.approx(expected)
    both = LogitTransform(scale=0.5, softcap=5.0)
    z = both.apply(u)
    assert z.tolist() == pytest.approx([5 * math.tanh(0.5 * v / 5) for v in u.tolist()])
    # dz/du = s (1 - tanh²(s u / c)), by hand at u = 2: 0.5 * (1 - tanh(0.2)²)
    assert float(both.derivative(z)[2]) == pytest.approx(0.5 * (1 - math.tanh(0.2) ** 2))
    assert LogitTransform().is_identity and not gemma.is_identity


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"model_type": "llama"}, LogitTransform()),
        ({"model_type": "granite", "logits_scaling": 8.0}, LogitTransform(divisor=8.0)),
        ({"model_type": "granitemoe", "logits_scaling": 4}, LogitTransform(divisor=4.0)),
        ({"model_type": "cohere", "logit_scale": 0.0625}, LogitTransform(scale=0.0625)),
        (
            {"model_type": "gemma2", "final_logit_softcapping": 30.0},
            LogitTransform(softcap=30.0),
        ),
        ({"model_type": "gemma3_text", "final_logit_softcapping": None}, LogitTransform()),
        # a scaling of a family whose meaning prefopt does not know: full logits
        ({"model_type": "somethingnew", "logits_scaling": 3.0}, None),
        ({"model_type": "somethingnew", "logits_scaling": 1.0}, LogitTransform()),
    ],
)
def test_transform_read_from_the_config(fields: dict, expected: LogitTransform | None) -> None:
    assert logit_transform(SimpleNamespace(**fields)) == expected


@pytest.mark.parametrize(
    "transform",
    [
        LogitTransform(),
        LogitTransform(scale=0.3),
        LogitTransform(0.7, 2.0),
        LogitTransform(divisor=3.0),
    ],
)
def test_head_backward_through_the_transform_is_the_gradient(transform: LogitTransform) -> None:
    """The hand-written backward equals finite differences (fp64), transform included."""
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([1, 6, 0])

    def function(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return HeadLogProbs.apply(h, w, b, targets, torch.float64, transform)

    assert torch.autograd.gradcheck(function, (hidden, weight, bias))
    # and the forward is log_softmax of the transformed logits
    logits = transform.apply(hidden @ weight.T + bias)
    expected = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)
    assert torch.allclose(function(hidden, weight, bias), expected)


# -- the self-check ---------------------------------------------------------------------------
class TweakedLlama(LlamaForCausalLM):
    """A model whose forward transforms its logits in a way no config field announces."""

    def forward(  # type: ignore[override]
        self, input_ids: object = None, logits_to_keep: int = 0, **kwargs: object
    ) -> object:
        output = super().forward(input_ids=input_ids, logits_to_keep=logits_to_keep, **kwargs)
        vocab = output.logits.shape[-1]
        output.logits = output.logits * 2.0 + torch.linspace(0.0, 3.0, vocab)
        return output


def _batch(tokenizer: object, collator: object, count: int = 3) -> dict:
    rows = synthetic_pairs(count, seed=2)
    pairs, _ = tokenize_pairs(enumerate(rows, 1), tokenizer, TokenizationSettings())
    return collator(pairs)  # type: ignore[operator]


def test_the_check_passes_a_model_the_lean_path_knows(tiny_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = LlamaForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).train()
    outcome = check_lean_head(model, _batch(tokenizer, PackedCollator(tokenizer.pad_token_id)))
    assert outcome is not None and outcome.agrees
    assert outcome.gap < 1e-5 and outcome.tolerance == 1e-3
    assert model.training  # the check restores the mode it found


def test_the_check_catches_a_model_made_to_disagree(tiny_model: Path) -> None:

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = TweakedLlama.from_pretrained(tiny_model, dtype=torch.float32).eval()
    batch = _batch(tokenizer, PaddedCollator(tokenizer.pad_token_id))
    with torch.no_grad():
        own, _ = sequence_logps(model, batch, lean=False)
        lean_before, _ = sequence_logps(model, batch)
    assert not torch.allclose(own, lean_before, atol=1e-2)  # the lean path is wrong here

    outcome = check_lean_head(model, batch)
    assert outcome is not None and not outcome.agrees
    assert outcome.notice().startswith(
        "TweakedLlama: the lean LM-head path differs from the model's own forward by "
    )
    self_check([model, None], batch)
    assert lean_path_parts(model) is None  # switched to the full-logits path
    with torch.no_grad():
        after, _ = sequence_logps(model, batch)
    assert torch.equal(after, own)


def test_a_run_on_a_disagreeing_model_trains_on_its_own_logprobs(
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """End to end: the notice is printed once, and the logged step-0 log-probs are the model's
    own (full logits), not the lean path's."""
    from prefopt.config_layers import resolve_run_config
    from prefopt.modeling import loading
    from prefopt.registry import get_algorithm
    from prefopt.training.run import train

    def load_tweaked(config: object, for_training: bool = True, dtype: object = None) -> object:
        return TweakedLlama.from_pretrained(tiny_model, dtype=torch.float32)

    monkeypatch.setattr(loading, "load_model", load_tweaked)
    monkeypatch.setenv("PREFOPT_CACHE_DIR", str(tmp_path / "cache"))
    rows = synthetic_pairs(4, seed=2)
    data = write_pairs(tmp_path / "pairs.jsonl", rows)
    spec = get_algorithm("dpo")
    config = resolve_run_config(
        spec,
        None,
        {
            "model.name_or_path": str(tiny_model),
            "data.train": str(data),
            "training.output_dir": str(tmp_path / "run"),
            "training.max_steps": 1,
            "training.per_device_train_batch_size": 4,
            "training.logging_steps": 1,
            "training.save_strategy": "no",
        },
        ["training.bf16=false"],
    )
    with caplog.at_level(logging.WARNING, logger="prefopt"):
        train(config, spec, quiet=True)
    notices = [r.getMessage() for r in caplog.records if "lean LM-head path" in r.getMessage()]
    assert len(notices) == 1 and notices[0].startswith("TweakedLlama: ")

    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    pairs, _ = tokenize_pairs(enumerate(rows, 1), tokenizer, TokenizationSettings())
    model = TweakedLlama.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.no_grad():
        own, _ = sequence_logps(model, PaddedCollator(tokenizer.pad_token_id)(pairs), lean=False)
    assert first["logps/chosen"] == pytest.approx(float(own[:4].mean()), abs=1e-4)


def test_offline_scoring_runs_the_same_check(tiny_model: Path) -> None:
    """``prefopt eval`` scores pairs through ``pair_logps``: a disagreeing model is scored with
    its own full logits there too."""
    from prefopt.eval.scoring import pair_logps

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = TweakedLlama.from_pretrained(tiny_model, dtype=torch.float32).eval()
    rows = synthetic_pairs(3, seed=2)
    pairs, _ = tokenize_pairs(enumerate(rows, 1), tokenizer, TokenizationSettings())
    with torch.no_grad():
        own, _ = sequence_logps(model, PaddedCollator(tokenizer.pad_token_id)(pairs), lean=False)
    chosen, rejected = pair_logps(model, pairs, tokenizer.pad_token_id)
    assert torch.allclose(torch.cat([chosen, rejected]).double(), own, atol=1e-5)


@pytest.mark.parametrize("name", ["gemma2", "gemma3-text", "granite", "cohere"])
def test_in_bf16_the_lean_head_rounds_as_the_model_does(name: str) -> None:
    """bf16 weights (a LoRA base on CUDA): the model rounds its logits to bf16 before its
    transform; the lean head transforms in bf16 too, so the two paths agree exactly (soft-capping
    the fp32 logits instead was 2e-3 nats per token off on the tiny Gemmas)."""
    from prefopt.testing.architectures import build_architecture_model, matrix_pairs

    attention = "eager" if name == "gemma2" else "sdpa"
    model = build_architecture_model(name, attn_implementation=attention).to(torch.bfloat16)
    outcome = check_lean_head(model, PaddedCollator(0)(matrix_pairs()[:2]))
    assert outcome is not None and outcome.tolerance == 5e-2
    assert outcome.gap == 0.0
