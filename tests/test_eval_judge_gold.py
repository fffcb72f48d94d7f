"""The rule-based ``gold`` judge: normalisation and matching on hand-written cases, and
``prefopt eval judge --judge gold`` end to end (no network, no model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prefopt.errors import UsageError
from prefopt.eval.gold_judge import GoldJudge, make_gold_judge, normalize
from prefopt.eval.judges import JudgeError, JudgeItem, get_judge
from prefopt.testing.cli_runner import run_cli_in_process as run_cli


def verdict(answer: str, gold: object, judge: GoldJudge | None = None, **row: object) -> bool:
    item = JudgeItem("q", "question?", answer, row=dict(row, gold=gold))
    score = (judge or GoldJudge()).score(item).score
    assert score in (0.0, 10.0)
    return score == 10.0


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("The capital of France is Paris.", ["capital", "of", "france", "is", "paris"]),
        ("São Paulo", ["sao", "paulo"]),
        ("ÉMILE ZOLA", ["emile", "zola"]),
        ("1,000,000 people", ["1000000", "people"]),
        ("twenty-one", ["21"]),
        ("one hundred and five", ["105"]),
        ("two thousand and twenty-four", ["2024"]),
        ("It has a hundred legs", ["it", "has", "100", "legs"]),
        ("the 21st century", ["21", "century"]),
        ("the first man", ["1", "man"]),
        ("Newton's law", ["newton", "law"]),
        ("Washington, D.C.", ["washington", "dc"]),
        ("U.S.A.", ["usa"]),
        ("J. R. R. Tolkien", ["jrr", "tolkien"]),
        ("J.R.R. Tolkien", ["jrr", "tolkien"]),
        ("JRR Tolkien", ["jrr", "tolkien"]),
        ("vitamin D and C", ["vitamin", "d", "and", "c"]),
        ("Rock & roll", ["rock", "and", "roll"]),
        ("bread and butter", ["bread", "and", "butter"]),  # "and" outside a number stays
    ],
)
def test_normalize(text: str, words: list[str]) -> None:
    assert normalize(text) == words


@pytest.mark.parametrize(
    ("answer", "gold"),
    [
        ("The capital of Australia is Canberra.", "Canberra"),
        ("canberra", "Canberra"),
        ("It is CANBERRA!", "Canberra"),
        ("A spider has 8 legs.", "eight"),
        ("A spider has eight legs.", "8"),
        ("The Berlin Wall fell in 1989.", "1989"),
        ("The chemical symbol for gold is Au.", "Au"),
        ("Hamlet was written by William Shakespeare.", "William Shakespeare"),
        ("The largest city is São Paulo.", "Sao Paulo"),
        ("The Pacific Ocean is the largest.", "the Pacific Ocean"),
        ("It was Marie Curie.", ["Marie Curie", "Maria Sklodowska-Curie"]),
        ("The Hobbit is by J.R.R. Tolkien.", "J. R. R. Tolkien"),
    ],
)
def test_correct_answers(answer: str, gold: object) -> None:
    assert verdict(answer, gold)


@pytest.mark.parametrize(
    ("answer", "gold"),
    [
        ("The capital of Australia is Sydney.", "Canberra"),
        ("The chemical symbol for gold is Ag.", "Au"),
        ("A spider has six legs.", "8"),
        ("The Berlin Wall fell in 1991.", "1989"),
        ("The Berlin Wall fell in 19890.", "1989"),  # whole words only
        ("Paris is lovely", "Par"),  # no partial words
        ("Shakespeare wrote it.", "William Shakespeare"),  # the whole gold, unless an alias
        ("", "Canberra"),
    ],
)
def test_incorrect_answers(answer: str, gold: object) -> None:
    assert not verdict(answer, gold)


def test_aliases_count_and_the_explanation_names_the_match() -> None:
    judge = GoldJudge()
    item = JudgeItem(
        "7", "Who wrote Hamlet?", "Shakespeare did.",
        row={"gold": "William Shakespeare", "aliases": ["Shakespeare", "the Bard"]},
    )  # fmt: skip
    judgment = judge.score(item)
    assert judgment.score == 10.0 and "'Shakespeare'" in judgment.explanation
    assert verdict("It was Shakespeare.", "William Shakespeare", aliases="Shakespeare")
    miss = judge.score(JudgeItem("8", "q", "Dickens.", row={"gold": "X", "aliases": ["Y"]}))
    assert miss.score == 0.0 and "'X'" in miss.explanation and "'Y'" in miss.explanation


def test_reference_wins_over_the_gold_field_and_options_rename_fields() -> None:
    item = JudgeItem("1", "q", "It is Ottawa.", reference="Ottawa", row={"gold": "Toronto"})
    assert GoldJudge().score(item).score == 10.0
    judge = make_gold_judge({"gold_field": "truth", "aliases_field": "also", "timeout": 60})
    assert judge.score(JudgeItem("2", "q", "Lima", row={"truth": "Peru", "also": "Lima"})).score
    assert (
        judge.score(JudgeItem("3", "q", "Lima", row={"truth": "Quito", "gold": "Lima"})).score == 0
    )


def test_exact_match_mode() -> None:
    exact = make_gold_judge({"match": "exact"})
    assert verdict("Canberra.", "canberra", exact)
    assert not verdict("It is Canberra.", "Canberra", exact)
    with pytest.raises(UsageError, match="match must be one of"):
        make_gold_judge({"match": "fuzzy"})


def test_missing_or_bad_gold_is_a_non_retryable_error() -> None:
    judge = GoldJudge()
    with pytest.raises(JudgeError, match="no gold answer") as missing:
        judge.score(JudgeItem("5", "q", "Paris", row={}))
    assert not missing.value.retryable
    with pytest.raises(JudgeError, match="no gold answer"):
        judge.score(JudgeItem("5", "q", "Paris", row={"gold": "  the  "}))
    with pytest.raises(JudgeError, match="must be a string or a list"):
        judge.score(JudgeItem("6", "q", "Paris", row={"gold": {"city": "Paris"}}))


def test_gold_is_a_registered_judge() -> None:
    spec = get_judge("gold")
    assert spec.name == "gold" and set(spec.options) == {"gold_field", "aliases_field", "match"}
    assert isinstance(spec.make_judge({}), GoldJudge)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


ANSWERS: list[dict[str, Any]] = [
    {"id": "a", "prompt": [{"role": "user", "content": "Capital of Canada?"}],
     "answer": "The capital of Canada is Ottawa.", "gold": "Ottawa"},
    {"id": "b", "prompt": "Symbol of gold?", "answer": "It is Ag.", "gold": "Au"},
    {"id": "c", "prompt": "Legs of a spider?", "answer": "Spiders have eight legs.",
     "gold": "8", "aliases": []},
    {"id": "d", "prompt": "Author of Hamlet?", "answer": "Shakespeare.",
     "gold": "William Shakespeare", "aliases": ["Shakespeare"]},
]  # fmt: skip


def test_cli_judge_gold_offline(tmp_path: Path) -> None:
    answers = write_jsonl(tmp_path / "answers.jsonl", ANSWERS)
    code, stdout, stderr = run_cli(
        "eval", "judge", "--answers", str(answers), "--judge", "gold",
        env={"OPENAI_API_KEY": ""},
    )  # fmt: skip
    assert code == 0, stderr
    results = json.loads((tmp_path / "judge_results.json").read_text())
    assert results["judge"] == "gold"
    metrics = results["metrics"]
    assert metrics["answers"] == 4
    assert metrics["hallucination_rate"] == pytest.approx(0.25)  # only "Ag" is wrong
    assert metrics["mean_factuality"] == pytest.approx(7.5)
    ratings = [json.loads(line) for line in (tmp_path / "answers.judgments.jsonl").open()]
    assert [(r["id"], r["score"]) for r in ratings] == [("a", 10), ("b", 0), ("c", 10), ("d", 10)]
    assert "hallucination_rate" in stdout


def test_cli_judge_gold_with_baseline_and_reference_field(tmp_path: Path) -> None:
    rows = [dict(row, truth=row["gold"]) for row in ANSWERS]
    for row in rows:
        del row["gold"]
    answers = write_jsonl(tmp_path / "b.jsonl", rows)
    worse = [dict(row, answer="I do not know.") for row in rows]
    baseline = write_jsonl(tmp_path / "a.jsonl", worse)
    out = tmp_path / "results.json"
    code, _, stderr = run_cli(
        "eval", "judge", "--answers", str(answers), "--baseline", str(baseline),
        "--judge", "gold", "--reference-field", "truth", "--results", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["baseline_hallucination_rate"] == 1.0
    assert (metrics["wins"], metrics["losses"], metrics["ties"]) == (3, 0, 1)


def test_cli_judge_gold_without_gold_fails_in_one_line(tmp_path: Path) -> None:
    rows = [{"id": "x", "prompt": "q", "answer": "Paris"}]
    answers = write_jsonl(tmp_path / "answers.jsonl", rows)
    code, _, stderr = run_cli("eval", "judge", "--answers", str(answers), "--judge", "gold")
    assert code == 2, stderr
    assert "no gold answer" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert stderr.strip().endswith("no rating was saved")  # no advice to rerun unchanged
    assert not (tmp_path / "judge_results.json").exists()
    # nothing to resume from: no empty .partial / .partial.json left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl"]
