"""The Python API (``prefopt.train``, ``evaluate``, ``merge``, ``flip``): in-process, with the
checks and guarantees of the commands, and the example of docs/python-api.md runs."""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import prefopt
from prefopt.errors import ConfigError, DataError, UsageError
from prefopt.testing import run_cli, synthetic_pairs, write_pairs

DOCS = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
SMALL = {"per_device_train_batch_size": 4, "logging_steps": 1, "save_steps": 1}


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def losses(out: Path) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(line["step"], line["loss"]) for line in lines if "loss" in line]


def train(model: Path, data: Path, out: Path, **overrides: Any) -> Any:
    overrides = {"max_steps": 2, "training": SMALL, "model.precision": "fp32", **overrides}
    return prefopt.train("dpo", model=model, train_file=data, output_dir=out, **overrides)


def test_import_prefopt_stays_light_and_exports_the_api_lazily() -> None:
    probe = (
        "import sys, prefopt\n"
        "before = sorted(m for m in ('torch', 'transformers', 'prefopt.workflows') "
        "if m in sys.modules)\n"
        "train = prefopt.train\n"
        "print(before, train.__module__, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.split() == ["[]", "prefopt.workflows", "False"], done.stderr
    assert {"train", "evaluate", "merge", "flip"} <= set(prefopt.__all__)


def test_train_equals_the_command(tiny_model: Path, pairs_file: Path, tmp_path: Path) -> None:
    """The same settings through prefopt.train and through `prefopt train`: the same losses,
    the same files, the same saved config."""
    result = train(tiny_model, pairs_file, tmp_path / "api")
    assert (result.steps, result.train_pairs, result.already_finished) == (2, 64, False)
    assert result.output_dir == tmp_path / "api"
    assert result.final_metrics["loss"] == pytest.approx(losses(tmp_path / "api")[-1][1])
    assert losses(tmp_path / "api")[0][1] == pytest.approx(math.log(2), abs=1e-6)
    assert set(result.timing) >= {"tokenize", "model", "train", "save", "total"}

    code, _, stderr = run_cli(
        "train", "dpo", "--model", str(tiny_model), "--train-file", str(pairs_file),
        "--output-dir", str(tmp_path / "cli"), "--max-steps", "2", "-q",
        "--set", "training.per_device_train_batch_size=4", "--set", "training.logging_steps=1",
        "--set", "training.save_steps=1", "--set", "model.precision=fp32",
    )  # fmt: skip
    assert code == 0, stderr
    assert losses(tmp_path / "api") == losses(tmp_path / "cli")
    files = {name for name in fingerprint(tmp_path / "cli") if "checkpoint" not in name}
    assert {n for n in fingerprint(tmp_path / "api") if "checkpoint" not in n} == files
    api_config = yaml.safe_load((tmp_path / "api" / "prefopt_config.yaml").read_text())
    cli_config = yaml.safe_load((tmp_path / "cli" / "prefopt_config.yaml").read_text())
    for config in (api_config, cli_config):
        config["training"].pop("output_dir")
        config["training"].pop("run_name")
    assert api_config == cli_config


def test_refuses_to_overwrite_resumes_and_replaces(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    train(tiny_model, pairs_file, out)
    before = fingerprint(out)
    with pytest.raises(UsageError, match="already holds a run.*--resume.*--overwrite"):
        train(tiny_model, pairs_file, out)
    with pytest.raises(UsageError, match="pass one"):
        train(tiny_model, pairs_file, out, resume=True, overwrite=True)
    assert fingerprint(out) == before  # nothing was touched

    resumed = train(tiny_model, pairs_file, out, max_steps=3, resume=True)
    assert resumed.steps == 3 and [step for step, _ in losses(out)] == [1, 2, 3]
    finished = train(tiny_model, pairs_file, out, max_steps=3, resume=True)
    assert finished.already_finished and finished.steps == 3
    assert not (out / "checkpoint-4").exists()

    bad = write_pairs(tmp_path / "bad.jsonl", [{"prompt": "p", "chosen": "a"}])
    kept = fingerprint(out)
    with pytest.raises(DataError, match=r"bad\.jsonl:1: rejected"):
        train(tiny_model, bad, out, overwrite=True)
    assert fingerprint(out) == kept  # a replacement that fails at its data loses nothing
    replaced = train(tiny_model, pairs_file, out, max_steps=1, overwrite=True)
    assert replaced.steps == 1 and not (out / "checkpoint-3").exists()


def test_config_mappings_fields_sections_and_dotted_keys(tiny_model: Path, tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "pairs.jsonl", synthetic_pairs(8, with_h_flags=True))
    out = tmp_path / "factual"
    config = {"training": {"learning_rate": 1e-4, **SMALL}, "lora": {"r": 4}}
    result = prefopt.train(
        "factual", config, model=tiny_model, train_file=data, output_dir=out,
        max_steps=1, delta=10, **{"lora.alpha": 8, "model.precision": "fp32"},
    )  # fmt: skip
    saved = yaml.safe_load((out / "prefopt_config.yaml").read_text())
    assert saved["algorithm"]["delta"] == 10 and saved["lora"]["r"] == 4
    assert saved["lora"]["alpha"] == 8 and saved["training"]["learning_rate"] == 1e-4
    assert result.steps == 1
    # lowest first: sections, then options and fields, then dotted keys, whatever their order
    from prefopt.registry import get_algorithm
    from prefopt.workflows import resolve

    spec = get_algorithm("dpo")
    layered = resolve(
        spec, None, {"max_steps": 10, "training": {"max_steps": 20}, "training.max_steps": 30}
    )
    assert layered.training["max_steps"] == 30
    assert (
        resolve(spec, None, {"max_steps": 10, "training": {"max_steps": 20}}).training["max_steps"]
        == 10
    )
    assert resolve(spec, None, {"lora": None}).lora is None  # None is a value: full fine-tuning
    with pytest.raises(ConfigError, match="training.learnig_rate.*Did you mean 'learning_rate'"):
        prefopt.train("dpo", model=tiny_model, training={"learnig_rate": 1e-5})
    with pytest.raises(UsageError, match="unknown algorithm 'dop'.*Did you mean 'dpo'"):
        prefopt.train("dop")


def test_flip_evaluate_and_merge(tiny_model: Path, tmp_path: Path) -> None:
    rows = synthetic_pairs(8, with_h_flags=True)
    source = write_pairs(tmp_path / "pairs.jsonl", rows)
    flipped, summary = prefopt.flip(source)
    assert flipped == tmp_path / "pairs_flipped.jsonl"
    assert summary.rows == 8 and summary.after.get((1, 0), 0) == 0
    with pytest.raises(UsageError, match="already exists"):
        prefopt.flip(source)

    run = prefopt.train(
        "dpo", model=tiny_model, train_file=flipped, output_dir=tmp_path / "run",
        max_steps=1, training=SMALL, **{"model.precision": "fp32"},
    )  # fmt: skip
    scores = prefopt.evaluate(run.output_dir, flipped, per_pair=tmp_path / "pairs.out.jsonl")
    assert scores.results_path == run.output_dir / "eval_results.json"
    written = json.loads(scores.results_path.read_text())
    assert written["metrics"] == scores.results["metrics"] and written["pairs"] == 8
    assert len((tmp_path / "pairs.out.jsonl").read_text().splitlines()) == 8
    with pytest.raises(UsageError, match="already exists"):
        prefopt.evaluate(run.output_dir, flipped)

    merged = prefopt.merge(run.output_dir)
    assert merged.output_dir == tmp_path / "run-merged"
    assert (merged.output_dir / "model.safetensors").is_file()
    with pytest.raises(UsageError):
        prefopt.merge(run.output_dir)  # the merged folder exists


def test_the_documented_example_runs(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/python-api.md's cells, in order, in a fresh folder, on the tiny model in place of
    SmolLM2 (the real-model tests cover that one): every print comes out."""
    cells = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    assert len(cells) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    printed: list[str] = []
    namespace["print"] = lambda *values, **_: printed.append(" ".join(map(str, values)))
    for cell in cells:
        code = cell.replace('"smollm2"', repr(str(tiny_model)))
        exec(compile(code, str(DOCS), "exec"), namespace)
    assert printed[0] == "pairs_flipped.jsonl 2 of 4 rows flipped"
    assert printed[1].startswith("2 ") and printed[1].endswith("runs/notebook")
    assert "already holds a run" in printed[2] and printed[3] == "3"
    assert printed[4].endswith("runs/notebook/eval_results.json")
    assert (tmp_path / "runs" / "notebook" / "adapter_model.safetensors").is_file()
