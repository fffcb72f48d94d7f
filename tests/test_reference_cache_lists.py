"""The reference cache for lists of ranked responses and per-turn conversations: a ``cached``
run scores every response (every turn's answers) in a pass and trains as the online reference
does; ``auto`` fills the entry from the first epoch's own reference and reads it in the
second; a later run reads the entry and runs no reference at all; on two processes each
scores half the samples and the entry equals one process's."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefopt.testing import run_cli as run_cli_subprocess
from prefopt.testing import synthetic_conversations, synthetic_lists, write_pairs
from prefopt.testing.cli_runner import run_cli_in_process as run_cli

SAMPLES = 8
BATCH = 4  # two steps an epoch


def values_per_sample(rows: list[dict[str, Any]]) -> list[int]:
    return [
        len(row["responses"]) if "responses" in row
        else 2 * sum("rejected" in m for m in row["messages"])
        for row in rows
    ]  # fmt: skip


def reference_source(out: Path) -> str:
    """Where the run's summary says its reference log-probs came from."""
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return str(last["summary"]["reference"])


def losses(out: Path) -> list[float]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if "loss" in line]


def entry(cache: Path) -> tuple[np.ndarray, dict[str, Any]]:
    [path] = list((cache / "reference").glob("*.npz"))
    with np.load(path) as data:
        return np.array(data["logps"]), json.loads(bytes(data["meta"]).decode())


def train(model: Path, data: Path, out: Path, mode: str, cache: Path) -> None:
    code, _, stderr = run_cli(
        "train", "dpo", "--model", str(model), "--train-file", str(data), "--output-dir",
        str(out), "--max-steps", "4", "--set", "training.logging_steps=1",
        "--set", "model.precision=fp32", "--set", "training.learning_rate=1e-3",
        "--set", f"training.per_device_train_batch_size={BATCH}",
        "--set", f"training.per_device_eval_batch_size={BATCH}",
        "--set", f"reference.mode={mode}", "--set", f"reference.cache_dir={cache}", "-q",
    )  # fmt: skip
    assert code == 0, stderr


@pytest.mark.parametrize("kind", ["lists", "turns"])
def test_cached_and_filled_references_train_as_the_online_one(
    kind: str, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prefopt.training.reference_cache as module
    from prefopt.training.reference import AdapterOffReference

    rows = (
        synthetic_lists(SAMPLES, seed=12)
        if kind == "lists"
        else synthetic_conversations(SAMPLES, seed=13)
    )
    data = write_pairs(tmp_path / f"{kind}.jsonl", rows)
    forwards: list[int] = []
    real_logps = AdapterOffReference.logps

    def counting(self, policy, inputs, logps_fn):  # type: ignore[no-untyped-def]
        forwards.append(1)
        return real_logps(self, policy, inputs, logps_fn)

    monkeypatch.setattr(AdapterOffReference, "logps", counting)
    passes: list[int] = []
    real_pass = module.compute_reference_logps

    def counting_pass(samples, *args, **kwargs):  # type: ignore[no-untyped-def]
        passes.append(len(samples))
        return real_pass(samples, *args, **kwargs)

    monkeypatch.setattr(module, "compute_reference_logps", counting_pass)

    train(tiny_model, data, tmp_path / "online", "online", tmp_path / "unused")
    online = losses(tmp_path / "online")
    assert len(online) == 4 and len(forwards) == 4
    assert not (tmp_path / "unused" / "reference").exists()

    forwards.clear()
    train(tiny_model, data, tmp_path / "cached", "cached", tmp_path / "c1")
    assert passes == [SAMPLES]
    values, meta = entry(tmp_path / "c1")
    assert values.shape == (sum(values_per_sample(rows)),) and meta["samples"] == SAMPLES
    assert losses(tmp_path / "cached") == pytest.approx(online, abs=1e-6)
    assert len(forwards) == SAMPLES // BATCH  # the pass's batches, and none in training

    forwards.clear()
    train(tiny_model, data, tmp_path / "auto", "auto", tmp_path / "c2")
    assert passes == [SAMPLES]  # no separate pass: the first epoch filled the entry
    assert len(forwards) == 2  # epoch 1's two batches; epoch 2 read the entry
    filled, filled_meta = entry(tmp_path / "c2")
    assert filled_meta["filled_from"] == "training"
    assert np.allclose(filled, values, atol=1e-5)  # other batches, the same numbers
    assert losses(tmp_path / "auto") == pytest.approx(online, abs=1e-6)

    forwards.clear()
    train(tiny_model, data, tmp_path / "again", "cached", tmp_path / "c1")
    assert forwards == [] and passes == [SAMPLES]  # read the entry: no reference ran
    assert losses(tmp_path / "again") == pytest.approx(losses(tmp_path / "cached"), abs=1e-7)
    assert [
        reference_source(tmp_path / name) for name in ("online", "cached", "auto", "again")
    ] == [
        "online (the adapter switched off)",
        "cache (scored when training began)",
        "cache, filled by the first epoch's online reference",
        "cache (the entry was read)",
    ]


def test_a_list_entry_holds_each_responses_own_log_prob(tiny_model: Path, tmp_path: Path) -> None:
    """The entry of a list is its responses' summed log-probs under the base model, each as a
    separate padded forward of prompt + response would give."""
    from prefopt.data.list_collate import ListCollator
    from prefopt.data.list_tokenize import tokenize_lists
    from prefopt.data.tokenize import TokenizationSettings
    from prefopt.modeling.logprobs import sequence_logps

    rows = synthetic_lists(SAMPLES, seed=12)
    data = write_pairs(tmp_path / "lists.jsonl", rows)
    train(tiny_model, data, tmp_path / "run", "cached", tmp_path / "cache")
    values, _ = entry(tmp_path / "cache")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    lists, _ = tokenize_lists(enumerate(rows, 1), tokenizer, TokenizationSettings(), "lists")
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.no_grad():
        expected, _ = sequence_logps(base, ListCollator("padded", tokenizer.pad_token_id)(lists))
    assert np.allclose(values, expected.double().numpy(), atol=1e-4)


def test_two_processes_score_half_the_lists_each(tiny_model: Path, tmp_path: Path) -> None:
    rows = synthetic_lists(16, seed=12)
    data = write_pairs(tmp_path / "lists.jsonl", rows)
    entries = {}
    for processes in (1, 2):
        cache = tmp_path / f"cache{processes}"
        code, _, stderr = run_cli_subprocess(
            "train", "dpo", "--model", str(tiny_model), "--train-file", str(data),
            "--output-dir", str(tmp_path / f"run{processes}"), "--max-steps", "1", "-q",
            "--set", "model.precision=fp32", "--set", "reference.mode=cached",
            "--set", f"reference.cache_dir={cache}", "--set", "lists.pairs=all",
            "--set", "training.per_device_eval_batch_size=4",
            "--set", f"training.per_device_train_batch_size={4 // processes}",
            "--num-processes", str(processes),
        )  # fmt: skip
        assert code == 0, stderr
        entries[processes] = entry(cache)
    (single, single_meta), (shared, shared_meta) = entries[1], entries[2]
    assert np.array_equal(shared, single)  # bit for bit in fp32
    assert single_meta["scored_by"] == [16] and shared_meta["scored_by"] == [8, 8]


ZERO3 = Path(__file__).resolve().parent.parent / "examples" / "accelerate" / "ds_zero3.json"


@pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="DeepSpeed is not installed (pip install deepspeed); CI leaves it out",
)
def test_zero3_full_fine_tuning_trains_on_lists_from_the_cache(
    tiny_model: Path, tmp_path: Path
) -> None:
    """ZeRO-3 full fine-tuning holds no frozen copy: the policy scores the lists' reference
    before step 1, and the run starts at ln 2 and trains as one process with a frozen copy."""
    data = write_pairs(tmp_path / "lists.jsonl", synthetic_lists(16, seed=12))
    runs = {}
    for name, processes, extra in (("one", 1, []), ("zero3", 2, [f"training.deepspeed={ZERO3}"])):
        sets = ["lora=null", "model.precision=fp32", "training.logging_steps=1",
                "training.learning_rate=1e-4", f"reference.cache_dir={tmp_path / name}",
                f"training.per_device_train_batch_size={4 // processes}", *extra]  # fmt: skip
        flags = [item for value in sets for item in ("--set", value)]
        code, _, stderr = run_cli_subprocess(
            "train", "dpo", "--model", str(tiny_model), "--train-file", str(data), "-q",
            "--output-dir", str(tmp_path / f"run-{name}"), "--max-steps", "2",
            "--num-processes", str(processes), *flags,
        )  # fmt: skip
        assert code == 0, stderr
        runs[name] = losses(tmp_path / f"run-{name}")
    assert runs["zero3"][0] == pytest.approx(np.log(2), abs=1e-6)
    assert runs["zero3"] == pytest.approx(runs["one"], abs=1e-5)
    _, meta = entry(tmp_path / "zero3")
    assert meta["scored_by"] == [8, 8]
