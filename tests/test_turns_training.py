"""Training on per-turn preferences: each turn of a conversation trains as the pair it is, all
turns in one row; the same turns written out as pairs give the same losses."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from prefopt.testing.cli_runner import run_cli_in_process as run_cli
from prefopt.testing.world import synthetic_pairs


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def conversations(count: int) -> list[dict[str, Any]]:
    """Two preference turns each: the second asked after the first's chosen answer."""
    pairs = synthetic_pairs(2 * count, seed=3)
    rows = []
    for first, second in zip(pairs[::2], pairs[1::2], strict=True):
        rows.append({"messages": [
            {"role": "user", "content": first["prompt"]},
            {"role": "assistant", "content": first["chosen"], "rejected": first["rejected"]},
            {"role": "user", "content": second["prompt"]},
            {"role": "assistant", "content": second["chosen"], "rejected": second["rejected"]},
        ]})  # fmt: skip
    return rows


def as_pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every turn as its own conversational pair: the messages before it, then the answers."""
    out = []
    for row in rows:
        messages = row["messages"]
        for index, message in enumerate(messages):
            if "rejected" in message:
                context = [{"role": m["role"], "content": m["content"]} for m in messages[:index]]
                out.append({
                    "prompt": context,
                    "chosen": [{"role": "assistant", "content": message["content"]}],
                    "rejected": [{"role": "assistant", "content": message["rejected"]}],
                })  # fmt: skip
    return out


def losses(out: Path) -> list[float]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if "loss" in line]


def test_turns_train_as_their_pairs(tiny_model: Path, tmp_path: Path) -> None:
    rows = conversations(8)
    turns = write(tmp_path / "turns.jsonl", rows)
    pairs = write(tmp_path / "pairs.jsonl", as_pairs(rows))
    common = ["--model", str(tiny_model), "--max-steps", "4", "--set", "training.logging_steps=1",
              "--set", "training.bf16=false", "--set", "reference.mode=online",
              "--set", "training.train_sampling_strategy=sequential"]  # fmt: skip
    code, stdout, stderr = run_cli("train", "dpo", "--train-file", str(turns), "--output-dir",
                                   str(tmp_path / "turns"), *common,
                                   "--set", "training.per_device_train_batch_size=2")  # fmt: skip
    assert code == 0, stderr
    assert re.search(r"train conversations\s+│ 8 \(0 turns dropped\)", stdout), stdout
    code, _, stderr = run_cli("train", "dpo", "--train-file", str(pairs), "--output-dir",
                              str(tmp_path / "pairs"), *common,
                              "--set", "training.per_device_train_batch_size=4")  # fmt: skip
    assert code == 0, stderr
    from_turns, from_pairs = losses(tmp_path / "turns"), losses(tmp_path / "pairs")
    assert abs(from_turns[0] - math.log(2)) < 1e-6
    assert len(from_turns) == len(from_pairs) == 4
    for a, b in zip(from_turns, from_pairs, strict=True):
        assert abs(a - b) < 1e-5  # the tree row and the separate pair rows: float rounding


def test_turns_refuse_what_they_cannot_give(tiny_model: Path, tmp_path: Path) -> None:
    turns = write(tmp_path / "turns.jsonl", conversations(2))
    cases = [
        (
            "factual",
            [],
            "algorithm 'factual' needs h_w, h_l, which per-turn conversations do not carry",
        ),
    ]
    for algorithm, extra, message in cases:
        out = tmp_path / algorithm
        code, _, stderr = run_cli("train", algorithm, "--model", str(tiny_model), "--train-file",
                                  str(turns), "--output-dir", str(out), "--max-steps", "1",
                                  *extra)  # fmt: skip
        assert code == 2 and message in stderr, stderr
        assert not out.exists()


def test_eval_scores_conversations_turn_by_turn(tiny_model: Path, tmp_path: Path) -> None:
    """`eval pairs` on conversations scores each preference turn as the pair it trains as (the
    same numbers as the file of those pairs) and splits the metrics by the turn's assistant
    message: here the second and third answers (the first has no rejected alternative)."""
    pairs = synthetic_pairs(24, seed=6)
    rows = []
    for index, (a, b, c) in enumerate(zip(pairs[::3], pairs[1::3], pairs[2::3], strict=True)):
        rows.append({"id": f"c{index}", "messages": [
            {"role": "user", "content": a["prompt"]},
            {"role": "assistant", "content": a["chosen"]},
            {"role": "user", "content": b["prompt"]},
            {"role": "assistant", "content": b["chosen"], "rejected": b["rejected"]},
            {"role": "user", "content": c["prompt"]},
            {"role": "assistant", "content": c["chosen"], "rejected": c["rejected"]},
        ]})  # fmt: skip
    turns = write(tmp_path / "turns.jsonl", rows)
    as_pair_file = write(tmp_path / "pairs.jsonl", as_pairs(rows))
    run = tmp_path / "run"
    code, _, stderr = run_cli("train", "dpo", "--model", str(tiny_model), "--train-file",
                              str(turns), "--output-dir", str(run), "--max-steps", "4",
                              "--set", "training.bf16=false",
                              "--set", "training.learning_rate=1e-3")  # fmt: skip
    assert code == 0, stderr
    outputs = {}
    for name, data in (("turns", turns), ("pairs", as_pair_file)):
        per_pair, results_file = tmp_path / f"{name}_rows.jsonl", tmp_path / f"{name}.json"
        code, stdout, stderr = run_cli("eval", "pairs", str(run), "--data", str(data), "--out",
                                       str(per_pair), "--results", str(results_file))  # fmt: skip
        assert code == 0, stderr
        outputs[name] = (
            json.loads(results_file.read_text()),
            [json.loads(line) for line in per_pair.read_text().splitlines()],
            stdout,
        )
    (results, per_turn, stdout), (pair_results, per_pair_rows, _) = (
        outputs["turns"],
        outputs["pairs"],
    )
    assert results["metrics"] == pair_results["metrics"] and results["pairs"] == 16
    assert [r["margin"] for r in per_turn] == [r["margin"] for r in per_pair_rows]
    assert [r["turn"] for r in per_turn] == [2, 3] * 8
    assert [r["id"] for r in per_turn][:2] == ["c0", "c0"]
    for turn in ("2", "3"):
        margins = [r["margin"] for r in per_turn if str(r["turn"]) == turn]
        group = results["by_turn"][turn]
        assert group["pairs"] == 8
        assert group["accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 8)
        assert group["margin"] == pytest.approx(sum(margins) / 8)
    assert set(results["by_turn"]) == {"2", "3"}
    assert "by turn" in stdout


def test_eval_tokenizes_conversations_as_training_does(tiny_model: Path, tmp_path: Path) -> None:
    """A long conversation: its turns' context is never cut from the front (as a pair's prompt
    would be at --max-prompt-length), and the turns --max-length has no room for are dropped
    and counted, as in training; the scores are those of training's own tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefopt.data.collate import PaddedCollator
    from prefopt.data.tokenize import TokenizationSettings
    from prefopt.data.turns import tokenize_turns
    from prefopt.modeling.logprobs import sequence_logps

    pairs = synthetic_pairs(6, seed=9)
    rows = []
    for index in range(2):
        messages = []
        for pair in pairs[3 * index : 3 * index + 3]:
            messages += [
                {"role": "user", "content": (pair["prompt"] + " ") * 4},
                {"role": "assistant", "content": pair["chosen"], "rejected": pair["rejected"]},
            ]
        rows.append({"messages": messages})
    turns = write(tmp_path / "turns.jsonl", rows)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    settings = TokenizationSettings(max_length=160, max_prompt_length=16)
    items, report = tokenize_turns(list(enumerate(rows, 1)), tokenizer, settings)
    expected_pairs = [pair for item in items for pair in item.pairs()]
    assert report.dropped >= 1 and len(expected_pairs) >= 2  # the test's premise
    assert max(len(pair.prompt_ids) for pair in expected_pairs) > 16  # longer than the limit
    per_turn = tmp_path / "rows.jsonl"
    code, stdout, stderr = run_cli("eval", "pairs", str(tiny_model), "--data", str(turns),
                                   "--no-ref", "--max-length", "160", "--max-prompt-length",
                                   "16", "--out", str(per_turn), "--results",
                                   str(tmp_path / "results.json"))  # fmt: skip
    assert code == 0, stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["pairs"] == len(expected_pairs) and results["dropped"] == report.dropped
    assert f"{report.dropped} turns dropped" in stdout + stderr
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.no_grad():
        logps, _ = sequence_logps(model, PaddedCollator(tokenizer.pad_token_id)(expected_pairs))
    scored = [json.loads(line) for line in per_turn.read_text().splitlines()]
    count = len(expected_pairs)
    assert [r["policy_chosen_logps"] for r in scored] == pytest.approx(
        logps[:count].tolist(), abs=1e-4
    )
    assert [r["turn"] for r in scored] == [
        number for item in items for number in range(1, len(item.turns) + 1)
    ]
