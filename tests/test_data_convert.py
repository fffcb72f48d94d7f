"""``prefopt data convert``: the built-in formats, the plugin hook, and the command."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

import prefopt
import prefopt.registry
from prefopt.cli.data import app
from prefopt.data.converters import (
    ConversionError,
    ConverterSpec,
    ConvertOptions,
    ConvertReport,
    convert_rows,
    get_converter,
    get_converters,
)
from prefopt.data.io import read_rows
from prefopt.errors import DataError, UsageError

runner = CliRunner()
OPTIONS = ConvertOptions()


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def bot(text: str) -> dict:
    return {"role": "assistant", "content": text}


def convert(name: str, row: dict, options: ConvertOptions = OPTIONS, text: bool = False) -> dict:
    return next(convert_rows([(1, row)], get_converter(name), "in.jsonl", options, text))


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- hh ------------------------------------------------------------------------------------

HH_MULTI = {
    "chosen": "\n\nHuman: What is the capital of France?\n\nAssistant: Paris.\n\n"
    "Human: And of Germany?\n\nAssistant: Berlin is the capital of Germany.",
    "rejected": "\n\nHuman: What is the capital of France?\n\nAssistant: Paris.\n\n"
    "Human: And of Germany?\n\nAssistant: Munich, I think.",
}


def test_hh_multi_turn_prompt_is_every_turn_before_the_last_reply() -> None:
    record = convert("hh", HH_MULTI)
    assert record == {
        "prompt": [
            user("What is the capital of France?"),
            bot("Paris."),
            user("And of Germany?"),
        ],
        "chosen": [bot("Berlin is the capital of Germany.")],
        "rejected": [bot("Munich, I think.")],
    }


def test_hh_single_turn_with_paragraphs_and_extra_fields() -> None:
    row = {
        "id": 7,
        "chosen": "Human: List two colours.\n\nAssistant: Red.\n\nBlue.",
        "rejected": "Human: List two colours.\n\nAssistant: No.",
    }
    record = convert("hh", row)
    assert record == {
        "prompt": [user("List two colours.")],
        "chosen": [bot("Red.\n\nBlue.")],
        "rejected": [bot("No.")],
        "id": 7,
    }


def test_hh_as_text() -> None:
    record = convert("hh", HH_MULTI, text=True)
    assert record["prompt"] == (
        "User: What is the capital of France?\n\nAssistant: Paris.\n\n"
        "User: And of Germany?\n\nAssistant: "
    )
    assert record["chosen"] == "Berlin is the capital of Germany."
    single = convert("hh", {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected":
                            "\n\nHuman: Hi\n\nAssistant: Go"}, text=True)  # fmt: skip
    assert single == {"prompt": "Hi", "chosen": "Hello", "rejected": "Go"}


@pytest.mark.parametrize(
    ("row", "field", "needle"),
    [
        ({"chosen": HH_MULTI["chosen"]}, "rejected", "missing field"),
        (
            {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: z\n\nAssistant: b"},
            "rejected",
            "differs from chosen before the final",
        ),
        (
            {
                "chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c",
                "rejected": HH_MULTI["rejected"],
            },
            "chosen",
            "does not end with an 'Assistant:' turn",
        ),
        ({"chosen": "preamble\n\nHuman: a\n\nAssistant: b", "rejected": "x"}, "chosen", "before"),
        ({"chosen": "no turns at all", "rejected": "x"}, "chosen", "no 'Human:'"),
        ({"chosen": ["a"], "rejected": "x"}, "chosen", "expected a string"),
        (
            {"chosen": "\n\nHuman: a\n\nAssistant:", "rejected": "\n\nHuman: a\n\nAssistant: b"},
            "chosen",
            "empty response",
        ),
    ],
)
def test_hh_problems_are_located(row: dict, field: str, needle: str) -> None:
    with pytest.raises(DataError) as caught:
        convert("hh", row)
    assert str(caught.value).startswith(f"in.jsonl:1: {field}: ")
    assert needle in caught.value.problem


# -- ultrafeedback -------------------------------------------------------------------------


def test_ultrafeedback_binarized_row() -> None:
    row = {
        "prompt": "Name a prime.",
        "prompt_id": "abc",
        "chosen": [user("Name a prime."), bot("7")],
        "rejected": [user("Name a prime."), bot("8")],
        "messages": [user("Name a prime."), bot("7")],
        "score_chosen": 9.0,
        "score_rejected": 2.0,
    }
    assert convert("ultrafeedback", row) == {
        "prompt": [user("Name a prime.")],
        "chosen": [bot("7")],
        "rejected": [bot("8")],
        "prompt_id": "abc",
        "score_chosen": 9.0,
        "score_rejected": 2.0,
    }


def test_ultrafeedback_reply_only_lists_use_the_prompt_string() -> None:
    row = {"prompt": "Hi", "chosen": [bot("Hello")], "rejected": [bot("Bye")]}
    assert convert("ultrafeedback", row)["prompt"] == [user("Hi")]
    same = {"prompt": "Hi", "chosen": [user("Hi"), bot("x")], "rejected": [user("Hi"), bot("x")]}
    with pytest.raises(DataError, match="in.jsonl:1: rejected: identical to chosen"):
        convert("ultrafeedback", same)


# -- shp -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("label", "chosen", "rejected"), [(1, "A!", "B?"), (0, "B?", "A!")])
def test_shp_label_picks_the_chosen_answer(label: int, chosen: str, rejected: str) -> None:
    row = {"post_id": "p1", "history": "Why is the sky blue?", "human_ref_A": "A!",
           "human_ref_B": "B?", "labels": label, "score_ratio": 2.5}  # fmt: skip
    assert convert("shp", row) == {
        "prompt": [user("Why is the sky blue?")],
        "chosen": [bot(chosen)],
        "rejected": [bot(rejected)],
        "post_id": "p1",
        "score_ratio": 2.5,
    }
    with pytest.raises(DataError, match="in.jsonl:1: labels: expected 0 or 1, got 2"):
        convert("shp", dict(row, labels=2))


# -- messages ------------------------------------------------------------------------------


def test_messages_shared_prefix_becomes_the_prompt() -> None:
    shared = [{"role": "system", "content": "Be brief."}, user("2+2?"), bot("4"), user("3+3?")]
    row = {"good": [*shared, bot("6")], "bad": [*shared, bot("7"), user("sure?"), bot("yes")]}
    record = convert("messages", row, ConvertOptions(chosen_key="good", rejected_key="bad"))
    assert record == {
        "prompt": shared,
        "chosen": [bot("6")],
        "rejected": [bot("7"), user("sure?"), bot("yes")],
    }


@pytest.mark.parametrize(
    ("chosen", "rejected", "needle"),
    [
        ([bot("a")], [bot("b")], "share no prompt"),
        (
            [user("q"), bot("a"), user("x")],
            [user("q"), bot("a"), user("y")],
            "continues with a 'user'",
        ),
        (
            [user("q"), bot("a")],
            [user("q"), bot("a"), bot("more")],
            "nothing after the part shared",
        ),
        ("text", [user("q")], "expected a list of {role, content} messages"),
    ],
)
def test_messages_problems(chosen, rejected, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        convert("messages", {"chosen": chosen, "rejected": rejected})


# -- columns -------------------------------------------------------------------------------


def test_columns_maps_fields_and_keeps_the_rest() -> None:
    options = ConvertOptions(prompt_key="question", chosen_key="good", rejected_key="bad")
    row = {"question": "Q?", "h_w": 0, "good": "yes", "bad": "no", "h_l": 1}
    assert convert("columns", row, options) == {
        "prompt": [user("Q?")],
        "chosen": [bot("yes")],
        "rejected": [bot("no")],
        "h_w": 0,
        "h_l": 1,
    }
    assert convert("columns", row, options, text=True) == {
        "prompt": "Q?", "chosen": "yes", "rejected": "no", "h_w": 0, "h_l": 1,
    }  # fmt: skip
    with pytest.raises(DataError, match="in.jsonl:1: question: missing field"):
        convert("columns", {"good": "a", "bad": "b"}, options)
    with pytest.raises(DataError, match="in.jsonl:1: good: expected a string or a message list"):
        convert("columns", dict(row, good=5), options)


# -- registry and plugins ------------------------------------------------------------------


def test_builtin_formats_and_unknown_names() -> None:
    assert {"hh", "ultrafeedback", "shp", "messages", "columns"} <= set(get_converters())
    with pytest.raises(UsageError, match="unknown format 'shpp'. Did you mean 'shp'?"):
        get_converter("shpp")


@pytest.fixture
def third_party_converter(monkeypatch: pytest.MonkeyPatch):
    """A plugin module providing format 'lab', registered like an installed plugin."""

    def convert_lab(row: dict, options: ConvertOptions) -> dict:
        if "q" not in row:
            raise ConversionError("q", "missing field")
        return {"prompt": row["q"], "chosen": row["win"], "rejected": row["lose"]}

    module = types.ModuleType("lab_plugin")

    @prefopt.hookimpl
    def prefopt_converters():
        return [ConverterSpec("lab", "our lab's export", convert_lab)]

    module.prefopt_converters = prefopt_converters  # type: ignore[attr-defined]
    registry = prefopt.registry.PluginRegistry()
    registry.register(module, prefopt.registry.PluginInfo("lab", "lab-plugin", "1.0"))
    monkeypatch.setattr(prefopt.registry, "_REGISTRY", registry)
    return convert_lab


def test_plugin_converter_through_the_cli(tmp_path: Path, third_party_converter) -> None:
    assert get_converters()["lab"].summary == "our lab's export"
    source = write(tmp_path / "lab.jsonl", [{"q": "Q", "win": "W", "lose": "L", "id": 1}])
    result = runner.invoke(app, ["convert", str(source), "--from", "lab", "--text"])
    assert result.exit_code == 0, result.output
    assert read_rows(tmp_path / "lab_converted.jsonl") == [
        {"prompt": "Q", "chosen": "W", "rejected": "L"}
    ]
    bad = write(tmp_path / "bad.jsonl", [{"win": "W", "lose": "L"}])
    result = runner.invoke(app, ["convert", str(bad), "--from", "lab"])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {bad}:1: q: missing field"


# -- the command ---------------------------------------------------------------------------


def test_cli_convert_hh_file(tmp_path: Path) -> None:
    source = write(tmp_path / "hh.jsonl", [HH_MULTI, HH_MULTI])
    out = tmp_path / "out" / "records.jsonl"
    result = runner.invoke(app, ["convert", str(source), "--from", "hh", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert len(rows) == 2 and rows[0]["chosen"] == [bot("Berlin is the capital of Germany.")]
    assert "written" in result.output
    again = runner.invoke(app, ["convert", str(source), "--from", "hh", "-o", str(out)])
    assert again.exit_code == 2 and "already exists; pass --force" in again.stderr


def test_cli_convert_skip_invalid_counts_and_refuses_all_bad(tmp_path: Path) -> None:
    bad = {"chosen": "no turns", "rejected": "x"}
    source = write(tmp_path / "mixed.jsonl", [HH_MULTI, bad, HH_MULTI])
    result = runner.invoke(app, ["convert", str(source), "--from", "hh"])
    assert result.exit_code == 2
    assert f"{source}:2: chosen: no 'Human:'/'Assistant:' turns found" in result.stderr
    assert not (tmp_path / "mixed_converted.jsonl").exists()

    result = runner.invoke(app, ["convert", str(source), "--from", "hh", "--skip-invalid"])
    assert result.exit_code == 0, result.output
    assert len(read_rows(tmp_path / "mixed_converted.jsonl")) == 2
    assert "skipped" in result.output and f"{source}:2: chosen" in result.output

    only_bad = write(tmp_path / "bad.jsonl", [bad])
    result = runner.invoke(app, ["convert", str(only_bad), "--from", "hh", "--skip-invalid"])
    assert result.exit_code == 2 and "no row could be converted" in result.stderr
    assert not (tmp_path / "bad_converted.jsonl").exists()


def test_cli_convert_from_a_hub_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def fake_load_dataset(source: str, split: str):
        assert (source, split) == ("someone/shp-like", "test")
        return [{"history": "H", "human_ref_A": "a", "human_ref_B": "b", "labels": 0}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["convert", "someone/shp-like", "--from", "shp", "--split", "test"])
    assert result.exit_code == 0, result.output
    assert read_rows(tmp_path / "shp-like_test_converted.jsonl") == [
        {"prompt": [user("H")], "chosen": [bot("b")], "rejected": [bot("a")]}
    ]


def test_convert_report_counts() -> None:
    report = ConvertReport()
    rows = [(1, HH_MULTI), (2, {"chosen": "x", "rejected": "y"})]
    out = list(convert_rows(rows, get_converter("hh"), "f", skip_invalid=True, report=report))
    assert len(out) == 1
    assert (report.read, report.written, report.skipped) == (2, 1, 1)
    assert report.first_skipped[0].startswith("f:2: chosen:")
