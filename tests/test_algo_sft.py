"""SFT: the token-mean NLL on plain tensors, record handling, `prefopt train sft` end to end
(the first logged loss equals the completion NLL computed here with transformers alone), and
the SFT -> DPO chain (the SFT output folder as the DPO run's --model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prefopt.api import PreferenceBatch
from prefopt.errors import DataError
from prefopt.registry import get_algorithm
from prefopt.testing import synthetic_pairs, write_pairs

SPEC = get_algorithm("sft")


def test_sft_loss_is_the_token_mean_nll_of_chosen() -> None:
    t = torch.tensor
    batch = PreferenceBatch(
        t([-6.0, -1.5, -9.0]), t([-1.0, -1.0, -1.0]), None, None, t([3, 1, 6]), t([2, 2, 2])
    )
    out = SPEC.build_loss(SPEC.config_class())(batch)
    assert out.loss.item() == pytest.approx((6.0 + 1.5 + 9.0) / (3 + 1 + 6))
    assert out.per_pair.tolist() == pytest.approx([2.0, 1.5, 1.5])
    assert out.weights.tolist() == [1.0, 1.0, 1.0]
    assert SPEC.needs_reference is False and SPEC.runner is None  # it runs through the stages
    assert SPEC.trainer_class == "prefopt.algorithms.sft:PrefoptSFTTrainer"


def test_records_prompt_completion_or_prompt_chosen() -> None:
    from prefopt.algorithms.sft import as_pair_record

    pc = as_pair_record({"prompt": "Q", "completion": "A"}, "f.jsonl", 1)
    assert (pc["prompt"], pc["chosen"], pc["rejected"]) == ("Q", "A", "A")
    pref = as_pair_record({"prompt": "Q", "chosen": "good", "rejected": "bad"}, "f.jsonl", 2)
    assert pref["chosen"] == "good" and pref["rejected"] == "good"
    with pytest.raises(DataError, match=r"^f.jsonl:3: completion: missing field \(SFT reads"):
        as_pair_record({"prompt": "Q", "answer": "A"}, "f.jsonl", 3)
    with pytest.raises(DataError, match=r"^f.jsonl:4: completion: empty string$"):
        as_pair_record({"prompt": "Q", "completion": "  "}, "f.jsonl", 4)
    with pytest.raises(DataError, match=r"^f.jsonl:5: prompt: missing field$"):
        as_pair_record({"completion": "A"}, "f.jsonl", 5)
    chat = {
        "prompt": [{"role": "user", "content": "hi"}],
        "completion": [{"role": "user", "content": "oops"}],
    }
    with pytest.raises(DataError, match=r"^f.jsonl:6: completion\[0\].role: expected 'assistant'"):
        as_pair_record(chat, "f.jsonl", 6)


def test_single_conversation_records() -> None:
    from prefopt.algorithms.sft import as_pair_record

    user = {"role": "user", "content": "Where does the zora live?"}
    reply = {"role": "assistant", "content": "In the cave."}
    earlier = [{"role": "system", "content": "Be brief."}, user, reply, user]
    record = as_pair_record({"messages": [*earlier, reply]}, "c.jsonl", 1)
    assert record["prompt"] == earlier  # earlier assistant turns are context
    assert record["chosen"] == [reply] and record["rejected"] == [reply]
    with pytest.raises(DataError, match=r"^c.jsonl:2: messages\[1\]: the last message must be"):
        as_pair_record({"messages": [reply, user]}, "c.jsonl", 2)
    with pytest.raises(DataError, match=r"^c.jsonl:3: messages: needs at least one message"):
        as_pair_record({"messages": [reply]}, "c.jsonl", 3)
    with pytest.raises(DataError, match=r"^c.jsonl:4: messages: expected a non-empty list"):
        as_pair_record({"messages": []}, "c.jsonl", 4)
    with pytest.raises(DataError, match=r"^c.jsonl:5: messages\[0\].content: expected a string"):
        as_pair_record({"messages": [{"role": "user", "content": 3}, reply]}, "c.jsonl", 5)
    with pytest.raises(DataError, match=r"^c.jsonl:6: messages\[1\]: empty response"):
        as_pair_record({"messages": [user, {"role": "assistant", "content": ""}]}, "c.jsonl", 6)


def test_cli_sft_messages_file_trains_like_prompt_completion(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs = synthetic_pairs(8, conversational=True)
    as_messages = [{"messages": [*p["prompt"], *p["chosen"]]} for p in pairs]
    as_completion = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs]
    losses = []
    for name, rows in (("messages", as_messages), ("completion", as_completion)):
        data = write_pairs(tmp_path / f"{name}.jsonl", rows)
        out = tmp_path / name
        _main(capsys, "sft", "--model", str(tiny_model), "--train-file", str(data),
              "--output-dir", str(out), "--max-steps", "1",
              "--set", "training.per_device_train_batch_size=8")  # fmt: skip
        losses.append(_first_loss(out))
    assert losses[0]["loss"] == losses[1]["loss"]
    assert losses[0]["num_tokens"] == losses[1]["num_tokens"]


def _completion_logps(model, tokenizer, prompt: str, completion: str) -> tuple[float, int]:
    """Sum of log π(completion tokens + EOS | prompt) with plain transformers."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    completion_ids = [*completion_ids, tokenizer.eos_token_id]
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
    token_logps = logps.gather(1, ids[0, 1:, None])[:, 0][len(prompt_ids) - 1 :]
    return float(token_logps.sum()), len(completion_ids)


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> None:
    from prefopt.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", *args, "-q", "--set", "training.logging_steps=1"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err


def _first_loss(out: Path) -> dict:
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[0])


def test_cli_sft_first_loss_is_completion_nll(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in synthetic_pairs(8)]
    data = write_pairs(tmp_path / "sft.jsonl", rows)
    out = tmp_path / "sft"
    _main(capsys, "sft", "--model", str(tiny_model), "--train-file", str(data),
          "--output-dir", str(out), "--max-steps", "1",
          "--set", "training.per_device_train_batch_size=8")  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    totals = [_completion_logps(model, tokenizer, r["prompt"], r["completion"]) for r in rows]
    expected = -sum(logp for logp, _ in totals) / sum(n for _, n in totals)
    assert _first_loss(out)["loss"] == pytest.approx(expected, rel=1e-4)
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json",
                 "prefopt_config.yaml", "metrics.jsonl"):  # fmt: skip
        assert (out / name).is_file(), name
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_model.resolve())

    # without completion_only_loss the prompt tokens count too: a different loss
    out_all = tmp_path / "sft_all"
    _main(capsys, "sft", "--model", str(tiny_model), "--train-file", str(data),
          "--output-dir", str(out_all), "--max-steps", "1", "--no-completion-only",
          "--set", "training.per_device_train_batch_size=8")  # fmt: skip
    assert _first_loss(out_all)["num_tokens"] == _first_loss(out)["num_tokens"]
    assert _first_loss(out_all)["loss"] != pytest.approx(expected, rel=1e-3)


def test_sft_on_chat_pairs_then_dpo_from_its_output(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    chat = write_pairs(tmp_path / "chat.jsonl", synthetic_pairs(8, conversational=True))
    sft_out = tmp_path / "sft"
    _main(capsys, "sft", "--model", str(tiny_model), "--train-file", str(chat),
          "--output-dir", str(sft_out), "--max-steps", "3",
          "--set", "training.per_device_train_batch_size=8",
          "--set", "training.learning_rate=0.003")  # fmt: skip
    sft_losses = [
        json.loads(line)["loss"]
        for line in (sft_out / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert len(sft_losses) == 3 and sft_losses[-1] < sft_losses[0]

    pairs = synthetic_pairs(8, seed=5)
    data = write_pairs(tmp_path / "pairs.jsonl", pairs)
    dpo_out = tmp_path / "dpo"
    _main(capsys, "dpo", "--model", str(sft_out), "--train-file", str(data),
          "--output-dir", str(dpo_out), "--max-steps", "1",
          "--set", "training.per_device_train_batch_size=8")  # fmt: skip
    first = _first_loss(dpo_out)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()

    def mean_chosen(model) -> float:
        logps = [_completion_logps(model, tokenizer, p["prompt"], p["chosen"])[0] for p in pairs]
        return sum(logps) / len(logps)

    base_value = mean_chosen(base)
    merged = PeftModel.from_pretrained(base, str(sft_out)).merge_and_unload().eval()
    # the DPO policy (fresh adapter) is the SFT-merged model, not the base
    assert first["logps/chosen"] == pytest.approx(mean_chosen(merged), rel=1e-4)
    assert abs(first["logps/chosen"] - base_value) > 0.1
    assert (dpo_out / "adapter_model.safetensors").is_file()


# -- SFT runs through the stages every algorithm shares -----------------------------------
def _sft_rows(count: int = 8) -> list[dict[str, str]]:
    return [{"prompt": r["prompt"], "completion": r["chosen"]} for r in synthetic_pairs(count)]


def _sft(model: Path, data: Path, out: Path, **overrides: object) -> object:
    import prefopt

    settings = {"per_device_train_batch_size": 4, "logging_steps": 1, "save_steps": 1}
    return prefopt.train(
        "sft", model=model, train_file=data, output_dir=out, max_steps=2,
        training=settings, **{"model.precision": "fp32", **overrides},
    )  # fmt: skip


def test_sft_is_timed_and_its_folder_protected_like_every_run(
    tiny_model: Path, tmp_path: Path
) -> None:
    from prefopt.errors import UsageError

    data = write_pairs(tmp_path / "sft.jsonl", _sft_rows())
    out = tmp_path / "sft"
    result = _sft(tiny_model, data, out)
    summary = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["summary"]
    timing = summary["timing"]
    for phase in ("tokenize", "model", "train", "save", "total"):
        assert timing[phase] >= 0, phase
    assert timing["train"] >= summary["train_runtime"] * 0.9
    phases = sum(seconds for name, seconds in timing.items() if name != "total")
    assert abs(phases - timing["total"]) < 0.01
    assert result.timing == timing  # type: ignore[attr-defined]
    assert summary["precision"] == "fp32"
    with pytest.raises(UsageError, match="already holds a run"):
        _sft(tiny_model, data, out)
    with pytest.raises(Exception, match="training.hub_token: a token in the run config"):
        _sft(tiny_model, data, tmp_path / "secret", **{"training.hub_token": "hf_abc"})
    assert not (tmp_path / "secret").exists()


def test_a_non_finite_sft_loss_stops_the_run_before_its_step(
    tiny_model: Path, tmp_path: Path
) -> None:
    """A model whose final norm holds a NaN: the first loss is NaN, and the guard stops the run
    with the one-line error every algorithm gives, before any backward or save."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from prefopt.training.guards import NonFiniteError

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model, broken)
    model = AutoModelForCausalLM.from_pretrained(broken)
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")
    model.save_pretrained(broken)
    data = write_pairs(tmp_path / "sft.jsonl", _sft_rows())
    out = tmp_path / "sft"
    with pytest.raises(NonFiniteError) as caught:
        _sft(broken, data, out)
    assert caught.value.step == 1 and caught.value.checkpoint is None
    assert str(caught.value).startswith("step 1: ") and "\n" not in str(caught.value)
    assert not list(out.glob("checkpoint-*")) and not (out / "adapter_model.safetensors").exists()
