"""List records (a prompt, N ranked responses): validation, the pairs a list stands for (ties
included), `data pairs`, the UltraFeedback and Nectar converters on samples written here, and
`data validate` / `data stats` on lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prefopt.data.lists import list_pairs, pair_weights, to_pair_records, validate_list_record
from prefopt.errors import DataError
from prefopt.testing.cli_runner import run_cli_in_process as run_cli


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


LIST = {"prompt": "Name a colour.", "responses": ["red", "dog", "blue", "seven"],
        "scores": [9, 2, 7, 2], "id": "q1"}  # fmt: skip


# -- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"responses": ["only one"]}, "responses", "expected a list of 2 or more responses"),
        ({"scores": None}, "scores", "expected 4 values"),
        ({"scores": [1, 2, 3]}, "scores", "expected 4 values (one per response)"),
        ({"scores": [1, "a", 3, 4]}, "scores[1]", "expected a number"),
        ({"ranking": [1, 2, 3, 4]}, "scores", "give scores or ranking, not both"),
        ({"h": [0, 1]}, "h", "expected 4 flags"),
        ({"h": [0, 2, 0, 0]}, "h[1]", "expected 0 or 1"),
        ({"responses": ["a", "", "c", "d"]}, "responses[1]", "empty string"),
        (
            {"responses": ["a", [{"role": "assistant", "content": "b"}], "c", "d"]},
            "responses[1]",
            "is a message list but prompt is a string",
        ),  # fmt: skip
    ],
)
def test_a_bad_list_names_its_field(change: dict[str, Any], field: str, problem: str) -> None:
    row = {**LIST, **change}
    if change.get("scores", 0) is None:
        del row["scores"]
        row["scores"] = "x"
    with pytest.raises(DataError) as raised:
        validate_list_record(row, "f.jsonl", 7)
    assert raised.value.field == field and problem in raised.value.problem
    assert str(raised.value).startswith(f"f.jsonl:7: {field}: ")


def test_ranking_needs_ranks_and_chat_responses_need_an_assistant_turn() -> None:
    ranked = {"prompt": "q", "responses": ["a", "b"], "ranking": [1, 0]}
    with pytest.raises(DataError, match=r"ranking\[1\]: expected a rank 1, 2"):
        validate_list_record(ranked, "f", 1)
    chat = {
        "prompt": [{"role": "user", "content": "q"}],
        "responses": [[{"role": "assistant", "content": "a"}], [{"role": "user", "content": "b"}]],
        "scores": [1, 0],
    }
    with pytest.raises(DataError, match=r"responses\[1\]\[0\]\.role: expected 'assistant'"):
        validate_list_record(chat, "f", 1)
    missing = {"prompt": "q", "responses": ["a", "b"]}
    with pytest.raises(DataError, match="scores: missing field"):
        validate_list_record(missing, "f", 1)


# -- the pairs of a list -------------------------------------------------------------------
def test_pairings_with_ties() -> None:
    # scores 9, 2, 7, 2: best 0, then 2, then 1 and 3 tied at the bottom.
    assert list_pairs(LIST, "best-worst") == [(0, 1)]  # the first of the tied worst
    assert list_pairs(LIST, "best-rest") == [(0, 2), (0, 1), (0, 3)]
    assert list_pairs(LIST, "all") == [(0, 2), (0, 1), (0, 3), (2, 1), (2, 3)]  # 1, 3 tied
    assert pair_weights(LIST, list_pairs(LIST, "all")) == [2.0, 7.0, 7.0, 5.0, 5.0]


def test_a_ranking_is_best_first_and_equal_ranks_tie() -> None:
    ranked = {"prompt": "q", "responses": ["a", "b", "c"], "ranking": [1, 1, 3]}
    assert list_pairs(ranked, "all") == [(0, 2), (1, 2)]
    assert list_pairs(ranked, "best-rest") == [(0, 2), (1, 2)]  # each tied best
    assert pair_weights(ranked, [(0, 2)]) == [2.0]


def test_a_list_all_tied_is_no_pair() -> None:
    tied = {"prompt": "q", "responses": ["a", "b", "c"], "scores": [5, 5, 5]}
    for pairing in ("best-worst", "best-rest", "all"):
        assert list_pairs(tied, pairing) == []


def test_pair_records_keep_fields_flags_and_gap() -> None:
    row = {**LIST, "h": [0, 1, 0, 1]}
    records = to_pair_records(row, "best-rest")
    assert records[1] == {
        "prompt": "Name a colour.", "chosen": "red", "rejected": "dog", "h_w": 0, "h_l": 1,
        "score_gap": 7.0, "id": "q1",
    }  # fmt: skip


def test_data_pairs_command(tmp_path: Path) -> None:
    pair = {"prompt": "p", "chosen": "a", "rejected": "b"}
    tied = {"prompt": "t", "responses": ["x", "y"], "scores": [1, 1]}
    source = write(tmp_path / "lists.jsonl", [LIST, pair, tied])
    code, stdout, stderr = run_cli("data", "pairs", str(source), "--pairing", "all")
    assert code == 0, stderr
    out = tmp_path / "lists_pairs.jsonl"
    rows = read(out)
    assert len(rows) == 6 and rows[-1] == pair
    assert [(r["chosen"], r["rejected"]) for r in rows[:5]] == [
        ("red", "blue"), ("red", "dog"), ("red", "seven"), ("blue", "dog"), ("blue", "seven"),
    ]  # fmt: skip
    assert "2 lists → 6 pairs (all); 1 lists all tied gave none; 1 pair records copied" in stdout


def test_data_pairs_refuses_a_bad_list_and_writes_nothing(tmp_path: Path) -> None:
    source = write(tmp_path / "bad.jsonl", [LIST, {**LIST, "scores": [1, 2]}])
    out = tmp_path / "out.jsonl"
    code, _, stderr = run_cli("data", "pairs", str(source), "-o", str(out))
    assert code == 2 and f"{source}:2: scores: expected 4 values" in stderr
    assert not out.exists()
    code, _, stderr = run_cli("data", "pairs", str(source), "--pairing", "most")
    assert code == 2 and "--pairing must be one of best-worst, best-rest, all" in stderr


# -- converters ----------------------------------------------------------------------------
ULTRAFEEDBACK_RAW = {
    "source": "evol_instruct",
    "instruction": "Write a haiku about rain.",
    "models": ["gpt-4", "alpaca-7b", "llama-2-13b-chat"],
    "completions": [
        {"model": "gpt-4", "response": "Soft rain on the roof", "overall_score": 8.5,
         "fine-grained_score": 4.75,
         "annotations": {"helpfulness": {"Rating": "5", "Rationale": "..."},
                         "honesty": {"Rating": "N/A", "Rationale": "..."}}},
        {"model": "alpaca-7b", "response": "Rain is wet.", "overall_score": 4.0,
         "fine-grained_score": 2.0,
         "annotations": {"helpfulness": {"Rating": "2"}, "honesty": {"Rating": "4"}}},
        {"model": "llama-2-13b-chat", "response": "Drops fall, puddles form", "overall_score": 7,
         "fine-grained_score": 4.25, "annotations": {}},
    ],
    "correct_answers": ["None"],
}  # fmt: skip


def test_ultrafeedback_raw_keeps_every_completion(tmp_path: Path) -> None:
    source = write(tmp_path / "uf.jsonl", [ULTRAFEEDBACK_RAW])
    out = tmp_path / "out.jsonl"
    code, _, stderr = run_cli("data", "convert", str(source), "--from", "ultrafeedback-raw",
                              "-o", str(out))  # fmt: skip
    assert code == 0, stderr
    (row,) = read(out)
    assert row["prompt"] == [{"role": "user", "content": "Write a haiku about rain."}]
    assert row["responses"][1] == [{"role": "assistant", "content": "Rain is wet."}]
    assert row["scores"] == [8.5, 4.0, 7]
    assert row["models"] == ["gpt-4", "alpaca-7b", "llama-2-13b-chat"]
    assert row["ratings"][0] == {"helpfulness": 5.0, "honesty": None}  # "N/A": no rating
    assert row["ratings"][2] == {}
    assert row["source"] == "evol_instruct" and row["correct_answers"] == ["None"]
    assert "instruction" not in row and "completions" not in row
    code, _, stderr = run_cli("data", "convert", str(source), "--from", "ultrafeedback-raw",
                              "--score-key", "fine-grained_score", "--text", "-o",
                              str(tmp_path / "fine.jsonl"))  # fmt: skip
    assert code == 0, stderr
    (fine,) = read(tmp_path / "fine.jsonl")
    assert fine["scores"] == [4.75, 2.0, 4.25] and fine["prompt"] == "Write a haiku about rain."
    assert fine["responses"][0] == "Soft rain on the roof"


def test_ultrafeedback_raw_names_a_bad_completion(tmp_path: Path) -> None:
    broken = json.loads(json.dumps(ULTRAFEEDBACK_RAW))
    del broken["completions"][1]["overall_score"]
    source = write(tmp_path / "uf.jsonl", [ULTRAFEEDBACK_RAW, broken])
    code, _, stderr = run_cli("data", "convert", str(source), "--from", "ultrafeedback-raw",
                              "-o", str(tmp_path / "o.jsonl"))  # fmt: skip
    assert code == 2
    assert f"{source}:2: completions[1].overall_score: missing field (--score-key names" in stderr
    broken["completions"][1]["overall_score"] = "high"
    source = write(tmp_path / "uf.jsonl", [ULTRAFEEDBACK_RAW, broken])
    code, _, stderr = run_cli("data", "convert", str(source), "--from", "ultrafeedback-raw",
                              "-o", str(tmp_path / "o.jsonl"), "--force")  # fmt: skip
    assert code == 2
    assert f"{source}:2: completions[1].overall_score: expected a number, got 'high'" in stderr


NECTAR = {
    "prompt": "\n\nHuman: What is the capital of France?\n\nAssistant: ",
    "answers": [
        {"answer": "Paris.", "model": "gpt-4", "rank": 1.0},
        {"answer": "Lyon, I think.", "model": "alpaca-13b", "rank": 3.0},
        {"answer": "The capital of France is Paris.", "model": "claude", "rank": 2.0},
    ],
    "turns": 1,
    "num_responses": 3,
    "good_natured": True,
}


def test_nectar_keeps_every_ranked_answer(tmp_path: Path) -> None:
    multi = {**NECTAR, "prompt": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Capital of "
             "France?\n\nAssistant:", "turns": 2}  # fmt: skip
    source = write(tmp_path / "nectar.jsonl", [NECTAR, multi])
    out = tmp_path / "out.jsonl"
    code, _, stderr = run_cli("data", "convert", str(source), "--from", "nectar", "-o", str(out))
    assert code == 0, stderr
    first, second = read(out)
    assert first["prompt"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert first["ranking"] == [1, 3, 2] and first["models"] == ["gpt-4", "alpaca-13b", "claude"]
    assert first["responses"][2] == [
        {"role": "assistant", "content": "The capital of France is Paris."}
    ]
    assert first["good_natured"] is True and "answers" not in first
    assert [m["role"] for m in second["prompt"]] == ["user", "assistant", "user"]
    assert list_pairs(first, "all") == [(0, 2), (0, 1), (2, 1)]


def test_nectar_refuses_a_prompt_without_a_question(tmp_path: Path) -> None:
    bad = {**NECTAR, "prompt": "\n\nHuman: Hi\n\nAssistant: Hello!"}
    source = write(tmp_path / "nectar.jsonl", [bad])
    code, _, stderr = run_cli("data", "convert", str(source), "--from", "nectar",
                              "-o", str(tmp_path / "o.jsonl"))  # fmt: skip
    assert code == 2 and "prompt: transcript does not end with a 'Human:' turn" in stderr


# -- validate and stats --------------------------------------------------------------------
def test_validate_and_stats_understand_lists(tmp_path: Path) -> None:
    repeated = {"prompt": "q", "responses": ["same", "other", "same"], "scores": [3, 2, 1]}
    broken = {"prompt": "q", "responses": ["a", "b"], "ranking": [1]}
    source = write(tmp_path / "lists.jsonl", [LIST, repeated, broken, LIST])
    code, stdout, stderr = run_cli("data", "validate", str(source), "--json")
    assert code == 2, stderr
    report = json.loads(stdout)
    assert report["issues"]["schema"] == 1 and report["issues"]["identical"] == 1
    assert report["issues"]["duplicate"] == 1
    examples = "\n".join(str(e) for e in report["examples"].values())
    assert "responses[2]" in examples and "identical to responses[0]" in examples
    code, stdout, stderr = run_cli("data", "stats", str(source), "--json")
    assert code == 0, stderr
    stats = json.loads(stdout)
    assert stats["kinds"] == {"list": 4}
    assert stats["list_sizes"] == {"2": 1, "3": 1, "4": 2}
    assert stats["list_responses"]["count"] == 4 + 3 + 2 + 4


def test_validate_measures_the_token_lengths_of_lists(tmp_path: Path, tiny_model: Path) -> None:
    long = {"prompt": "Question: where?\nAnswer: ", "scores": [1, 0],
            "responses": [" ".join(["blue"] * 40), "red"]}  # fmt: skip
    source = write(tmp_path / "lists.jsonl", [LIST, long])
    code, stdout, stderr = run_cli("data", "validate", str(source), "--model", str(tiny_model),
                                   "--max-length", "24", "--json")  # fmt: skip
    assert code == 0, stderr
    tokens = json.loads(stdout)["tokens"]
    assert tokens["pairs"] == 2  # records measured: two lists
    assert tokens["lengths"]["responses"]["max"] > 24 and "chosen" not in tokens["lengths"]
    assert tokens["completions_truncated"] == 1 and tokens["dropped"] == 0


def test_a_file_holds_one_kind(tmp_path: Path) -> None:
    """A record of another kind than the file's first is named by its line and by the field
    that gives its kind away, in validate, in training's loader and in eval's."""
    pair = {"prompt": "p", "chosen": "a", "rejected": "b"}
    turns = {"messages": [{"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "a", "rejected": "b"}]}  # fmt: skip
    mixed = write(tmp_path / "mixed.jsonl", [pair, LIST, turns, pair])
    code, stdout, stderr = run_cli("data", "validate", str(mixed), "--json")
    assert code == 2, stderr
    report = json.loads(stdout)
    assert report["issues"]["schema"] == 2
    examples = "\n".join(str(e) for e in report["examples"].values())
    assert "a list of responses in a file of pairs (its first record's kind)" in examples
    assert "a conversation in a file of pairs" in examples

    from prefopt.data.kinds import check_kind, record_kind

    assert [record_kind(row) for row in (pair, LIST, turns)] == ["pairs", "lists", "conversations"]
    with pytest.raises(DataError) as raised:
        check_kind(LIST, "conversations", "f.jsonl", 3)
    assert str(raised.value) == (
        "f.jsonl:3: responses: a list of responses in a file of conversations (its first "
        "record's kind): a file holds one kind, pairs, lists or conversations"
    )


def test_data_pairs_writes_each_turn_of_a_conversation(tmp_path: Path) -> None:
    turns = {"id": "c1", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "rejected": "what"},
        {"role": "user", "content": "and?"},
        {"role": "assistant", "content": "fine", "rejected": "no"},
    ]}  # fmt: skip
    source = write(tmp_path / "turns.jsonl", [turns])
    code, stdout, stderr = run_cli("data", "pairs", str(source))
    assert code == 0, stderr
    rows = read(tmp_path / "turns_pairs.jsonl")
    assert [r["id"] for r in rows] == ["c1", "c1"]
    assert rows[1]["prompt"] == [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and?"},
    ]  # fmt: skip
    assert rows[1]["chosen"] == [{"role": "assistant", "content": "fine"}]
    assert rows[1]["rejected"] == [{"role": "assistant", "content": "no"}]
    assert "0 lists → 2 pairs (best-worst); 1 conversations" in stdout


def test_validate_require_and_factual_on_lists_and_conversations(tmp_path: Path) -> None:
    no_flags = {"prompt": "q", "responses": ["a", "b"], "scores": [1, 0]}
    flagged = {**no_flags, "h": [0, 1], "id": "x"}
    turns = {"messages": [{"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "a", "rejected": "b"}]}  # fmt: skip
    lists = write(tmp_path / "lists.jsonl", [no_flags, flagged])
    code, stdout, _ = run_cli("data", "validate", str(lists), "--require", "id", "--json")
    assert code == 2 and json.loads(stdout)["issues"]["schema"] == 1  # line 1 has no id
    code, stdout, _ = run_cli("data", "validate", str(lists), "--require", "h_w", "--json")
    assert code == 2 and json.loads(stdout)["issues"]["schema"] == 1  # a list's h stands for it
    code, stdout, _ = run_cli("data", "validate", str(lists), "--factual", "--json")
    report = json.loads(stdout)
    assert code == 2 and report["issues"]["schema"] == 1
    assert "each response's flag, for Factual-DPO" in str(report["examples"])
    conversations = write(tmp_path / "turns.jsonl", [turns, {**turns, "id": "c"}])
    code, stdout, _ = run_cli("data", "validate", str(conversations), "--require", "id", "--json")
    assert code == 2 and json.loads(stdout)["issues"]["schema"] == 1


def test_flip_and_split_say_what_lists_and_conversations_lack(tmp_path: Path) -> None:
    turns = {"messages": [{"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "a", "rejected": "b"}]}  # fmt: skip
    lists = write(tmp_path / "lists.jsonl", [LIST])
    code, _, stderr = run_cli("data", "flip", str(lists))
    assert code == 2 and f"{lists}:1: responses: flip works on pairs" in stderr
    assert not (tmp_path / "lists_flipped.jsonl").exists()
    conversations = write(tmp_path / "turns.jsonl", [turns, turns])
    code, _, stderr = run_cli(
        "data", "split", str(conversations), "--group-by", "prompt", "--eval-fraction", "0.5"
    )
    assert code == 2 and "prompt: missing field (needed by --group-by; a conversation has " in (
        stderr
    )


def test_stats_count_conversations_and_their_preference_turns(tmp_path: Path) -> None:
    from prefopt.testing import synthetic_conversations

    source = write(tmp_path / "turns.jsonl", synthetic_conversations(5))  # 1, 2, 3, 1, 2 turns
    code, stdout, stderr = run_cli("data", "stats", str(source), "--json")
    assert code == 0, stderr
    stats = json.loads(stdout)
    assert stats["kinds"] == {"conversation": 5}
    assert stats["conversation_turns"] == {"1": 2, "2": 2, "3": 1}
    code, stdout, stderr = run_cli("data", "stats", str(source))
    assert code == 0 and "conversations (preference turns each)" in stdout
    assert "chosen == rejected" not in stdout and "lengths (characters)" not in stdout
