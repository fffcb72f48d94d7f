"""Checkpoints and `--resume`: a run killed with SIGKILL after a checkpoint and resumed ends with
the same per-step metrics as an uninterrupted run (model, optimizer, scheduler, RNG, data
position and the loss state: dynamic-β's τ, β and warmup margins)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

STEPS = 6
CHECKPOINT_STEP = 3
SETS = [
    "training.logging_steps=1",
    f"training.save_steps={CHECKPOINT_STEP}",
    "training.per_device_train_batch_size=4",
    "training.learning_rate=1e-3",
    "model.precision=fp32",
]
# dynamic-β: the checkpoint falls inside the warmup (calls 1-4), so the collected margins must
# survive for τ to be right at call 4; β then moves at calls 5 and 6.
ALGORITHMS = {
    "dpo": {},
    "dynamic-beta": {"warmup_steps": 4, "alpha": 0.05, "delta": 0.25},
}
TIMING_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss"}

#: Logged metrics that measure time, not training: equal only by chance.
WALL_CLOCK = {"pairs_per_second"}


def metric_lines(output_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records if "loss" in r]


def command(algorithm: str, model: Path, data: Path, out: Path) -> list[str]:
    flags = [
        item
        for name, value in ALGORITHMS[algorithm].items()
        for item in (f"--{name.replace('_', '-')}", str(value))
    ]
    sets = [item for value in SETS for item in ("--set", value)]
    return [
        sys.executable, "-m", "prefopt", "train", algorithm, "--model", str(model),
        "--train-file", str(data), "--output-dir", str(out), "--max-steps", str(STEPS),
        *sets, *flags, "-q",
    ]  # fmt: skip


def run_in_process(
    algorithm: str, model: Path, data: Path, out: Path, resume: bool = False
) -> list[dict]:
    """The run of ``command`` in this process (same code and settings as the CLI)."""
    from prefopt.cli.common import quiet_libraries
    from prefopt.config_layers import resolve_run_config
    from prefopt.registry import get_algorithm
    from prefopt.training.run import train

    spec = get_algorithm(algorithm)
    flags = {
        "model.name_or_path": str(model),
        "data.train": str(data),
        "training.output_dir": str(out),
        "training.max_steps": STEPS,
        **{f"algorithm.{k}": v for k, v in ALGORITHMS[algorithm].items()},
    }
    quiet_libraries()
    train(resolve_run_config(spec, None, flags, SETS), spec, resume=resume, quiet=True)
    return metric_lines(out)


# Runs ``python -m prefopt ...`` with the Trainer's RNG-state save (the last file before
# trainer_state.json) stalled at one step: the process leaves a marker naming the folder it
# was writing, then waits to be killed in the middle of the checkpoint save.
STALL_SAVE = """
import pathlib, runpy, sys, time
from transformers import Trainer
marker, step = pathlib.Path(sys.argv.pop(1)), int(sys.argv.pop(1))
save_rng_state = Trainer._save_rng_state
def stalled(self, output_dir):
    save_rng_state(self, output_dir)
    if self.state.global_step == step:
        partial = marker.with_name(marker.name + ".tmp")  # the marker appears whole: the
        partial.write_text(output_dir)                    # test reads it the moment it exists
        partial.rename(marker)
        time.sleep(600)
Trainer._save_rng_state = stalled
runpy.run_module("prefopt", run_name="__main__")
"""


def kill_when(process: subprocess.Popen, marker: Path, timeout: float = 300) -> None:
    """Wait until ``marker`` exists, then SIGKILL ``process``."""
    deadline = time.monotonic() + timeout
    try:
        while not marker.is_file():
            if process.poll() is not None:
                stderr = process.stderr.read().decode() if process.stderr else ""
                pytest.fail(f"the run ended (code {process.returncode}) before {marker}: {stderr}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {marker} after {timeout} s")
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
        if process.stderr:
            process.stderr.close()
    assert process.returncode == -signal.SIGKILL


def start(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_after_checkpoint(args: list[str], checkpoint: Path) -> None:
    """Start ``args``, wait until ``checkpoint`` is complete, then SIGKILL the process."""
    kill_when(start(args), checkpoint / "trainer_state.json")  # written last


def kill_during_save(args: list[str], step: int, marker: Path) -> Path:
    """Start ``args`` and SIGKILL it in the middle of saving the checkpoint of ``step``;
    returns the folder the save was writing."""
    kill_when(start([sys.executable, "-c", STALL_SAVE, str(marker), str(step), *args[3:]]), marker)
    return Path(marker.read_text())


# dpo is killed in the middle of saving checkpoint-6 and resumes through `prefopt train ...
# --resume` from checkpoint-3; dynamic-beta is killed right after checkpoint-3 and resumes
# through train(resume=True).
@pytest.mark.parametrize(("algorithm", "resume_with_cli"), [("dpo", True), ("dynamic-beta", False)])
def test_sigkill_then_resume_matches_an_uninterrupted_run(
    algorithm: str, resume_with_cli: bool, tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    reference = run_in_process(algorithm, tiny_model, pairs_file, tmp_path / "reference")
    assert [r["step"] for r in reference] == list(range(1, STEPS + 1))

    out = tmp_path / "killed"
    args = command(algorithm, tiny_model, pairs_file, out)
    if resume_with_cli:
        writing = kill_during_save(args, STEPS, tmp_path / "stalled")
        # The half-written checkpoint is in its staging folder; checkpoint-6 does not exist.
        assert writing == out / f"tmp-checkpoint-{STEPS}" / f"checkpoint-{STEPS}"
        for name in ("adapter_model.safetensors", "optimizer.pt", "rng_state.pth"):
            assert (writing / name).is_file(), name  # killed after these, before the state
        assert not (writing / "trainer_state.json").exists()
        assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{CHECKPOINT_STEP}"]
    else:
        kill_after_checkpoint(args, out / f"checkpoint-{CHECKPOINT_STEP}")
    assert not (out / "adapter_model.safetensors").exists()  # it really died mid-run
    survivors = metric_lines(out)
    assert [r["step"] for r in survivors][:CHECKPOINT_STEP] == list(range(1, CHECKPOINT_STEP + 1))
    if algorithm == "dynamic-beta":
        state = json.loads(
            (out / f"checkpoint-{CHECKPOINT_STEP}/prefopt_loss_state.json").read_text()
        )
        assert state["calls"] == CHECKPOINT_STEP and state["tau"] is None  # still warming up
        assert len(state["collected"]) == CHECKPOINT_STEP * 4  # margins of 3 batches of 4

    if resume_with_cli:
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
        resumed = subprocess.run(
            [*args, "--resume"], env=env, capture_output=True, text=True, timeout=600
        )
        assert resumed.returncode == 0, resumed.stderr
        assert not list(out.glob("tmp-*"))  # the stale staging folder is gone
        assert (out / f"checkpoint-{STEPS}" / "trainer_state.json").is_file()
    else:
        run_in_process(algorithm, tiny_model, pairs_file, out, resume=True)
    assert (out / "adapter_model.safetensors").is_file()
    after = metric_lines(out)
    assert [r["step"] for r in after] == list(range(1, STEPS + 1))  # no step twice, none lost
    for expected, got in zip(reference, after, strict=True):
        assert set(got) == set(expected), expected["step"]
        for key, value in expected.items():
            if key in WALL_CLOCK:
                continue
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-7), (expected["step"], key)
    if algorithm == "dynamic-beta":
        assert after[-1]["beta"] != after[0]["beta"]  # β moved after the warmup
        assert "tau" in after[-1]
    window = json.loads((out / f"checkpoint-{STEPS}" / "prefopt_length_window.json").read_text())
    assert len(window["margins"]) == len(window["length_gaps"]) == STEPS * 4  # batches of 4


def test_latest_checkpoint_skips_a_save_cut_short(tmp_path: Path) -> None:
    from prefopt.training.checkpoints import latest_checkpoint

    assert latest_checkpoint(tmp_path / "missing") is None
    for step, state in ((2, "{}"), (10, "{}"), (12, None), (14, '{"trunc')):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-99.tmp").mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10"  # not 2 (older), 12, 14


def test_resume_names_an_incomplete_checkpoint_then_finds_none(
    tiny_model: Path,
    pairs_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prefopt.cli.main import main

    out = tmp_path / "run"
    (out / "checkpoint-3").mkdir(parents=True)  # cut short by an older prefopt: no state
    (out / "checkpoint-3" / "adapter_model.safetensors").write_bytes(b"")
    (out / "metrics.jsonl").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "dpo", "--model", str(tiny_model), "--train-file", str(pairs_file),
              "--output-dir", str(out), "--resume", "-q"])  # fmt: skip
    assert exit_info.value.code == 2
    notices = [record.getMessage() for record in caplog.records if record.name == "prefopt"]
    assert notices == [
        f"{out / 'checkpoint-3'} is incomplete (no readable trainer_state.json): skipped"
    ]  # once, though both the finished-run check and the resume look for a checkpoint
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert errors == [f"error: --resume: no complete checkpoint in {out}"]


def test_a_checkpoint_arrives_in_one_rename(tmp_path: Path) -> None:
    from prefopt.training.checkpoints import (
        publish_checkpoint,
        remove_stale_staging,
        staging_folder,
    )

    staging = staging_folder(tmp_path, 4)
    (staging / "checkpoint-4").mkdir(parents=True)
    (staging / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-4").mkdir()  # left by a save cut short in an older prefopt
    (tmp_path / "checkpoint-4" / "optimizer.pt").write_text("old")
    assert publish_checkpoint(staging, tmp_path) == tmp_path / "checkpoint-4"
    assert sorted(p.name for p in (tmp_path / "checkpoint-4").iterdir()) == ["trainer_state.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]

    staging_folder(tmp_path, 6).mkdir()  # a run killed while it wrote checkpoint-6
    (staging_folder(tmp_path, 6) / "checkpoint-6").mkdir()
    assert remove_stale_staging(tmp_path) == [tmp_path / "tmp-checkpoint-6"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]
    assert remove_stale_staging(tmp_path / "missing") == []


# Across epochs: 20 pairs in batches of 4 are 5 steps an epoch; 12 steps run into the 3rd epoch.
EPOCH_PAIRS, EPOCH_STEPS = 20, 12


def test_resume_is_exact_in_a_later_epoch(tiny_model: Path, tmp_path: Path) -> None:
    """Resumed in the 2nd epoch (checkpoint-8, 3 steps in) and exactly at the end of the 2nd
    (checkpoint-10), every later step logs what the uninterrupted run logged: each epoch's
    data order (length-grouped by default) is a function of the seed and the epoch, not of the
    global RNG the steps before it consumed."""
    import shutil

    from prefopt.testing import run_cli, synthetic_pairs, write_pairs

    data = write_pairs(tmp_path / "pairs.jsonl", synthetic_pairs(EPOCH_PAIRS))

    def train(out: Path, *extra: str) -> None:
        sets = [*SETS, "training.save_steps=2", "training.save_total_limit=5"]
        code, _, stderr = run_cli(
            "train", "dpo", "--model", str(tiny_model), "--train-file", str(data),
            "--output-dir", str(out), "--max-steps", str(EPOCH_STEPS),
            *(item for value in sets for item in ("--set", value)), "-q", *extra,
        )  # fmt: skip
        assert code == 0, stderr

    reference_dir = tmp_path / "reference"
    train(reference_dir)
    reference = metric_lines(reference_dir)
    assert [r["step"] for r in reference] == list(range(1, EPOCH_STEPS + 1))
    assert reference[-1]["epoch"] > 2  # the run crossed two epoch boundaries
    # save_total_limit rotates the renamed-into-place checkpoints; no staging folder is left
    assert sorted(p.name for p in reference_dir.glob("*checkpoint-*")) == [
        f"checkpoint-{step}" for step in (10, 12, 4, 6, 8)
    ]
    for checkpoint in (8, 10):
        out = tmp_path / f"from-{checkpoint}"
        out.mkdir()
        shutil.copytree(
            reference_dir / f"checkpoint-{checkpoint}", out / f"checkpoint-{checkpoint}"
        )
        train(out, "--resume")
        after = metric_lines(out)
        assert [r["step"] for r in after] == list(range(checkpoint + 1, EPOCH_STEPS + 1))
        for expected, got in zip(reference[checkpoint:], after, strict=True):
            assert set(got) == set(expected), (checkpoint, expected["step"])
            for key, value in expected.items():
                if key in WALL_CLOCK:
                    continue
                assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-7), (
                    checkpoint, expected["step"], key,
                )  # fmt: skip
