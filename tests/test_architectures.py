"""The architecture matrix: every causal-LM family users train on preference data, as a tiny
random model (``prefopt.testing.architectures``), in every layout and attention implementation.

- log-probs of each layout equal the naive computation (each sequence alone, full logits), or
  the layout falls back to padded for the documented reason;
- the LM head projects only the scored positions (lean path), head transforms included;
- one LoRA DPO step starts at ln 2, and the merged adapter gives the PEFT model's logits;
- an MoE router's auxiliary loss never enters the preference loss;
- ``docs/architectures.md`` holds the table the matrix generates.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from prefopt.data.collate import (
    PackedCollator,
    PaddedCollator,
    PrefixSharedCollator,
    choose_layout,
    make_collator,
)
from prefopt.data.tokenize import TokenizedPair
from prefopt.modeling.logprobs import sequence_logps
from prefopt.testing.architectures import (
    ARCHITECTURES,
    ATTENTIONS,
    BY_NAME,
    TABLE_END,
    TABLE_START,
    Architecture,
    build_architecture_model,
    committed_table,
    longest_row,
    markdown_table,
    matrix_pairs,
    tiny_tokenizer,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "architectures.md"
#: fp32: the layouts and the naive loop compute the same sums up to float rounding (~1e-5).
FP32_ATOL = 1e-4
#: bf16 autocast: a layout against the naive loop under the same autocast. Seen: up to 0.04
#: (SDPA on padded vs unpadded rows rounds differently); a wrong mask or head is off by > 1.
BF16_ATOL = 0.25
CASES = [
    (architecture.name, attention) for architecture in ARCHITECTURES for attention in ATTENTIONS
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Any:
    """One torch thread for this module: the models are so small that a second thread costs
    more in hand-offs than it computes, and on a busy 2-core machine spinning threads made the
    file 2.5x slower (52 s against 21 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _case_id(case: tuple[str, str]) -> str:
    return "-".join(case)


@functools.cache
def _pairs(conversational: bool) -> tuple[TokenizedPair, ...]:
    return tuple(matrix_pairs(conversational))


def _model_unless_refused(name: str, attention: str) -> Any:
    """The model; ``None`` for an attention implementation the family is documented to
    refuse, after checking that building it is refused (as loading a checkpoint would be)."""
    if attention in BY_NAME[name].unsupported:
        with pytest.raises(ValueError, match="does not support"):
            build_architecture_model(name, attention)
        return None
    return build_architecture_model(name, attention)


def naive_logps(
    model: Any, pairs: tuple[TokenizedPair, ...], logits_of: Callable[[Any], Any] | None = None
) -> torch.Tensor:
    """Per-sequence completion log-probs, each ``prompt + completion`` run alone (no padding,
    no custom mask, positions 0..n-1) through the model's own forward and full logits (or
    ``logits_of(ids)``): chosen sequences first, then rejected, as ``sequence_logps`` orders
    them."""

    def own_logits(ids: torch.Tensor) -> Any:
        return model(input_ids=ids).logits

    logits_of = logits_of or own_logits
    sums = []
    for completion in ("chosen_ids", "rejected_ids"):
        for pair in pairs:
            ids = torch.tensor([pair.prompt_ids + getattr(pair, completion)])
            logps = torch.log_softmax(logits_of(ids)[0].float(), dim=-1)
            scored = torch.arange(len(pair.prompt_ids), ids.shape[1])  # completion tokens
            sums.append(logps[scored - 1, ids[0, scored]].double().sum())
    return torch.stack(sums)


def _collators(pairs: tuple[TokenizedPair, ...]) -> dict[str, Any]:
    pad = tiny_tokenizer().pad_token_id
    packer = PackedCollator(pad, pack_tokens=3 * longest_row(pairs))
    assert any(len(row) > 1 for row in packer.rows(pairs))  # really packs several pairs
    return {"padded": PaddedCollator(pad), "prefix": PrefixSharedCollator(pad), "packed": packer}


def _layout_logps(model: Any, collator: Any, pairs: tuple[TokenizedPair, ...]) -> torch.Tensor:
    logps, lengths = sequence_logps(model, collator(list(pairs)))
    expected = [len(p.chosen_ids) for p in pairs] + [len(p.rejected_ids) for p in pairs]
    assert lengths.tolist() == expected
    return logps


def _check_layouts(
    architecture: Architecture, model: Any, pairs: tuple[TokenizedPair, ...], atol: float
) -> None:
    """Each layout the trainer would take equals the naive sums; each it refuses falls back to
    padded for the documented reason, and forcing it gives what the matrix documents."""
    expected = naive_logps(model, pairs)
    longest = longest_row(pairs)
    for layout, collator in _collators(pairs).items():
        chosen, why = choose_layout(layout, model, longest)
        if layout == "padded" or not architecture.fallback:
            assert (chosen, why) == (layout, "")
        else:
            assert chosen == "padded" and architecture.fallback in why, (layout, why)
            _check_forced(architecture, model, collator, pairs, expected, atol)
            continue
        got = _layout_logps(model, collator, pairs)
        error = (got - expected).abs().max().item()
        assert error < atol, f"{architecture.name} {layout}: off by {error:.4g} (atol {atol})"


def _check_forced(
    architecture: Architecture,
    model: Any,
    collator: Any,
    pairs: tuple[TokenizedPair, ...],
    expected: torch.Tensor,
    atol: float,
) -> None:
    """What the refused layout would have given: wrong numbers for the sliding windows (the
    fallback is needed), exact ones where it is only conservative, or an error."""
    if architecture.forced == "error":
        with pytest.raises(RuntimeError):
            _layout_logps(model, collator, pairs)
        return
    error = (_layout_logps(model, collator, pairs) - expected).abs().max().item()
    if architecture.forced == "wrong":
        assert error > 0.5, f"{architecture.name} forced {collator.layout}: only {error:.3g} off"
    else:
        assert error < atol, f"{architecture.name} forced {collator.layout}: {error:.3g} off"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_layouts_equal_naive_logps_fp32(case: tuple[str, str]) -> None:
    name, attention = case
    model = _model_unless_refused(name, attention)
    if model is None:
        return
    with torch.no_grad():
        _check_layouts(BY_NAME[name], model, _pairs(False), FP32_ATOL)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_layouts_equal_naive_logps_bf16_autocast_chat(case: tuple[str, str]) -> None:
    """The conversational pairs (chat template, one long prompt) under bf16 autocast: the
    layouts against the naive loop under the same autocast."""
    name, attention = case
    model = _model_unless_refused(name, attention)
    if model is None:
        return
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _check_layouts(BY_NAME[name], model, _pairs(True), BF16_ATOL)


# -- the LM head ---------------------------------------------------------------------------
HEAD_CASES = [a.name for a in ARCHITECTURES if a.head]


@pytest.mark.parametrize("name", HEAD_CASES)
def test_head_transform_is_applied(name: str) -> None:
    """Granite divides its logits by ``logits_scaling``, Cohere multiplies them by
    ``logit_scale``, Gemma 2/3 soft-cap them: sequence_logps gives the model's own log-probs
    and gradients (the lean head's backward includes the transform's derivative), and those
    differ clearly from the bare projection's."""
    model = build_architecture_model(name, attn_implementation=None)
    pairs = _pairs(False)
    batch = PaddedCollator(tiny_tokenizer().pad_token_id)(list(pairs))
    logps, _ = sequence_logps(model, batch)
    logps.sum().backward()
    lean_grads = [parameter.grad.clone() for parameter in model.parameters()]
    model.zero_grad()
    expected = naive_logps(model, pairs)
    expected.sum().backward()
    error = (logps.detach() - expected.detach()).abs().max().item()
    assert error < FP32_ATOL, f"{name}: off by {error:.4g} from the model's own log-probs"
    for (parameter_name, parameter), lean in zip(model.named_parameters(), lean_grads, strict=True):
        assert torch.allclose(lean, parameter.grad, atol=1e-5, rtol=1e-4), parameter_name
    with torch.no_grad():
        untransformed = _projection_only_logps(model, pairs)
    assert (untransformed - expected.detach()).abs().max().item() > 1.0  # the transform bites


def _projection_only_logps(model: Any, pairs: tuple[TokenizedPair, ...]) -> torch.Tensor:
    """The naive log-probs of the LM head's bare projection, without the model's transform."""
    captured: list[torch.Tensor] = []

    def projection(ids: torch.Tensor) -> torch.Tensor:
        model(input_ids=ids)
        return captured[-1]

    head = model.get_output_embeddings()
    handle = head.register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        return naive_logps(model, pairs, projection)
    finally:
        handle.remove()


@pytest.mark.parametrize("name", [a.name for a in ARCHITECTURES])
def test_lm_head_projects_only_one_position_per_row(name: str) -> None:
    """The lean path: the model's own head sees one position per row (``logits_to_keep=1``),
    never rows × width, head transforms or not; the scored positions are projected apart."""
    model = build_architecture_model(name, attn_implementation=None)
    pairs = _pairs(False)
    batch = PaddedCollator(tiny_tokenizer().pad_token_id)(list(pairs))
    widths: list[int] = []  # positions per row of each (rows, positions, hidden) head input

    def record(module: Any, args: Any) -> None:
        if args[0].dim() == 3:  # the lean path's own chunks are (tokens, hidden)
            widths.append(args[0].shape[1])

    handle = model.get_output_embeddings().register_forward_pre_hook(record)
    try:
        with torch.no_grad():
            sequence_logps(model, batch)
    finally:
        handle.remove()
    assert batch["input_ids"].shape[1] > 1
    assert widths and max(widths) == 1, f"{name}: LM head ran on {widths} positions per row"


@pytest.mark.parametrize("name", [a.name for a in ARCHITECTURES])
def test_first_batch_self_check_agrees(name: str) -> None:
    """The run's first-batch self-check (lean head against the model's own full logits, in the
    layout the run takes) finds every family in agreement: a false alarm would cost the run the
    lean path's memory savings for nothing."""
    from prefopt.modeling.head_check import check_lean_head

    model = build_architecture_model(name, attn_implementation=None)
    pairs = list(_pairs(False))
    layout, _ = choose_layout("auto", model, longest_row(pairs))
    check = check_lean_head(model, make_collator(layout, tiny_tokenizer().pad_token_id)(pairs))
    assert check is not None, f"{name}: takes the full-logits path"
    assert check.agrees and check.gap < 1e-5, check


# -- training: one LoRA DPO step, then merge ---------------------------------------------
@functools.cache
def _trained(name: str, root: Path) -> dict[str, Any]:
    """One LoRA DPO step on family ``name`` in-process, as ``prefopt train dpo`` takes it
    (PreferenceTrainer, the layout ``auto`` picks, the disabled adapter as reference); the
    base weights are saved first, for the merge."""
    from prefopt.config import LoraSettings
    from prefopt.modeling.lora import apply_lora

    folder = root / name
    base = build_architecture_model(name, attn_implementation=None)
    base.save_pretrained(folder / "base", safe_serialization=True)
    policy = apply_lora(base, LoraSettings(r=4, alpha=8))
    pairs = list(_pairs(False))
    layout, _ = choose_layout("auto", policy, longest_row(pairs))
    trainer = _dpo_trainer(policy, pairs, layout, folder / "run")
    trainer.train()
    policy.save_pretrained(folder / "adapter")
    first = next(entry for entry in trainer.state.log_history if "loss" in entry)
    return {"policy": policy.eval(), "first": first, "layout": layout, "folder": folder}


def _dpo_trainer(policy: Any, pairs: list[TokenizedPair], layout: str, output: Path) -> Any:
    from transformers import TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from prefopt.registry import get_algorithm
    from prefopt.training.reference import AdapterOffReference
    from prefopt.training.trainer import PreferenceTrainer

    spec = get_algorithm("dpo")
    args = TrainingArguments(
        output_dir=str(output),
        max_steps=1,
        per_device_train_batch_size=len(pairs),
        learning_rate=0.05,  # one step moves the adapter enough for the merge to matter
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
        label_names=[],
        log_level="error",
    )
    trainer = PreferenceTrainer(
        model=policy,
        args=args,
        train_dataset=pairs,
        data_collator=make_collator(layout, tiny_tokenizer().pad_token_id),
        make_loss=functools.partial(spec.make_loss, spec.config_class()),
        reference=AdapterOffReference(),
    )
    trainer.remove_callback(PrinterCallback)  # as prefopt train does: no dict on stdout
    return trainer


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("architectures")


@pytest.mark.parametrize("name", [a.name for a in ARCHITECTURES])
def test_lora_dpo_step_starts_at_ln2(name: str, trained_root: Path) -> None:
    run = _trained(name, trained_root)
    first = run["first"]
    assert abs(first["loss"] - math.log(2)) < 1e-5, first  # policy == reference at step 0
    assert first["rewards/margins"] == 0.0 and first["rewards/accuracies"] == 0.0
    assert 0 < first["grad_norm"] < 1e3
    expected_layout = "padded" if BY_NAME[name].fallback else "packed"
    assert run["layout"] == expected_layout


@pytest.mark.parametrize("name", [a.name for a in ARCHITECTURES])
def test_merged_adapter_equals_peft_model(name: str, trained_root: Path) -> None:
    """prefopt's merge (fp32 base + each adapter folded in) gives the PEFT model's logits, and
    the adapter one step moved changes them clearly (so the comparison means something)."""
    from prefopt.modeling.merge import load_full_precision

    run = _trained(name, trained_root)
    policy, folder = run["policy"], run["folder"]
    merged = load_full_precision([str(folder / "base"), str(folder / "adapter")]).eval()
    ids = torch.tensor([list(_pairs(False)[0].prompt_ids + _pairs(False)[0].chosen_ids)])
    with torch.no_grad():
        adapted = policy(input_ids=ids).logits
        with policy.disable_adapter():
            base = policy(input_ids=ids).logits
        folded = merged(input_ids=ids).logits
    assert (adapted - base).abs().max().item() > 1e-2, "the adapter did not change the logits"
    error = (folded - adapted).abs().max().item()
    assert error < 1e-4, f"{name}: merged logits off by {error:.3g}"


# -- mixture of experts: the router's auxiliary loss ---------------------------------------
MOE_CASES = [a.name for a in ARCHITECTURES if a.moe and "output_router_logits" not in a.fields]


@pytest.mark.parametrize("name", MOE_CASES)
def test_router_aux_loss_is_not_in_the_preference_loss(name: str) -> None:
    """prefopt reads log-probs only and passes no labels, so a config with
    ``output_router_logits=True`` (which makes the model compute its load-balancing loss)
    changes neither the DPO loss nor its gradients, in the packed layout too: every forward
    asks for no router logits (the model's load-balancing loss would read the 4D mask as 2D and
    fail)."""
    from prefopt.config import LoraSettings
    from prefopt.modeling.lora import apply_lora
    from prefopt.registry import get_algorithm

    pairs = list(_pairs(False))
    spec = get_algorithm("dpo")
    loss_fn = spec.make_loss(spec.config_class())
    results = []
    for router_logits in (False, True):
        torch.manual_seed(1)
        policy = apply_lora(build_architecture_model(name), LoraSettings(r=4, alpha=8))
        for parameter_name, parameter in policy.named_parameters():
            if "lora_B" in parameter_name:  # a policy that differs from its reference
                parameter.data.normal_(0, 0.2)
        policy.config.output_router_logits = router_logits
        layout, why = choose_layout("auto", policy, longest_row(pairs))
        assert layout == "packed", why
        loss = _dpo_loss(policy, make_collator(layout, 0)(pairs), loss_fn)
        loss.backward()
        grads = [p.grad.clone() for p in policy.parameters() if p.requires_grad]
        results.append((loss.detach(), grads))
        if router_logits:  # the model does compute it, and it is far from zero
            batch = make_collator("padded", 0)(pairs)
            with torch.no_grad():
                output = policy(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                )
            assert output.aux_loss is not None and output.aux_loss.item() > 0.5
    (loss_off, grads_off), (loss_on, grads_on) = results
    assert abs(loss_off.item() - math.log(2)) > 1e-3  # a real loss, not the step-0 value
    assert torch.allclose(loss_on, loss_off, atol=1e-6, rtol=0), (loss_on, loss_off)
    for on, off in zip(grads_on, grads_off, strict=True):
        assert torch.allclose(on, off, atol=1e-6, rtol=1e-5)


def _dpo_loss(policy: Any, batch: dict[str, Any], loss_fn: Any) -> torch.Tensor:
    from prefopt.api import PreferenceBatch

    with torch.no_grad(), policy.disable_adapter():
        reference, _ = sequence_logps(policy, batch)
    logps, lengths = sequence_logps(policy, batch)
    half = logps.shape[0] // 2
    output = loss_fn(
        PreferenceBatch(
            policy_chosen_logps=logps[:half],
            policy_rejected_logps=logps[half:],
            reference_chosen_logps=reference[:half],
            reference_rejected_logps=reference[half:],
            chosen_lengths=lengths[:half],
            rejected_lengths=lengths[half:],
            extras={},
        )
    )
    return output.loss


# -- the documented table --------------------------------------------------------------------
def test_docs_table_is_the_generated_one() -> None:
    """docs/architectures.md holds exactly the table the matrix generates; regenerate it with
    ``python -m prefopt.testing.architectures --write docs/architectures.md``."""
    document = DOCS.read_text(encoding="utf-8")
    assert TABLE_START in document and TABLE_END in document
    assert committed_table(document) == markdown_table()


def test_table_cells_follow_the_matrix() -> None:
    """Spot checks of the generator itself, so the docs test cannot pass on an empty table."""
    table = markdown_table()
    lines = [line for line in table.splitlines() if line.startswith("| ")][1:]
    rows = {tuple(cell.strip() for cell in line.split("|")[1:5]): line for line in lines}
    assert len(rows) == len(ARCHITECTURES) * len(ATTENTIONS)
    granite = rows[("granite", "`granite`", "divided by logits_scaling = 8", "sdpa")]
    assert granite.count("| exact") == 3
    gemma2 = rows[("gemma2", "`gemma2`", "soft-capped at final_logit_softcapping = 5", "sdpa")]
    assert gemma2.count("unsupported: SDPA cannot soft-cap") == 3
    sliding = rows[("mistral-sliding", "`mistral`", "projection", "eager")]
    assert sliding.count("falls back to padded: sliding-window") == 2


def test_gemma2_trains_with_the_default_attention(tmp_path: Path) -> None:
    """``model.attn_implementation: auto`` (the default) loads Gemma 2 with what it supports
    (eager); prefopt used to ask for sdpa, and the run stopped with "cannot load model". An
    explicit sdpa is passed on as asked, and refused in one line."""
    from prefopt.config import ModelConfig
    from prefopt.errors import UsageError
    from prefopt.modeling.loading import load_model
    from prefopt.testing import train_one_step
    from prefopt.testing.models import save_model_folder

    folder = save_model_folder(
        build_architecture_model("gemma2", attn_implementation="eager"),
        tiny_tokenizer(),
        tmp_path / "gemma2",
    )
    loaded = load_model(ModelConfig(name_or_path=str(folder)))
    assert loaded.config._attn_implementation == "eager"
    with pytest.raises(UsageError, match="cannot load model .*scaled_dot_product_attention"):
        load_model(ModelConfig(name_or_path=str(folder), attn_implementation="sdpa"))
    first = train_one_step("dpo", folder, tmp_path, pairs=4, sets=["model.precision=fp32"])
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)
