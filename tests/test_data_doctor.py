"""`prefopt data doctor`: each check on files written here, where it warns and where not, and
the command's output, JSON, config and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prefopt.data.doctor import Check, examine
from prefopt.testing.cli_runner import run_cli_in_process as run_cli


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def check(report: Any, name: str) -> Check:
    return next(c for c in report.checks if c.name == name)


def pair(prompt: str, chosen: str, rejected: str, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


# -- length bias ---------------------------------------------------------------------------
def test_length_bias_counts_and_mean_ratio(tmp_path: Path) -> None:
    rows = [pair("q9", "no", "yes")]  # chosen shorter: not an example of the bias
    rows += [pair(f"q{i}", "a long and fluent answer", "short") for i in range(9)]
    report = examine(write(tmp_path / "t.jsonl", rows))
    found = check(report, "length bias")
    assert found.status == "warning"
    assert (found.count, found.total) == (9, 10)
    ratio = (9 * len("a long and fluent answer") / len("short") + 2 / 3) / 10
    assert f"mean chosen/rejected length ratio {ratio:.2f}" in found.finding
    assert "chosen is longer in 9 of 10 (90%)" in found.finding
    assert "prefer longer answers" in found.advice
    assert found.examples[0] == f"{tmp_path / 't.jsonl'}:2: chosen 24 characters, rejected 5"


def test_balanced_lengths_are_ok(tmp_path: Path) -> None:
    rows = [pair(f"q{i}", "x" * (5 + i % 2 * 10), "y" * (10)) for i in range(10)]
    found = check(examine(write(tmp_path / "t.jsonl", rows)), "length bias")
    assert found.status == "ok" and found.examples == [] and found.advice == ""


# -- near-identical ------------------------------------------------------------------------
def test_near_identical_pairs_are_found_and_minimal_pairs_are_not(tmp_path: Path) -> None:
    long_answer = " ".join(f"word{i}" for i in range(40))
    rows = [
        pair("a", "Paris is the capital.", "paris  is the CAPITAL."),  # same words
        pair("b", long_answer, long_answer.replace("word7", "other")),  # 39 of 40 alike
        pair("c", "The mufilo is red.", "The mufilo is blue."),  # a minimal pair: fine
        pair("d", "Completely different.", "Nothing in common here."),
        pair("e", "x < 0", "x > 0"),  # symbols are words here: they differ
    ]
    found = check(examine(write(tmp_path / "t.jsonl", rows)), "near-identical pairs")
    assert found.status == "warning" and found.count == 2
    assert found.examples == [
        f"{tmp_path / 't.jsonl'}:1: chosen/rejected: the same words (case and spacing aside)",
        f"{tmp_path / 't.jsonl'}:2: chosen/rejected: 98% of the words alike",
    ]
    assert "keep minimal pairs made on purpose" in found.advice


# -- leakage -------------------------------------------------------------------------------
def test_leakage_counts_eval_prompts_seen_in_training(tmp_path: Path) -> None:
    train = write(
        tmp_path / "train.jsonl",
        [pair("What is 2+2?", "4", "5"), pair("Name a colour.", "red", "dog")],
    )
    evaluation = write(
        tmp_path / "eval.jsonl",
        [
            pair("what is  2+2?", "four", "five"),  # the same prompt, case and spacing aside
            pair("A new question?", "yes", "no"),
            {
                "prompt": [{"role": "user", "content": "Name a colour."}],
                "chosen": [{"role": "assistant", "content": "blue"}],
                "rejected": [{"role": "assistant", "content": "cat"}],
            },
        ],
    )
    found = check(examine(train, evaluation), "leakage")
    assert found.status == "warning" and (found.count, found.total) == (2, 3)
    assert found.examples == [
        f"{evaluation}:1: prompt: also in {train}",
        f"{evaluation}:3: prompt: also in {train}",
    ]
    assert check(examine(train), "leakage").status == "skipped"


# -- truncation ----------------------------------------------------------------------------
def test_truncation_at_the_run_limits(tmp_path: Path, tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    long = " ".join(["blue"] * 60)
    rows = [pair("Say it.", long, "no"), pair("Hi?", "hello", "bye")]
    train = write(tmp_path / "t.jsonl", rows)
    found = check(examine(train, tokenizer=tokenizer, tokenizer_name="tiny", max_length=24,
                          max_prompt_length=8), "truncation")  # fmt: skip
    assert found.status == "warning" and (found.count, found.total) == (1, 2)
    assert "completions truncated 1" in found.finding and "max_length 24" in found.finding
    alone = check(examine(train, tokenizer=tokenizer, tokenizer_name="tiny", max_length=24),
                  "truncation")  # fmt: skip
    assert "max_length 24, max_prompt_length 12" in alone.finding  # as training resolves it
    roomy = check(examine(train, tokenizer=tokenizer, tokenizer_name="tiny"), "truncation")
    assert roomy.status == "ok" and roomy.count == 0
    assert check(examine(train), "truncation").status == "skipped"


# -- special tags --------------------------------------------------------------------------
def test_special_tags_inside_the_content(tmp_path: Path) -> None:
    rows = [
        pair("q", "The answer.<|im_end|>", "Other."),
        {
            "prompt": [{"role": "user", "content": "Think first."}],
            "chosen": [{"role": "assistant", "content": "<think>hmm</think>Yes."}],
            "rejected": [{"role": "assistant", "content": "No."}],
        },
        pair("q3", "clean", "also clean"),
    ]
    found = check(examine(write(tmp_path / "t.jsonl", rows)), "special tags")
    assert found.status == "warning" and found.count == 2
    assert "<|im_end|> ×1" in found.finding and "<think> ×1" in found.finding
    assert found.examples[0] == f"{tmp_path / 't.jsonl'}:1: chosen: contains '<|im_end|>'"


def test_the_tokenizers_own_special_tokens_count_too(tmp_path: Path, tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<custom_eot>", "plainword"]})
    rows = [pair("q", "done <custom_eot>", "x"), pair("q2", "a plainword", "y")]
    report = examine(write(tmp_path / "t.jsonl", rows), tokenizer=tokenizer, tokenizer_name="t")
    found = check(report, "special tags")
    assert found.count == 1 and "<custom_eot> ×1" in found.finding


# -- Δh ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "status", "words"),
    [
        ([(0, 1)] * 4, "warning", "No pair has Δh = 0"),
        ([(0, 1), (0, 1), (0, 0), (1, 1)], "ok", ""),
        ([(0, 1), (1, 0), (0, 0)], "warning", "prefopt data flip"),
    ],
)
def test_delta_h_distribution(
    flags: list[tuple[int, int]], status: str, words: str, tmp_path: Path
) -> None:
    rows = [pair(f"q{i}", "a", "b", h_w=h_w, h_l=h_l) for i, (h_w, h_l) in enumerate(flags)]
    found = check(examine(write(tmp_path / "t.jsonl", rows)), "Δh (factual)")
    assert found.status == status
    ones = sum(h_l - h_w == 1 for h_w, h_l in flags)
    zeros = sum(h_l == h_w for h_w, h_l in flags)
    assert f"Δh = 1: {ones}, Δh = 0: {zeros}" in found.finding
    assert words in found.advice


def test_delta_h_is_skipped_without_flags(tmp_path: Path) -> None:
    found = check(examine(write(tmp_path / "t.jsonl", [pair("q", "a", "b")])), "Δh (factual)")
    assert found.status == "skipped"


# -- the command ---------------------------------------------------------------------------
def test_the_command_prints_checks_examples_and_exits_0(tmp_path: Path) -> None:
    rows = [pair(f"q{i}", "a long, fluent and wrong answer", "right") for i in range(8)]
    train = write(tmp_path / "t.jsonl", rows)
    code, stdout, stderr = run_cli("data", "doctor", str(train))
    assert code == 0, stderr
    assert "length bias" in stdout and "warning" in stdout
    assert f"{train}:1: chosen 31 characters, rejected 5" in stdout
    assert "1 warning" in stdout


def test_the_command_takes_a_run_config(tmp_path: Path, tiny_model: Path) -> None:
    train = write(tmp_path / "t.jsonl", [pair("Say it.", " ".join(["blue"] * 60), "no")])
    evaluation = write(tmp_path / "e.jsonl", [pair("Say it.", "x", "y")])
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model:\n  name_or_path: {tiny_model}\n"
        f"data:\n  eval: {evaluation}\n  max_length: 24\n  max_prompt_length: 8\n"
    )
    code, stdout, stderr = run_cli("data", "doctor", str(train), "--config", str(config), "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["truncation"]["status"] == "warning"
    assert "max_length 24, max_prompt_length 8" in checks["truncation"]["finding"]
    assert checks["leakage"]["count"] == 1 and report["evaluation"] == str(evaluation)


def test_a_malformed_row_exits_2_naming_file_line_and_field(tmp_path: Path) -> None:
    train = write(tmp_path / "t.jsonl", [pair("q", "a", "b"), {"prompt": "q", "chosen": "a"}])
    code, stdout, stderr = run_cli("data", "doctor", str(train))
    assert code == 2
    assert f"{train}:2: rejected" in stderr and "Traceback" not in stderr


def test_a_file_of_lists_is_checked_as_best_against_worst(tmp_path: Path) -> None:
    rows = [
        {"prompt": f"q{i}", "responses": ["short", "a long fluent answer here", "mid one"],
         "scores": [0, 5, 2], "h": [1, 0, 0]}
        for i in range(5)
    ]  # fmt: skip
    report = examine(write(tmp_path / "lists.jsonl", rows))
    assert report.pairs == 5
    bias = check(report, "length bias")
    assert bias.status == "warning" and bias.count == 5  # best (long) against worst (short)
    assert "Δh = 1: 5" in check(report, "Δh (factual)").finding
