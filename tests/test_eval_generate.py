"""``prefopt eval generate``: batched answers equal one-by-one greedy decoding; resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from prefopt.cli.main import app
from prefopt.eval import generate as generating
from prefopt.eval.generate import GenerationSettings, generate_file, render_prompt
from prefopt.testing import synthetic_pairs, write_pairs

NEW_TOKENS = 6


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = synthetic_pairs(5, seed=3) + synthetic_pairs(2, seed=4, conversational=True)
    for index, row in enumerate(rows):  # ids only on some rows: the rest are keyed by line
        if index % 2:
            del row["id"]
    return write_pairs(tmp_path_factory.mktemp("gen") / "prompts.jsonl", rows)


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def greedy_one_by_one(model_dir: Path, rows: list[dict[str, Any]]) -> list[str]:
    """Independent reference: unbatched greedy decoding with a hand-written loop."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    answers = []
    for row in rows:
        prompt = row["prompt"]
        if isinstance(prompt, str):
            ids = tokenizer(prompt)["input_ids"]
        else:
            text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        new: list[int] = []
        for _ in range(NEW_TOKENS):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1]
            token = int(logits.argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
        answers.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return answers


def test_batched_greedy_equals_one_by_one(tiny_model: Path, prompts: Path, tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    result = CliRunner().invoke(
        app,
        ["eval", "generate", str(tiny_model), "--prompts", str(prompts), "--out", str(out),
         "--max-new-tokens", str(NEW_TOKENS), "--batch-size", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "7 answers" in result.stdout
    rows = read(out)
    source = read(prompts)
    assert [r["id"] for r in rows] == [s.get("id", str(i + 1)) for i, s in enumerate(source)]
    assert [r["prompt"] for r in rows] == [s["prompt"] for s in source]
    assert [r["chosen"] for r in rows] == [s["chosen"] for s in source]  # fields travel along
    assert [r["answer"] for r in rows] == greedy_one_by_one(tiny_model, source)
    assert all(r["generated_tokens"] <= NEW_TOKENS for r in rows)


def test_interrupted_run_resumes(
    tiny_model: Path, prompts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = GenerationSettings(max_new_tokens=NEW_TOKENS, batch_size=2)
    full, _, _ = generate_file(str(tiny_model), prompts, tmp_path / "full.jsonl", settings)

    real = generating.generate_batch
    calls: list[int] = []

    def flaky(model: Any, tokenizer: Any, batch: list[list[int]], *args: Any) -> Any:
        calls.append(len(batch))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(model, tokenizer, batch, *args)

    monkeypatch.setattr(generating, "generate_batch", flaky)
    out = tmp_path / "answers.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_file(
            str(tiny_model),
            prompts,
            out,
            GenerationSettings(max_new_tokens=NEW_TOKENS, batch_size=2),
        )
    assert not out.exists()
    assert len(read(out.with_name("answers.jsonl.partial"))) == 4

    calls.clear()
    path, made, resumed = generate_file(
        str(tiny_model), prompts, out, GenerationSettings(max_new_tokens=NEW_TOKENS, batch_size=2)
    )
    assert (made, resumed) == (3, 4) and calls == [2, 1]
    assert read(path) == read(full)
    assert not out.with_name("answers.jsonl.partial").exists()

    with pytest.raises(Exception, match="already exists; pass --force"):
        generate_file(str(tiny_model), prompts, out, settings)


def test_sampling_is_seeded(tiny_model: Path, prompts: Path, tmp_path: Path) -> None:
    def sample(name: str, seed: int) -> list[str]:
        settings = GenerationSettings(max_new_tokens=NEW_TOKENS, temperature=1.5, seed=seed)
        return [
            r["answer"]
            for r in read(generate_file(str(tiny_model), prompts, tmp_path / name, settings)[0])
        ]

    first, again, other = sample("a.jsonl", 1), sample("b.jsonl", 1), sample("c.jsonl", 2)
    assert first == again and first != other


def test_render_prompt_and_bad_rows(tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    as_chat = render_prompt("Hi?", tokenizer, "always")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi?"}], tokenize=False, add_generation_prompt=True
    )
    assert as_chat == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert render_prompt("Hi?", tokenizer, "auto") == tokenizer("Hi?")["input_ids"]

    bad = write_pairs(
        tmp_path / "bad.jsonl", [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}]
    )
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "generate",
            str(tiny_model),
            "--prompts",
            str(bad),
            "--out",
            str(tmp_path / "o.jsonl"),
        ],
    )
    assert result.exit_code == 2 and f"{bad}:2: id: duplicate id 'a'" in result.stderr
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "generate",
            str(tiny_model),
            "--prompts",
            str(bad),
            "--out",
            str(tmp_path / "o.jsonl"),
            "--top-p",
            "0",
        ],
    )
    assert result.exit_code == 2 and "--top-p must be in (0, 1]" in result.stderr
