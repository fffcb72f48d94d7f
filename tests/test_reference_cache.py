"""Reference cache: keys, storage, corruption handling, agreement with the online reference,
and reuse across training runs."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefopt.config import LoraSettings, ModelConfig
from prefopt.data.collate import PackedCollator, PaddedCollator
from prefopt.data.tokenize import TokenizationSettings, TokenizedPair, tokenize_pairs
from prefopt.modeling.logprobs import sequence_logps
from prefopt.modeling.lora import apply_lora
from prefopt.testing import synthetic_pairs, train_one_step
from prefopt.training.reference import AdapterOffReference
from prefopt.training.reference_cache import (
    ReferenceCache,
    compute_reference_logps,
    reference_plan,
)
from prefopt.training.reference_keys import model_fingerprint, reference_key


def _pairs(tokenizer, count: int = 6) -> list[TokenizedPair]:
    pairs, _ = tokenize_pairs(
        enumerate(synthetic_pairs(count, seed=4), 1), tokenizer, TokenizationSettings()
    )
    return pairs


def test_store_and_load_round_trip(tmp_path: Path) -> None:
    cache = ReferenceCache(tmp_path)
    values = np.array([[-1.5, -2.25], [-3.0, -4.125]])
    path = cache.save("k1", values)
    assert path == tmp_path / "reference" / "k1.npz" and path.is_file()
    assert np.array_equal(cache.load("k1", (2, 2)), values)
    assert cache.load("absent", (2, 2)) is None


@pytest.mark.parametrize("damage", ["truncate", "garbage", "shape", "tamper"])
def test_stale_or_corrupt_entries_are_dropped(tmp_path: Path, damage: str, caplog) -> None:
    cache = ReferenceCache(tmp_path)
    values = np.array([[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0]])
    path = cache.save("key", values)
    shape = (3, 2)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:40])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "shape":
        shape = (4, 2)  # the data changed length under the same key: stale
    else:  # values rewritten without updating the checksum
        with np.load(path) as data:
            meta = data["meta"]
        np.savez(path.with_suffix(""), logps=values + 1.0, meta=meta)
    with caplog.at_level(logging.WARNING, logger="prefopt"):
        assert cache.load("key", shape) is None
    assert "stale or corrupt" in caplog.text
    assert not path.exists()  # removed, so the next run recomputes and rewrites it


def test_key_depends_on_every_input(tiny_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    pairs = _pairs(tokenizer)
    settings = TokenizationSettings()
    base = reference_key("model-a", tokenizer, pairs, settings, "fp32")
    assert base == reference_key("model-a", tokenizer, _pairs(tokenizer), settings, "fp32")
    changed = [TokenizedPair(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in pairs]
    changed[3] = TokenizedPair(
        pairs[3].prompt_ids, pairs[3].chosen_ids[:-1] + [7], pairs[3].rejected_ids
    )
    variants = [
        reference_key("model-b", tokenizer, pairs, settings, "fp32"),
        reference_key("model-a", tokenizer, changed, settings, "fp32"),
        reference_key("model-a", tokenizer, pairs[:-1], settings, "fp32"),
        reference_key("model-a", tokenizer, pairs, TokenizationSettings(512, 256), "fp32"),
        reference_key("model-a", tokenizer, pairs, settings, "bf16"),
    ]
    other_tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    other_tokenizer.chat_template = "{{ messages }}"
    variants.append(reference_key("model-a", other_tokenizer, pairs, settings, "fp32"))
    assert len({base, *variants}) == len(variants) + 1


def test_model_fingerprint_follows_the_weights(tiny_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    first = model_fingerprint(ModelConfig(name_or_path=str(copy)), root=tmp_path / "cache")
    assert first == model_fingerprint(ModelConfig(name_or_path=str(copy)), root=tmp_path / "cache")
    assert first != model_fingerprint(ModelConfig(name_or_path=str(copy), dtype="bfloat16"))
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one byte of one weight
    weights.write_bytes(bytes(data))
    assert model_fingerprint(ModelConfig(name_or_path=str(copy)), root=tmp_path / "cache") != first


def test_cached_values_equal_the_online_reference(tiny_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    model = apply_lora(
        AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), LoraSettings()
    )
    for name, parameter in model.named_parameters():  # a trained adapter: policy != reference
        if "lora_B" in name:
            parameter.data.normal_(0, 0.5)
    pairs = _pairs(tokenizer, count=5)
    reference = AdapterOffReference()
    values = compute_reference_logps(
        pairs,
        lambda batch: reference.logps(model, batch, sequence_logps),
        PackedCollator(tokenizer.pad_token_id),
        batch_size=2,
        device="cpu",
    )
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.no_grad():
        expected, _ = sequence_logps(base, PaddedCollator(tokenizer.pad_token_id)(pairs))
        policy, _ = sequence_logps(model, PaddedCollator(tokenizer.pad_token_id)(pairs))
    assert np.allclose(values[:, 0], expected[:5].numpy(), atol=1e-4)
    assert np.allclose(values[:, 1], expected[5:].numpy(), atol=1e-4)
    assert not np.allclose(values[:, 0], policy[:5].numpy(), atol=1e-2)  # adapter was off
    assert model.training  # eval mode only for the pass


def test_what_each_mode_plans() -> None:
    assert reference_plan("auto", entry_exists=False) == "fill"  # from the first epoch
    assert reference_plan("auto", entry_exists=True) == "attach"
    assert reference_plan("cached", entry_exists=False) == "attach"  # a separate pass first
    assert reference_plan("online", entry_exists=True) == "online"
    with pytest.raises(Exception, match="reference.mode"):
        reference_plan("sometimes", False)


def test_auto_fills_the_cache_from_the_first_epochs_own_reference(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bf16 autocast, the default reference mode, two epochs of 2 steps: no separate pass;
    step 1 is exactly ln 2 (the reference ran in the policy's own batch); the entry is written
    after epoch 1 from those values, epoch 2 reads them (no reference forward), and a second run
    starts from the entry with the same step-1 numbers."""
    import json

    import prefopt.training.reference_cache as module
    from prefopt.training.reference import AdapterOffReference

    passes: list[int] = []
    monkeypatch.setattr(module, "compute_reference_logps", lambda pairs, *a, **k: passes.append(1))
    forwards: list[int] = []
    real_logps = AdapterOffReference.logps

    def counting(self, policy, inputs, logps_fn):  # type: ignore[no-untyped-def]
        forwards.append(int(inputs["input_ids"].shape[0]))
        return real_logps(self, policy, inputs, logps_fn)

    monkeypatch.setattr(AdapterOffReference, "logps", counting)
    rows = synthetic_pairs(8, seed=3, with_h_flags=True)
    sets = [
        f"reference.cache_dir={tmp_path / 'cache'}",
        "model.precision=bf16",
        "training.learning_rate=1e-3",
    ]
    first = train_one_step(
        "dpo", tiny_model, tmp_path / "a", rows=rows, pairs=4, steps=4, sets=sets
    )
    assert passes == []  # no separate reference pass
    assert len(forwards) == 2  # epoch 1 only: epoch 2 read the values filled from it
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-7)
    assert first["rewards/margins"] == 0.0
    entries = list((tmp_path / "cache" / "reference").glob("*.npz"))
    assert len(entries) == 1
    with np.load(entries[0]) as data:
        assert json.loads(bytes(data["meta"]).decode())["filled_from"] == "training"
        assert data["logps"].shape == (8, 2)

    forwards.clear()
    second = train_one_step(
        "dpo", tiny_model, tmp_path / "b", rows=rows, pairs=4, steps=4, sets=sets
    )
    assert forwards == [] and passes == []  # read from the entry
    assert second["loss"] == pytest.approx(math.log(2), abs=1e-7)  # same batches, same numbers


def test_training_reuses_the_cache(tiny_model: Path, tmp_path: Path, monkeypatch) -> None:
    import prefopt.training.reference_cache as module

    calls: list[int] = []
    real = module.compute_reference_logps

    def counting(pairs, *args, **kwargs):
        calls.append(len(pairs))
        return real(pairs, *args, **kwargs)

    monkeypatch.setattr(module, "compute_reference_logps", counting)
    rows = synthetic_pairs(8, seed=3, with_h_flags=True)
    sets = [
        f"reference.cache_dir={tmp_path / 'cache'}",
        "reference.mode=cached",
        "model.precision=fp32",
    ]
    first = train_one_step("dpo", tiny_model, tmp_path / "a", rows=rows, pairs=8, sets=sets)
    assert calls == [8]
    assert abs(first["loss"] - math.log(2)) < 1e-5  # cached reference == policy at step 1
    entries = list((tmp_path / "cache" / "reference").glob("*.npz"))
    assert len(entries) == 1
    second = train_one_step("dpo", tiny_model, tmp_path / "b", rows=rows, pairs=8, sets=sets)
    assert calls == [8]  # the second run read the entry
    assert second["loss"] == pytest.approx(first["loss"], abs=1e-7)
    entries[0].write_bytes(b"corrupt")
    third = train_one_step("dpo", tiny_model, tmp_path / "c", rows=rows, pairs=8, sets=sets)
    assert calls == [8, 8]  # recomputed
    assert third["loss"] == pytest.approx(first["loss"], abs=1e-6)


def test_online_mode_leaves_no_entry(tiny_model: Path, tmp_path: Path) -> None:
    sets = [f"reference.cache_dir={tmp_path / 'cache'}", "reference.mode=online"]
    train_one_step("dpo", tiny_model, tmp_path, rows=synthetic_pairs(4, seed=1), pairs=4, sets=sets)
    assert not (tmp_path / "cache" / "reference").exists()


def test_reference_mode_is_checked() -> None:
    from prefopt.training.reference_cache import check_mode

    assert check_mode("auto") == "auto"
    with pytest.raises(Exception, match="auto, online, cached"):
        check_mode("never")


def test_the_fill_frees_a_full_fine_tuning_runs_frozen_copy(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full fine-tuning, two epochs, no eval data: once the first epoch has filled the cache
    the frozen copy is released, and nothing else keeps it alive (the stages hand it over)."""
    import gc
    import weakref

    from prefopt.training.reference import CachedReference, FrozenCopyReference

    copies: list[weakref.ref] = []
    real_init = FrozenCopyReference.__init__

    def remember(self, model):  # type: ignore[no-untyped-def]
        real_init(self, model)
        copies.append(weakref.ref(self.model))

    alive_after_release: list[bool] = []
    real_release = CachedReference.release

    def release(self):  # type: ignore[no-untyped-def]
        real_release(self)
        gc.collect()
        alive_after_release.append(copies[0]() is not None)

    monkeypatch.setattr(FrozenCopyReference, "__init__", remember)
    monkeypatch.setattr(CachedReference, "release", release)
    sets = [f"reference.cache_dir={tmp_path / 'cache'}", "lora=null", "model.precision=fp32"]
    rows = synthetic_pairs(8, seed=3)
    train_one_step("dpo", tiny_model, tmp_path, rows=rows, pairs=4, steps=4, sets=sets)
    assert alive_after_release == [False]  # released once, at the end of epoch 1, and freed


def test_a_cache_that_cannot_be_written_costs_the_run_nothing(
    tiny_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The entry is written at the end of the first epoch; a cache folder that cannot hold it
    (here below a regular file) gives one warning, and the run still trains and saves."""
    import logging

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    sets = [f"reference.cache_dir={blocker / 'cache'}", "model.precision=fp32"]
    with caplog.at_level(logging.WARNING, logger="prefopt"):
        first = train_one_step(
            "dpo",
            tiny_model,
            tmp_path,
            rows=synthetic_pairs(8, seed=3),
            pairs=4,
            steps=4,
            sets=sets,
        )
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()
    assert any("reference log-probs not cached" in r.getMessage() for r in caplog.records)
