"""``prefopt eval MODEL --data PAIRS``: numbers checked against a plain forward pass.

The independent computation tokenizes each pair on its own (prompt with BOS, completion
without, EOS appended), runs one unpadded forward per sequence and sums ``log_softmax`` at
the completion tokens in float64: no collator, no batching, no prefopt scoring code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from prefopt.cli.main import app
from prefopt.testing import synthetic_pairs, write_pairs
from prefopt.testing.cli_runner import run_cli_in_process as run_cli

BETA = 0.25


@pytest.fixture(scope="module")
def adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter with random (non-zero) B weights and the run config a run would write."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("eval") / "run"
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    peft_model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    config = {
        "algorithm_name": "dpo",
        "model": {"name_or_path": str(tiny_model), "load_in_4bit": False},
        "lora": {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {"train": "train.jsonl", "max_length": 1024, "max_prompt_length": 512},
        "training": {"run_name": "toy", "learning_rate": 0.01},
        "algorithm": {"beta": BETA, "label_smoothing": 0.0},
    }
    (folder / "prefopt_config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def flagged_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = synthetic_pairs(
        24, seed=5, held_out=True, with_h_flags=True, wrong_orientation=0.3, both_true=0.2
    )
    assert {(r["h_w"], r["h_l"]) for r in rows} == {(1, 0), (0, 0), (0, 1)}
    return write_pairs(tmp_path_factory.mktemp("data") / "heldout.jsonl", rows)


def sequence_logp(model: Any, tokenizer: Any, prompt: str, completion: str) -> float:
    prompt_ids = tokenizer(prompt)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    completion_ids = [*completion_ids, tokenizer.eos_token_id]
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logps = torch.log_softmax(logits, dim=-1)
    start = len(prompt_ids) - 1  # logits at t predict token t + 1
    return float(sum(logps[start + i, tok] for i, tok in enumerate(completion_ids)))


@pytest.fixture(scope="module")
def expected(tiny_model: Path, adapter: Path, flagged_pairs: Path) -> list[dict[str, float]]:
    """Independent per-pair log-probs under base + adapter (policy) and base (reference)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    reference = [
        {
            "rc": sequence_logp(base, tokenizer, row["prompt"], row["chosen"]),
            "rr": sequence_logp(base, tokenizer, row["prompt"], row["rejected"]),
        }
        for row in map(json.loads, flagged_pairs.read_text().splitlines())
    ]
    policy = PeftModel.from_pretrained(base, str(adapter)).eval()
    rows = []
    rows_in = [json.loads(line) for line in flagged_pairs.read_text().splitlines()]
    for ref, row in zip(reference, rows_in, strict=True):
        rows.append(
            {
                **ref,
                "pc": sequence_logp(policy, tokenizer, row["prompt"], row["chosen"]),
                "pr": sequence_logp(policy, tokenizer, row["prompt"], row["rejected"]),
                "dh": row["h_l"] - row["h_w"],
            }
        )
    return rows


def test_cli_numbers_match_independent_forward(
    adapter: Path, flagged_pairs: Path, expected: list[dict[str, float]], tmp_path: Path
) -> None:
    per_pair, results_file = tmp_path / "per_pair.jsonl", tmp_path / "results.json"
    code, out, err = run_cli(
        "eval", str(adapter), "--data", str(flagged_pairs), "--out", str(per_pair),
        "--results", str(results_file), "--batch-size", "5",
    )  # fmt: skip
    assert code == 0, err
    rows = [json.loads(line) for line in per_pair.read_text().splitlines()]
    assert len(rows) == len(expected) == 24
    for row, want in zip(rows, expected, strict=True):
        assert row["policy_chosen_logps"] == pytest.approx(want["pc"], abs=2e-4)
        assert row["policy_rejected_logps"] == pytest.approx(want["pr"], abs=2e-4)
        assert row["reference_chosen_logps"] == pytest.approx(want["rc"], abs=2e-4)
        assert row["reference_rejected_logps"] == pytest.approx(want["rr"], abs=2e-4)
        margin = (want["pc"] - want["pr"]) - (want["rc"] - want["rr"])
        assert row["margin"] == pytest.approx(margin, abs=5e-4)
        assert row["reward_margin"] == pytest.approx(BETA * margin, abs=2e-4)
        assert row["reward_chosen"] == pytest.approx(BETA * (want["pc"] - want["rc"]), abs=2e-4)
    assert rows[0]["line"] == 1 and rows[0]["id"].startswith("eval-5-")

    results = json.loads(results_file.read_text())
    metrics = results["metrics"]
    margins = [(w["pc"] - w["pr"]) - (w["rc"] - w["rr"]) for w in expected]
    assert any(abs(m) > 0.01 for m in margins), "the adapter should change the model"
    assert results["beta"] == BETA  # from the run's prefopt_config.yaml
    assert results["reference"] == str(Path(results["run"]["model"]))
    assert metrics["pairs"] == 24
    assert metrics["accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 24)
    assert metrics["reward_margin"] == pytest.approx(BETA * sum(margins) / 24, abs=1e-4)
    assert metrics["logps_chosen"] == pytest.approx(sum(w["pc"] for w in expected) / 24, abs=1e-4)
    hallucination = [w for w in expected if w["dh"] == 1]
    assert metrics["hallucination_pairs"] == len(hallucination)
    assert metrics["hallucination_preference_rate"] == pytest.approx(
        sum(w["pr"] > w["pc"] for w in hallucination) / len(hallucination)
    )
    for group in ("-1", "0", "1"):
        members = [m for m, w in zip(margins, expected, strict=True) if str(w["dh"]) == group]
        assert results["by_delta_h"][group]["pairs"] == len(members)
        assert results["by_delta_h"][group]["accuracy"] == pytest.approx(
            sum(m > 0 for m in members) / len(members)
        )
    assert "hallucination_preference_rate" in out and f"{metrics['accuracy']:.4f}" in out


def test_merged_folder_uses_recorded_base_and_gives_the_same_numbers(
    adapter: Path, flagged_pairs: Path, expected: list[dict[str, float]], tmp_path: Path
) -> None:
    from prefopt.eval.offline import evaluate
    from prefopt.modeling.merge import merge_adapter

    merged = merge_adapter(adapter, tmp_path / "merged").output_dir
    output = evaluate(str(merged), str(flagged_pairs), batch_size=7)
    assert output.results["reference"] is not None
    assert output.results["beta"] == BETA  # the merge record keeps the run's hyperparameters
    for row, want in zip(output.per_pair, expected, strict=True):
        assert row["policy_chosen_logps"] == pytest.approx(want["pc"], abs=2e-4)
        assert row["reference_rejected_logps"] == pytest.approx(want["rr"], abs=2e-4)


def test_no_ref_and_explicit_ref(
    adapter: Path, tiny_model: Path, flagged_pairs: Path, expected: list[dict[str, float]]
) -> None:
    from prefopt.eval.offline import evaluate

    free = evaluate(str(adapter), str(flagged_pairs), no_ref=True, beta=1.0)
    assert free.results["reference"] is None
    for row, want in zip(free.per_pair, expected, strict=True):
        assert row["reference_chosen_logps"] is None
        assert row["margin"] == pytest.approx(want["pc"] - want["pr"], abs=2e-4)
    explicit = evaluate(str(adapter), str(flagged_pairs), ref=str(tiny_model))
    for row, want in zip(explicit.per_pair, expected, strict=True):
        assert row["reference_chosen_logps"] == pytest.approx(want["rc"], abs=2e-4)


def test_length_normalised_rate_and_chat_pairs(
    adapter: Path, flagged_pairs: Path, expected: list[dict[str, float]], tmp_path: Path
) -> None:
    from prefopt.eval.offline import evaluate

    output = evaluate(str(adapter), str(flagged_pairs), length_normalize=True)
    rows = [r for r in output.per_pair if r["h_l"] - r["h_w"] == 1]
    per_token = [
        r["policy_rejected_logps"] / r["rejected_length"]
        > r["policy_chosen_logps"] / r["chosen_length"]
        for r in rows
    ]
    assert output.results["metrics"]["hallucination_preference_rate"] == pytest.approx(
        sum(per_token) / len(rows)
    )
    chat = write_pairs(tmp_path / "chat.jsonl", synthetic_pairs(6, seed=2, conversational=True))
    chat_output = evaluate(str(adapter), str(chat))
    assert (
        chat_output.results["pairs"] == 6
        and "hallucination_preference_rate" not in (chat_output.results["metrics"])
    )


def test_bad_input_is_one_line_exit_2(adapter: Path, flagged_pairs: Path, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in flagged_pairs.read_text().splitlines()[:4]]
    del rows[2]["h_l"]
    bad = write_pairs(tmp_path / "bad.jsonl", rows)
    runner = CliRunner()
    result = runner.invoke(
        app, ["eval", str(adapter), "--data", str(bad), "--results", str(tmp_path / "r.json")]
    )
    assert result.exit_code == 2
    assert f"{bad}:3: h_l: missing field" in result.stderr
    assert not (tmp_path / "r.json").exists()

    existing = tmp_path / "exists.json"
    existing.write_text("{}")
    result = runner.invoke(
        app, ["eval", str(adapter), "--data", str(flagged_pairs), "--results", str(existing)]
    )
    assert result.exit_code == 2 and "already exists; pass --force" in result.stderr

    result = runner.invoke(app, ["eval", str(tmp_path / "missing"), "--data", str(flagged_pairs)])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_quiet_flag_and_unwritable_results_fail_before_any_model_loads(tmp_path: Path) -> None:
    """``eval pairs -q`` is accepted; a results path under a file is refused up front."""
    from prefopt.testing.cli_runner import run_cli_in_process as run_cli

    blocker = tmp_path / "file.jsonl"
    blocker.write_text("x")
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    target = blocker / "r.json"
    code, _, err = run_cli(
        "eval", "pairs", str(tmp_path / "no-model"), "-q", "--data", str(data),
        "--results", str(target),
    )  # fmt: skip
    assert code == 2, err
    assert f"cannot write {target}: {blocker} is a file, not a folder" in err
    assert "Traceback" not in err and "No such option" not in err
