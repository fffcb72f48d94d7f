"""``prefopt eval harness``: lm-evaluation-harness on a trained tiny run and its base.

The task is a TruthfulQA-MC1-style multiple choice of our own over a local JSONL
(tests/data/harness/mc1_world.yaml); the log-likelihoods, acc and acc_norm the harness reports
are checked against a computation of our own with the same models.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from prefopt.cli.main import app
from prefopt.testing import run_cli, synthetic_pairs, write_pairs

#: Everything but the missing-package test needs lm-eval (the harness extra; CI installs it).
needs_lm_eval = pytest.mark.skipif(
    importlib.util.find_spec("lm_eval") is None, reason="pip install 'prefopt[harness]'"
)

HERE = Path(__file__).resolve().parent
TASKS = HERE / "data" / "harness"
EXAMPLES = HERE.parent / "examples" / "harness"


@pytest.fixture(scope="module")
def trained_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-step DPO run (LoRA adapter) with a learning rate large enough to move the
    log-likelihoods visibly away from the base's."""
    folder = tmp_path_factory.mktemp("harness")
    pairs = write_pairs(folder / "pairs.jsonl", synthetic_pairs(16))
    out = folder / "run"
    code, _, stderr = run_cli(
        "train", "dpo", "--model", str(tiny_model), "--train-file", str(pairs),
        "--output-dir", str(out), "--max-steps", "2",
        "--set", "training.per_device_train_batch_size=8", "--set", "training.bf16=false",
        "--set", "training.learning_rate=0.01",
    )  # fmt: skip
    assert code == 0, stderr
    return out


@pytest.fixture(scope="module")
def harness_run(trained_run: Path) -> tuple[Path, str]:
    code, stdout, stderr = run_cli(
        "eval", "harness", str(trained_run), "--tasks", "mc1_world",
        "--include-path", str(TASKS), "--log-samples", "--batch-size", "3",
    )  # fmt: skip
    assert code == 0, stderr
    return trained_run, stdout


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@needs_lm_eval
def test_results_beside_the_run_with_base_run_and_delta(
    harness_run: tuple[Path, str], tiny_model: Path
) -> None:
    run, stdout = harness_run
    results = json.loads((run / "harness_results.json").read_text())
    assert results["kind"] == "prefopt.harness"
    assert results["base"] == str(tiny_model)
    assert results["run"]["algorithm"] == "dpo"
    assert results["settings"]["trust_remote_code"] is False
    for name in ("mc1_world/acc", "mc1_world/acc_norm"):
        run_value, base_value = results["metrics"][name], results["base_metrics"][name]
        assert 0.0 <= run_value <= 1.0 and 0.0 <= base_value <= 1.0
        assert results["delta"][name] == pytest.approx(run_value - base_value)
    assert results["headline"] == ["mc1_world/acc", "mc1_world/acc_norm"]
    for role in ("base", "run"):
        assert results["results"][role]["n_samples"]["mc1_world"]["effective"] == 10
        assert "acc_stderr" in results["results"][role]["tasks"]["mc1_world"]
    rows = [line for line in stdout.splitlines() if "mc1_world" in line]
    assert len(rows) == 2 and "acc" in rows[0] and "acc_norm" in rows[1]
    assert f"{results['metrics']['mc1_world/acc']:.4f}" in rows[0]


def _choice_loglikelihoods(model: Any, tokenizer: Any, doc: dict[str, Any]) -> list[float]:
    """log p(" " + choice | "Q: question\\nA:"), summed over the choice's tokens."""
    import torch

    context = f"Q: {doc['question']}\nA:"
    context_length = len(tokenizer(context).input_ids)
    scores = []
    for choice in doc["choices"]:
        ids = torch.tensor([tokenizer(f"{context} {choice}").input_ids])
        with torch.no_grad():
            logps = model(ids).logits[0, :-1].float().log_softmax(-1)
        targets = ids[0, 1:]
        token_logps = logps.gather(-1, targets[:, None])[:, 0]
        scores.append(float(token_logps[context_length - 1 :].sum()))
    return scores


@needs_lm_eval
def test_numbers_equal_our_own_computation(harness_run: tuple[Path, str], tiny_model: Path) -> None:
    import numpy as np
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, _ = harness_run
    results = json.loads((run / "harness_results.json").read_text())
    samples = read_jsonl(run / "harness_samples.jsonl")
    docs = read_jsonl(TASKS / "mc1_world.jsonl")
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    base_tokenizer, run_tokenizer = (
        AutoTokenizer.from_pretrained(tiny_model),
        AutoTokenizer.from_pretrained(run),
    )
    ours = {"base": [_choice_loglikelihoods(base, base_tokenizer, d) for d in docs]}
    merged = PeftModel.from_pretrained(base, run).merge_and_unload().eval()  # base changes here
    ours["run"] = [_choice_loglikelihoods(merged, run_tokenizer, d) for d in docs]
    assert np.abs(np.array(ours["run"]) - np.array(ours["base"])).max() > 1e-2  # adapter applied
    for role, metrics in (("base", results["base_metrics"]), ("run", results["metrics"])):
        logged = sorted((s for s in samples if s["model"] == role), key=lambda s: s["doc_id"])
        assert [s["doc_id"] for s in logged] == list(range(len(docs)))
        theirs = [[response[0] for response in s["responses"]] for s in logged]
        assert np.allclose(theirs, ours[role], atol=1e-3, rtol=1e-4), role
        labels = np.array([d["label"] for d in docs])
        scores = np.array(ours[role])
        lengths = np.array([[len(choice) for choice in d["choices"]] for d in docs], dtype=float)
        acc = float(np.mean(scores.argmax(1) == labels))
        acc_norm = float(np.mean((scores / lengths).argmax(1) == labels))
        assert metrics["mc1_world/acc"] == pytest.approx(acc), role
        assert metrics["mc1_world/acc_norm"] == pytest.approx(acc_norm), role
        assert [s["metrics"]["acc"] for s in logged] == list((scores.argmax(1) == labels) * 1.0)


@needs_lm_eval
def test_eval_compare_shows_the_harness_metrics(
    harness_run: tuple[Path, str], tmp_path: Path
) -> None:
    run, _ = harness_run
    results = json.loads((run / "harness_results.json").read_text())
    chart = tmp_path / "compare.png"
    shown = CliRunner().invoke(
        app, ["eval", "compare", str(run), "--plot", str(chart)], env={"COLUMNS": "200"}
    )
    assert shown.exit_code == 0, shown.stderr
    assert "mc1_world/acc" in shown.stdout and "mc1_world/acc_norm" in shown.stdout
    row = next(line for line in shown.stdout.splitlines() if "dpo" in line)
    assert f"{results['metrics']['mc1_world/acc']:.4f}" in row
    assert chart.read_bytes().startswith(b"\x89PNG")


@needs_lm_eval
def test_existing_results_are_kept_without_force(harness_run: tuple[Path, str]) -> None:
    run, _ = harness_run
    result = CliRunner().invoke(
        app, ["eval", "harness", str(run), "--tasks", "mc1_world", "--include-path", str(TASKS)]
    )
    assert result.exit_code == 2
    assert "harness_results.json already exists; pass --force" in result.stderr


def test_missing_lm_eval_gives_the_install_hint(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['lm_eval'] = None\n"
        "from prefopt.cli.main import main\n"
        "sys.argv = ['prefopt', 'eval', 'harness', 'some-model', '--tasks', 'truthfulqa_mc1']\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: prefopt eval harness needs the 'lm_eval' package")
    assert "pip install 'prefopt[harness]'" in line


@needs_lm_eval
def test_the_example_task_reads_its_data_from_beside_the_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lm_eval.tasks import TaskManager

    from prefopt.errors import UsageError
    from prefopt.eval.harness import load_tasks

    monkeypatch.chdir(tmp_path)  # the JSONL is named relative to the YAML, not to here
    manager = TaskManager(include_path=str(EXAMPLES), include_defaults=False)
    (task,) = load_tasks(manager, ["mc1_local"])
    docs = list(task.validation_docs())
    assert len(docs) == 10 and {"question", "choices", "label"} <= set(docs[0])
    assert task.doc_to_choice(docs[0])[docs[0]["label"]].startswith("It passes through")
    with pytest.raises(UsageError, match="unknown task mc1_locl .*did you mean mc1_local"):
        load_tasks(manager, ["mc1_locl"])


@needs_lm_eval
def test_tasks_that_run_model_code_are_refused_before_any_model_loads(tmp_path: Path) -> None:
    from lm_eval.tasks import TaskManager

    from prefopt.errors import UsageError
    from prefopt.eval.harness import load_tasks

    task = (TASKS / "mc1_world.yaml").read_text().replace("task: mc1_world", "task: mc1_unsafe")
    data = (TASKS / "mc1_world.jsonl").resolve()
    (tmp_path / "unsafe.yaml").write_text(
        task.replace("validation: mc1_world.jsonl", f"validation: {data}") + "unsafe_code: true\n"
    )
    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
    with pytest.raises(UsageError, match="mc1_unsafe runs model-written code"):
        load_tasks(manager, ["mc1_unsafe"])


@needs_lm_eval
def test_the_real_model_on_the_example_task(tmp_path: Path) -> None:
    """SmolLM2-135M-Instruct (prefopt.testing's real model) on examples/harness/mc1_local:
    the harness's log-likelihoods are the model's own."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefopt.testing.real_model import skip_reason, smollm2_dir

    if skip_reason() is not None:
        pytest.skip(str(skip_reason()))
    model = smollm2_dir()
    results = tmp_path / "harness_results.json"
    shown = CliRunner().invoke(
        app,
        ["eval", "harness", str(model), "--tasks", "mc1_local", "--include-path", str(EXAMPLES),
         "--limit", "3", "--results", str(results), "--log-samples"],
    )  # fmt: skip
    assert shown.exit_code == 0, shown.stderr
    document = json.loads(results.read_text())
    assert document["base"] is None and document["base_metrics"] is None
    samples = read_jsonl(tmp_path / "harness_samples.jsonl")
    assert [s["doc_id"] for s in samples] == [0, 1, 2]
    docs = read_jsonl(EXAMPLES / "mc1_local.jsonl")[:3]
    loaded = AutoModelForCausalLM.from_pretrained(model).eval()
    tokenizer = AutoTokenizer.from_pretrained(model)
    for sample, doc in zip(samples, docs, strict=True):
        theirs = [response[0] for response in sample["responses"]]
        assert theirs == pytest.approx(_choice_loglikelihoods(loaded, tokenizer, doc), abs=1e-3)
    correct = [max(range(4), key=lambda i: s["responses"][i][0]) == s["target"] for s in samples]
    assert document["metrics"]["mc1_local/acc"] == pytest.approx(sum(correct) / 3)
