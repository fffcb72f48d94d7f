"""The output folder of `prefopt train`: a run is never silently replaced (`--resume` continues
it, `--overwrite` replaces it), `--resume` on a finished run changes nothing, Ctrl-C names the
way back, a local model is stored as an absolute path and `metrics.jsonl` has each step once."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from prefopt.paths import current_umask
from prefopt.testing import run_cli
from prefopt.testing.cli_runner import run_cli_in_process

FLAGS = [
    "--max-steps", "2",
    "--set", "training.per_device_train_batch_size=8",
    "--set", "training.logging_steps=1",
    "--set", "model.precision=fp32",
    "-q",
]  # fmt: skip


def train(
    model: Path, data: Path, out: Path, *extra: str, algorithm: str = "dpo", fresh: bool = False
) -> tuple:
    """``prefopt train`` in this process, or with ``fresh`` in a new interpreter (whose
    start-up the run's timing books)."""
    return (run_cli if fresh else run_cli_in_process)(
        "train", algorithm, "--model", str(model), "--train-file", str(data),
        "--output-dir", str(out), *FLAGS, *extra,
    )  # fmt: skip


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def step_lines(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if "step" in line]


def test_a_second_run_into_the_same_folder_is_refused_and_changes_nothing(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code, _, stderr = train(tiny_model, pairs_file, out)
    assert code == 0, stderr
    before = fingerprint(out)
    for algorithm in ("dpo", "beta-dpo"):
        code, _, stderr = train(tiny_model, pairs_file, out, algorithm=algorithm)
        assert code == 2
        message = stderr.strip().splitlines()
        assert len(message) == 1 and "Traceback" not in stderr
        assert str(out) in message[0]
        assert "--resume" in message[0] and "--overwrite" in message[0]
    assert fingerprint(out) == before


def test_overwrite_replaces_the_run_and_its_evaluation_results(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code, _, stderr = train(tiny_model, pairs_file, out, "--set", "training.save_steps=1")
    assert code == 0, stderr
    assert (out / "checkpoint-1").is_dir() and (out / "checkpoint-2").is_dir()
    (out / "eval_results.json").write_text('{"pref_accuracy": 0.99}')
    (out / "notes.txt").write_text("mine")  # not the run's: stays

    # A new run that fails at its data leaves the old run whole.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a"}\n')
    before = fingerprint(out)
    code, _, stderr = run_cli_in_process(
        "train", "dpo", "--model", str(tiny_model), "--train-file", str(bad),
        "--output-dir", str(out), *FLAGS, "--overwrite",
    )  # fmt: skip
    assert code == 2 and "bad.jsonl:1" in stderr
    assert fingerprint(out) == before

    code, _, stderr = train(tiny_model, pairs_file, out, "--max-steps", "1", "--force")
    assert code == 0, stderr
    assert not (out / "eval_results.json").exists()
    assert not (out / "checkpoint-2").exists()  # the old run's checkpoints are gone
    assert (out / "notes.txt").read_text() == "mine"
    assert [line["step"] for line in step_lines(out)] == [1]
    saved = yaml.safe_load((out / "prefopt_config.yaml").read_text())
    assert saved["training"]["max_steps"] == 1


def test_resume_of_a_finished_run_says_so_and_changes_nothing(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code, _, stderr = train(tiny_model, pairs_file, out, "--set", "training.save_steps=1")
    assert code == 0, stderr
    before = fingerprint(out)
    code, stdout, stderr = train(
        tiny_model, pairs_file, out, "--set", "training.save_steps=1", "--resume"
    )
    assert code == 0, stderr
    assert "finished at step 2" in stdout and "nothing to resume" in stdout
    assert fingerprint(out) == before
    assert not (out / "checkpoint-3").exists()

    # --resume together with --overwrite is a contradiction, answered before anything loads.
    code, _, stderr = train(tiny_model, pairs_file, out, "--resume", "--overwrite")
    assert code == 2 and "pass one" in stderr
    assert fingerprint(out) == before


def test_metrics_jsonl_has_each_step_once_and_a_summary_line(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code, stdout, stderr = train(
        tiny_model, pairs_file, out, "--set", "training.save_steps=1",
        "--eval-file", str(pairs_file), "--set", "training.eval_strategy=steps",
        "--set", "training.eval_steps=2", fresh=True,
    )  # fmt: skip
    assert code == 0, stderr
    assert "time: startup" in stdout and " · total " in stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # The Trainer evaluated at the last step: that is the final evaluation, logged once.
    assert [(record["step"], "eval_loss" in record) for record in records[:-1]] == [
        (1, False), (2, False), (2, True)
    ]  # fmt: skip
    assert set(records[-1]) == {"summary"}  # one closing line, with everything in it
    summary = records[-1]["summary"]
    assert summary["global_step"] == 2 and summary["train_runtime"] > 0
    assert summary["precision"] == "fp32" and summary["train_loss"] > 0
    # Every file and folder of the run, the weights safetensors writes 0600 and the checkpoints
    # included, has what a plain open()/mkdir() gives under the umask.
    mask = current_umask()
    for item in [out, *out.rglob("*")]:
        expected = (0o777 if item.is_dir() else 0o666) & ~mask
        assert stat.S_IMODE(item.stat().st_mode) == expected, item
    # Where the whole command's time went, phase by phase; the phases add up to the total.
    timing = summary["timing"]
    for phase in ("startup", "tokenize", "model", "reference", "train", "save", "total"):
        assert timing[phase] >= 0, phase
    assert timing["startup"] > 0.1  # the interpreter and the imports before train()
    assert timing["train"] >= summary["train_runtime"] * 0.9
    phases = sum(seconds for name, seconds in timing.items() if name != "total")
    assert abs(phases - timing["total"]) < 0.01


def test_a_relative_local_model_is_stored_as_an_absolute_path(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    from prefopt.config import local_path_or_id

    relative = os.path.relpath(tiny_model, tmp_path)
    code, stdout, stderr = _run_in(tmp_path, relative, pairs_file)
    assert code == 0, stderr
    printed = yaml.safe_load(stdout)
    assert printed["model"]["name_or_path"] == str(tiny_model.resolve())
    assert local_path_or_id("HuggingFaceTB/SmolLM2-135M-Instruct") == (
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )


def _run_in(cwd: Path, model: str, data: Path) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "prefopt", "train", "dpo", "--model", model,
         "--train-file", str(data), "--output-dir", "run", "--print-config"],
        cwd=cwd, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


def test_ctrl_c_names_the_checkpoint_to_resume_from(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    from prefopt.training.checkpoints import latest_checkpoint

    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "prefopt", "train", "dpo", "--model", str(tiny_model),
        "--train-file", str(pairs_file), "--output-dir", str(out), "--max-steps", "100000",
        "--set", "training.save_steps=5", "--set", "training.per_device_train_batch_size=2",
        "--set", "model.precision=fp32", "-q",
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Ctrl-C as in a terminal: a test run started in the background of a script (`cmd &`
        # without job control) ignores SIGINT, and a child inherits that, so the run would
        # never see the signal (it trained on for 120 s in such a run of the suite).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 300
        while latest_checkpoint(out) is None:
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a failed test must not leave a training run behind
            proc.kill()
            proc.communicate()
    lines = stderr.decode().strip().splitlines()
    assert proc.returncode == 130, stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert "interrupted" in lines[-1] and "--resume" in lines[-1] and "checkpoint-" in lines[-1]


def test_a_start_that_failed_before_its_first_checkpoint_is_not_a_run(tmp_path: Path) -> None:
    """The config and metrics a failed start left (a batch size too large, a non-finite loss
    at step 3) hold nothing to continue or to lose: the rerun goes ahead without --overwrite.
    A checkpoint or a saved adapter/model is a run."""
    from prefopt.errors import UsageError
    from prefopt.training.run_folder import check_output_dir, existing_run, finished_step

    out = tmp_path / "run"
    out.mkdir()
    (out / "prefopt_config.yaml").write_text("training: {}\n")
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": NaN}\n')
    assert existing_run(out) == []
    check_output_dir(out, resume=False, overwrite=False)
    assert finished_step(out, max_steps=-1) is None
    for held in ("adapter_model.safetensors", "checkpoint-2"):
        run = tmp_path / held.replace(".", "_")
        run.mkdir()
        (run / "prefopt_config.yaml").write_text("training: {}\n")
        (run / held).mkdir() if held.startswith("checkpoint") else (run / held).write_bytes(b"")
        assert existing_run(run) == [held]
        with pytest.raises(UsageError, match="already holds a run"):
            check_output_dir(run, resume=False, overwrite=False)


def test_the_interrupt_hint_of_a_run_without_checkpoints_is_a_plain_rerun(tmp_path: Path) -> None:
    from prefopt.cli.train import _resume_hint

    assert _resume_hint(tmp_path) == (
        "no checkpoint was saved yet: rerun the same command to start again"
    )


def test_the_adapter_card_describes_the_run(tiny_model: Path, tmp_path: Path) -> None:
    """PEFT saves a blank template as the adapter's README.md ("Model Card for Model ID");
    a run writes a card of its own: base, algorithm and settings, data, final metrics."""
    from prefopt.testing import train_one_step

    train_one_step("dpo", tiny_model, tmp_path, pairs=4, sets=["model.precision=fp32"], beta=0.3)
    card = (tmp_path / "run" / "README.md").read_text()
    assert "Model Card for Model ID" not in card
    assert card.startswith(f'---\nbase_model: "{tiny_model}"\nlibrary_name: peft\n')
    for row in (
        "| algorithm | dpo |",
        "| beta | 0.3 |",
        "| LoRA | r=16, alpha=32",
        "| precision | fp32 |",
    ):
        assert row in card, row
    assert "| training data | `" in card and "train_one_step.jsonl` |" in card
    assert "| loss | 0.6931 |" in card  # the final metrics, as logged
