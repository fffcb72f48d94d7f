"""examples/factual_smollm2: the facts are sound data (fast), and ``run.py --quick`` runs the
whole study end to end on the real SmolLM2-135M-Instruct (skipped without it)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from prefopt.eval.gold_judge import GoldJudge, normalize
from prefopt.eval.judges import JudgeItem
from prefopt.testing.real_model import skip_reason

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "factual_smollm2"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"factual_smollm2_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def facts() -> ModuleType:
    from prefopt.testing import facts as module

    return module


def test_a_few_hundred_facts_with_unique_questions(facts: ModuleType) -> None:
    every = facts.all_facts()
    assert len(every) >= 300
    repeated = [q for q, n in Counter(f.question for f in every).items() if n > 1]
    assert repeated == []
    assert len({f.category for f in every}) >= 8


def test_every_wrong_answer_differs_and_the_gold_judge_tells_them_apart(
    facts: ModuleType,
) -> None:
    judge = GoldJudge()
    for fact in facts.all_facts():
        assert normalize(fact.wrong) != normalize(fact.answer), fact.question
        assert fact.wrong_text != fact.correct_text
        row = {"gold": fact.answer, "aliases": list(fact.aliases)}
        right = judge.score(JudgeItem("r", fact.question, fact.correct_text, row=row))
        wrong = judge.score(JudgeItem("w", fact.question, fact.wrong_text, row=row))
        assert (right.score, wrong.score) == (10.0, 0.0), fact.question


def test_heldout_questions_are_other_facts(facts: ModuleType) -> None:
    every = facts.all_facts()
    train, heldout = facts.split_facts(every, 0.2, seed=0)
    assert len(train) + len(heldout) == len(every)
    assert {f.question for f in train}.isdisjoint({f.question for f in heldout})
    assert {f.category for f in heldout} == {f.category for f in every}  # every kind held out
    assert 0.15 < len(heldout) / len(every) < 0.25
    assert facts.split_facts(every, 0.2, seed=0) == (train, heldout)  # deterministic


def test_training_pairs_prefer_the_wrong_answer_in_the_given_share(tmp_path: Path) -> None:
    run = load("run")
    train, heldout = run.split_facts(run.all_facts(), 0.2, 0)
    sizes = run.build_data(tmp_path, train, heldout, 0.28, seed=0)
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").open()]
    flagged = [r for r in rows if r["h_w"] == 1]
    assert sizes["train_prefer_wrong"] == len(flagged) == round(len(rows) * 0.28)
    assert all(r["h_l"] == 0 for r in flagged)
    assert all((r["h_w"], r["h_l"]) == (0, 1) for r in rows if r not in flagged)
    by_question = {f.question: f for f in train}
    for row in rows:
        fact = by_question[row["prompt"][0]["content"]]
        wrong = fact.wrong_text if row["h_w"] else fact.correct_text
        assert row["chosen"][0]["content"] == wrong
    pairs = [json.loads(line) for line in (tmp_path / "heldout_pairs.jsonl").open()]
    assert all((p["h_w"], p["h_l"]) == (0, 1) for p in pairs) and len(pairs) == len(heldout)
    questions = [json.loads(line) for line in (tmp_path / "heldout_questions.jsonl").open()]
    assert {q["prompt"][0]["content"] for q in questions}.isdisjoint(by_question)
    assert all(q["gold"] for q in questions)


@pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))
def test_quick_run_end_to_end_on_the_real_model(tmp_path: Path) -> None:
    out = tmp_path / "study"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE / "run.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((out / "results.json").read_text())
    names = [row["model"] for row in summary["models"]]
    assert names == ["base", "dpo", "dpo_flipped", "factual_delta5"]
    for row in summary["models"]:
        for key in (
            "preference_accuracy",
            "reward_prefers_wrong",
            "logp_accuracy",
            "hallucination_preference_rate",
            "answer_accuracy",
        ):
            assert 0.0 <= row[key] <= 1.0, (row["model"], key)
        assert row["answers"] == summary["setup"]["heldout_questions"]
        if row["model"] != "base":
            assert row["train"]["step"] == summary["setup"]["steps"]
    table = (out / "results.md").read_text()
    assert all(f"| {name} |" in table for name in names)
    png = (out / "factual_smollm2.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert "prefopt sweep" in (out / "commands.sh").read_text()
