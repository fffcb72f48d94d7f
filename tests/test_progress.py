"""Progress: plain lines (step, loss, pairs/s, ETA) when the output is no terminal, a rich bar
on one, a counted line for tokenization, nothing under --quiet or on ranks other than 0."""

from __future__ import annotations

import io
import re
from pathlib import Path
from types import SimpleNamespace

import pytest


def console(terminal: bool) -> object:
    from rich.console import Console

    return Console(file=io.StringIO(), force_terminal=terminal, width=120, color_system=None)


def state(step: int, max_steps: int = 4) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, max_steps=max_steps, is_world_process_zero=True)


def test_plain_lines_name_step_loss_rate_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefopt.training import callbacks

    clock = iter([100.0, 102.0, 104.0])  # train begins, then 2 s per step
    monkeypatch.setattr(callbacks, "clock", lambda: next(clock))
    out = console(terminal=False)
    display = callbacks.ProgressDisplay(pairs_per_step=8, console=out)
    assert display.live is False
    display.on_train_begin(None, state(0), None)
    display.on_log(None, state(1), None, logs={"loss": 0.6931, "learning_rate": 5e-5})
    display.on_log(None, state(2), None, logs={"loss": 0.5, "rewards/accuracies": 0.75})
    display.on_log(None, state(2), None, logs={"eval_loss": 0.61})
    lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    # step 1 after 2 s: 4 pairs/s, 3 steps left at 2 s each; step 2 after 4 s: 2 steps left
    assert lines == [
        "step 1/4  loss=0.6931  learning_rate=5e-05  pairs/s=4.0  eta=0:06",
        "step 2/4  loss=0.5  rewards/accuracies=0.75  pairs/s=4.0  eta=0:04",
        "step 2/4  eval_loss=0.61",
    ]


def test_lists_and_conversations_name_their_own_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefopt.training import callbacks

    clock = iter([100.0, 102.0])
    monkeypatch.setattr(callbacks, "clock", lambda: next(clock))
    out = console(terminal=False)
    display = callbacks.ProgressDisplay(pairs_per_step=4, console=out, unit="lists")
    display.on_train_begin(None, state(0), None)
    display.on_log(None, state(1), None, logs={"loss": 0.6931})
    lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert lines == ["step 1/4  loss=0.6931  lists/s=2.0  eta=0:06"]


def test_live_bar_on_a_terminal_and_closed_on_errors() -> None:
    from prefopt.training.callbacks import ProgressDisplay

    out = console(terminal=True)
    display = ProgressDisplay(pairs_per_step=8, console=out)
    assert display.live is True
    display.on_train_begin(None, state(0), None)
    display.on_log(None, state(1), None, logs={"loss": 0.6931})
    display.on_step_end(None, state(1), None)
    display.on_prediction_step(None, state(1), None, eval_dataloader=[1, 2, 3])
    display.on_evaluate(None, state(1), None)
    display.close()  # what run.py does when training raises
    display.close()  # idempotent
    text = out.file.getvalue()  # type: ignore[attr-defined]
    assert "train" in text and "1/4 steps" in text and "loss 0.6931" in text


def test_task_progress_counts_consumed_items(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefopt.training.callbacks import TaskProgress

    out = console(terminal=False)
    with TaskProgress("tokenize data[1].jsonl (train)", console=out) as progress:
        rows = progress.counting([("a", 1), ("b", 2), ("c", 3)])
        assert isinstance(rows, list) and len(rows) == 3
        assert [key for key, _ in rows] == ["a", "b", "c"]
    line = out.file.getvalue()  # type: ignore[attr-defined]
    assert re.fullmatch(r"tokenize data\[1\]\.jsonl \(train\): 3 pairs in \d+\.\d s\n", line)

    silent = console(terminal=False)
    with TaskProgress("tokenize", console=silent, enabled=False) as progress:
        list(progress.counting([1, 2]))
    monkeypatch.setenv("RANK", "1")
    with TaskProgress("tokenize", console=silent) as progress:
        list(progress.counting([1, 2]))
    assert silent.file.getvalue() == ""  # type: ignore[attr-defined]


def test_run_progress_lines_when_not_a_terminal(
    tiny_model: Path, pairs_file: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from prefopt.cli.common import quiet_libraries
    from prefopt.config_layers import resolve_run_config
    from prefopt.registry import get_algorithm
    from prefopt.training.run import train

    spec = get_algorithm("dpo")
    flags = {
        "model.name_or_path": str(tiny_model),
        "data.train": str(pairs_file),
        "data.eval": str(pairs_file),
        "training.output_dir": str(tmp_path / "out"),
        "training.max_steps": 2,
    }
    sets = [
        "training.per_device_train_batch_size=8",
        "training.logging_steps=1",
        "data.layout=padded",
        "data.prep_cache=false",
        "model.precision=fp32",
    ]
    quiet_libraries()
    train(resolve_run_config(spec, None, flags, sets), spec, quiet=False)
    stderr = capfd.readouterr().err
    lines = stderr.splitlines()
    # a local file has no split to name (it said "(train)" and "(test)" before)
    pattern = rf"tokenize {re.escape(str(pairs_file))}: 64 pairs in \d+\.\d s$"
    assert sum(bool(re.match(pattern, line)) for line in lines) == 2, lines
    steps = [x for x in lines if x.startswith("step ") and "eval" not in x]
    assert len(steps) == 2
    assert re.match(r"step 1/2  loss=0\.693\d*  .*pairs/s=\d+\.\d  eta=\d+:\d\d$", steps[0])
    assert any(x.startswith("step 2/2  eval_loss=") for x in lines)
    assert "\x1b[" not in stderr  # no terminal control codes in a pipe

    train(
        resolve_run_config(spec, None, {**flags, "training.output_dir": str(tmp_path / "q")}, sets),
        spec,
        quiet=True,
    )
    quiet_err = capfd.readouterr().err
    assert "step 1/2" not in quiet_err and "tokenize" not in quiet_err


def test_live_bar_ends_on_the_last_logged_loss() -> None:
    """The Trainer calls on_step_end before it logs that step: the bar must still end on the
    final step's loss (it ended on the one logged before, 0.6064 against the summary's 0.5909)."""
    from prefopt.training.callbacks import ProgressDisplay

    out = console(terminal=True)
    display = ProgressDisplay(pairs_per_step=8, console=out)
    display.on_train_begin(None, state(0, max_steps=2), None)
    for step, loss in ((1, 0.6064), (2, 0.5909)):
        display.on_step_end(None, state(step, max_steps=2), None)
        display.on_log(None, state(step, max_steps=2), None, logs={"loss": loss})
    display.on_train_end(None, state(2, max_steps=2), None)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    frames = [f for f in re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)) if f]
    final = [frame for frame in frames if "steps" in frame][-1]  # the bar as it was left
    assert "2/2 steps" in final and "loss 0.5909" in final, final
