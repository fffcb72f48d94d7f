"""A first run that never wastes the user's time (issue 29): impossible settings and unusable
output places are one-line errors (exit 2) before anything heavy loads, a closing evaluation is
logged once before the one closing summary line, and every output renamed into place has the
permissions a plain ``open()``/``mkdir()`` gives under the umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

# -- one line, exit 2, before torch --------------------------------------------------------
PROBE = """
import json, sys
from prefopt.cli.main import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prefopt.testing import synthetic_pairs, write_pairs
    from prefopt.training_arguments import training_argument_names

    training_argument_names()  # the name cache exists: checking a training.* key imports nothing
    return write_pairs(tmp_path_factory.mktemp("data") / "pairs.jsonl", synthetic_pairs(8))


def refused(*args: str, env: dict[str, str] | None = None) -> str:
    """Run the CLI in a fresh interpreter; assert exit code 2 with torch never imported and one
    line on stderr; return that line."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=full_env
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"code": 2, "torch": False}, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "dpo", "--model", "no-such/model-needed", "--train-file", str(data),
            "--output-dir", str(out), "-q", *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["--max-steps", "0"],
            "training.max_steps: expected a positive number of steps, or -1 for no limit "
            "(num_train_epochs decides), got 0",
        ),
        (
            ["--max-steps", "-5"],
            "training.max_steps: expected a positive number of steps, or -1 for no limit "
            "(num_train_epochs decides), got -5",
        ),
        (
            ["--set", "training.per_device_train_batch_size=0"],
            "training.per_device_train_batch_size: expected a positive integer, got 0",
        ),
        (
            ["--set", "training.per_device_eval_batch_size=-4"],
            "training.per_device_eval_batch_size: expected a positive integer, got -4",
        ),
        (
            ["--set", "training.gradient_accumulation_steps=0"],
            "training.gradient_accumulation_steps: expected a positive integer, got 0",
        ),
        (["--set", "lora.r=0"], "lora.r: expected a positive integer (the LoRA rank), got 0"),
        (["--set", "lora.r=-8"], "lora.r: expected a positive integer (the LoRA rank), got -8"),
        (
            ["--set", "data.max_prompt_length=2048"],
            "data.max_prompt_length (2048) must be smaller than data.max_length (1024): "
            "a prompt that long leaves no room for a completion",
        ),
    ],
)
def test_impossible_settings_are_refused_before_torch(
    data_file: Path, tmp_path: Path, sets: list[str], message: str
) -> None:
    out = tmp_path / "run"
    assert refused(*train_args(data_file, out, *sets)) == f"error: {message}"
    assert not out.exists()


def test_an_output_folder_that_is_a_file_is_refused_before_torch(
    data_file: Path, tmp_path: Path
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("mine\n")
    line = refused(*train_args(data_file, taken))
    assert line == f"error: {taken}: is a file, not a folder; -o/--output-dir names a folder"
    assert taken.read_text() == "mine\n"
    below = taken / "run"  # a file where a parent folder should be: nothing can be made there
    line = refused(*train_args(data_file, below))
    assert line == (
        f"error: {below}: cannot write the output folder: {taken} is a file, not a folder"
    )


def test_a_read_only_output_place_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefopt.paths import write_problem

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert write_problem(tmp_path) is None
        assert write_problem(tmp_path / "new" / "run") is None  # made when the run starts
        if os.geteuid() != 0:  # root writes through permission bits (the probe says so)
            assert write_problem(locked / "run") == f"{locked} is not writable (permission denied)"
        for errno, reason in ((13, "Permission denied"), (30, "Read-only file system")):

            def refuse(*args: Any, errno: int = errno, reason: str = reason, **kwargs: Any) -> Any:
                raise OSError(errno, reason)  # what the file system answers the probe

            monkeypatch.setattr("tempfile.mkstemp", refuse)
            assert write_problem(locked / "run") == f"{locked} is not writable ({reason.lower()})"
            monkeypatch.undo()
    finally:
        locked.chmod(0o755)
    assert list(locked.iterdir()) == [] and not (tmp_path / "new").exists()  # nothing left


def test_train_and_merge_name_the_place_they_cannot_write(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Both commands ask :func:`prefopt.paths.write_problem` before anything loads."""
    from prefopt.cli.main import main

    problem = "/ro is not writable (read-only file system)"
    monkeypatch.setattr("prefopt.paths.write_problem", lambda folder: problem)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(train_args(data_file, out))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {out}: cannot write the output folder: {problem}\n"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        main(["merge", str(adapter), "-o", str(tmp_path / "merged")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'merged'}: cannot write the merged model: {problem}\n"


def test_merge_below_a_file_is_refused_before_torch(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "org/model"}')
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    line = refused("merge", str(adapter), "-o", str(blocker / "merged"))
    assert line == (
        f"error: {blocker / 'merged'}: cannot write the merged model: {blocker} is a file, "
        "not a folder"
    )


def test_tensorboard_without_the_package_is_refused_before_torch(
    data_file: Path, tmp_path: Path
) -> None:
    from prefopt.extras import installed

    if installed("tensorboard") or installed("tensorboardX"):
        pytest.skip("tensorboard is installed here")
    out = tmp_path / "run"
    line = refused(*train_args(data_file, out, "--set", "training.report_to=tensorboard"))
    assert line == (
        "error: training.report_to: tensorboard needs the 'tensorboard' package: "
        "pip install tensorboard"
    )
    assert not out.exists()


WANDB_LOGIN_MESSAGE = (
    "error: training.report_to: wandb needs a login: run 'wandb login' or set WANDB_API_KEY "
    "(WANDB_MODE=offline logs to the run folder without one)"
)


def test_wandb_without_a_login_is_refused_before_torch(data_file: Path, tmp_path: Path) -> None:
    from prefopt.extras import installed

    if not installed("wandb"):
        pytest.skip("wandb is not installed")
    out = tmp_path / "run"
    netrc = tmp_path / "netrc"
    netrc.write_text("machine example.org login user password secret\n")
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": "", "WANDB_IDENTITY_TOKEN_FILE": ""}
    env["NETRC"] = str(netrc)  # a login for another host only
    args = train_args(data_file, out, "--set", "training.report_to=wandb")
    assert refused(*args, env=env) == WANDB_LOGIN_MESSAGE
    assert not out.exists()


def test_wandb_login_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefopt.errors import UsageError
    from prefopt.training.wandb_setup import check_report_to

    netrc = tmp_path / "netrc"
    netrc.write_text("machine example.org login user password secret\n")
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))  # no settings files
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    with pytest.raises(UsageError) as caught:
        check_report_to(["wandb"])
    assert f"error: {caught.value}" == WANDB_LOGIN_MESSAGE
    check_report_to("none")  # not asked for: nothing to check
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "settings").write_text("[default]\nmode = offline\n")  # wandb offline
    check_report_to(["wandb"])
    (tmp_path / "wandb" / "settings").unlink()
    for mode in ("offline", "disabled", "dryrun"):
        monkeypatch.setenv("WANDB_MODE", mode)
        check_report_to(["wandb"])
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    check_report_to(["wandb"])
    monkeypatch.delenv("WANDB_API_KEY")
    netrc.write_text("machine api.wandb.ai login user password " + "0" * 40 + "\n")
    check_report_to(["wandb"])
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a server of your own
    with pytest.raises(UsageError):
        check_report_to(["wandb"])


# -- the closing evaluation and summary ----------------------------------------------------
def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_closing_evaluation_goes_before_the_one_summary_line(tmp_path: Path) -> None:
    from prefopt.training.callbacks import MetricsJsonlCallback

    metrics = MetricsJsonlCallback(tmp_path)
    state = SimpleNamespace(is_world_process_zero=True, global_step=0)
    metrics.on_train_begin(None, state, None)
    for step, loss in ((1, 0.69), (2, 0.68)):
        state.global_step = step
        metrics.on_log(None, state, None, logs={"loss": loss})
    metrics.on_log(None, state, None, logs={"train_runtime": 1.5, "train_loss": 0.685})
    metrics.on_log(None, state, None, logs={"eval_loss": 0.7})  # evaluated after training
    metrics.add_to_summary({"precision": "fp32", "timing": {"total": 3.0}})
    assert records(tmp_path / "metrics.jsonl") == [
        {"step": 1, "loss": 0.69},
        {"step": 2, "loss": 0.68},
        {"step": 2, "eval_loss": 0.7},
        {
            "summary": {
                "global_step": 2,
                "train_runtime": 1.5,
                "train_loss": 0.685,
                "precision": "fp32",
                "timing": {"total": 3.0},
            }
        },
    ]


class FakeTrainer:
    def __init__(self, log_history: list[dict[str, Any]], step: int) -> None:
        self.state = SimpleNamespace(log_history=log_history, global_step=step)
        self.evaluations = 0

    def evaluate(self) -> dict[str, float]:
        self.evaluations += 1
        return {"eval_loss": 0.5}

    def save_model(self, folder: str) -> None:
        pass


def test_the_final_evaluation_runs_once(tmp_path: Path) -> None:
    """An evaluation the Trainer ran at the last step (``eval_strategy``) is the final one."""
    from prefopt.training.outputs import save_and_summarize

    evaluated = [{"loss": 0.7, "step": 2}, {"eval_loss": 0.6, "step": 2}, {"train_runtime": 1.0}]
    trainer = FakeTrainer(evaluated, step=2)
    final = save_and_summarize(trainer, tmp_path, evaluate=True)
    assert trainer.evaluations == 0
    assert final["eval_loss"] == 0.6 and final["loss"] == 0.7
    earlier = [{"eval_loss": 0.6, "step": 1}, {"loss": 0.7, "step": 2}]
    trainer = FakeTrainer(earlier, step=2)
    final = save_and_summarize(trainer, tmp_path, evaluate=True)
    assert trainer.evaluations == 1 and final["eval_loss"] == 0.5


# -- permissions of outputs renamed into place ---------------------------------------------
@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request: pytest.FixtureRequest) -> Any:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def assert_plain(path: Path, mask: int) -> None:
    """``path`` and everything under it have what a plain open()/mkdir() gives under ``mask``."""
    for item in [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]:
        mode = stat.S_IMODE(item.stat().st_mode)
        expected = (0o777 if item.is_dir() else 0o666) & ~mask
        assert mode == expected, f"{item}: {oct(mode)}, expected {oct(expected)}"


def test_data_and_eval_outputs_follow_the_umask(tmp_path: Path, umask: int) -> None:
    from typer.testing import CliRunner

    from prefopt.cli.data import app
    from prefopt.eval.offline import write_json
    from prefopt.testing import synthetic_pairs, write_pairs

    source = write_pairs(tmp_path / "pairs.jsonl", synthetic_pairs(8, with_h_flags=True))
    runner = CliRunner()
    for args in (
        ["flip", str(source)],
        ["split", str(source), "--eval-fraction", "0.5"],
        ["convert", str(source), "--from", "columns", "-o", str(tmp_path / "converted.jsonl")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    for name in ("pairs_flipped.jsonl", "pairs_train.jsonl", "pairs_eval.jsonl", "converted.jsonl"):
        assert_plain(tmp_path / name, umask)
    assert_plain(write_json(tmp_path / "eval_results.json", {"pref_accuracy": 1.0}, False), umask)


def test_caches_and_metrics_follow_the_umask(tmp_path: Path, umask: int) -> None:
    import numpy as np

    from prefopt.data.prep_cache import atomic_write_bytes
    from prefopt.training.callbacks import MetricsJsonlCallback
    from prefopt.training.reference_cache import ReferenceCache

    atomic_write_bytes(tmp_path / "prep" / "entry.npz", b"data")
    assert_plain(tmp_path / "prep" / "entry.npz", umask)
    assert_plain(ReferenceCache(tmp_path / "cache").save("k" * 64, np.zeros(4)), umask)
    metrics = MetricsJsonlCallback(tmp_path / "run")
    state = SimpleNamespace(is_world_process_zero=True, global_step=0)
    metrics.on_train_begin(None, state, None)
    metrics.on_log(None, state, None, logs={"train_runtime": 1.0})
    metrics.add_to_summary({"timing": {"total": 1.0}})  # rewrites the file, renamed into place
    assert_plain(tmp_path / "run" / "metrics.jsonl", umask)


def test_checkpoints_and_saved_models_follow_the_umask(tmp_path: Path, umask: int) -> None:
    import torch
    from safetensors.torch import save_file

    from prefopt.training.checkpoints import publish_checkpoint, staging_folder
    from prefopt.training.outputs import save_and_summarize

    run = tmp_path / "run"
    staged = staging_folder(run, 3) / "checkpoint-3"
    staged.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(staged / "model.safetensors"))  # safetensors: 0600
    (staged / "trainer_state.json").write_text("{}")
    assert_plain(publish_checkpoint(staging_folder(run, 3), run), umask)

    class Saving(FakeTrainer):
        def save_model(self, folder: str) -> None:
            save_file({"w": torch.zeros(2)}, str(Path(folder) / "adapter_model.safetensors"))

    save_and_summarize(Saving([], step=0), run, evaluate=False)
    assert_plain(run / "adapter_model.safetensors", umask)


@pytest.fixture(scope="module")
def adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter of the tiny model, as PEFT saves it (no training needed to merge it)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    peft_model.save_pretrained(folder)
    return folder


def test_a_merged_model_follows_the_umask(adapter: Path, tmp_path: Path, umask: int) -> None:
    from typer.testing import CliRunner

    from prefopt.cli.main import app

    out = tmp_path / "merged"
    result = CliRunner().invoke(app, ["-q", "merge", str(adapter), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file()
    assert_plain(out, umask)


# -- data sources answered first ------------------------------------------------------------
def test_a_missing_training_file_is_refused_before_torch(data_file: Path, tmp_path: Path) -> None:
    """It took ~9 s to report, after torch and the tokenizer had loaded; `data` says it at once."""
    missing = tmp_path / "typo.jsonl"
    line = refused(*train_args(missing, tmp_path / "run"))
    assert line == f"error: no such file: {missing}"
    line = refused(*train_args(data_file, tmp_path / "run2", "--eval-file", str(missing)))
    assert line == f"error: no such file: {missing}"


def test_eval_names_the_missing_data_before_the_existing_results(tmp_path: Path) -> None:
    results = tmp_path / "eval_results.json"
    results.write_text("{}\n")
    missing = tmp_path / "typo.jsonl"
    line = refused("eval", "no-such/model", "--data", str(missing), "--results", str(results))
    assert line == f"error: no such file: {missing}"
