"""torch's CPU threads are picked on purpose: ``--threads``/``PREFOPT_THREADS`` when given, else
the available CPUs minus the busy ones (the load average, or the tasks runnable now when fewer;
at least 1), so a busy machine is not oversubscribed."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefopt.errors import UsageError
from prefopt.modeling import threads


@pytest.fixture(autouse=True)
def _no_thread_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PREFOPT_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("cpus", "load", "expected"),
    [
        (2, 1.0, 1),  # one other busy process on 2 cores: 1 thread, not 2 fighting it
        (2, 0.9, 1),
        (2, 0.2, 2),  # an idle machine: every core
        (2, 5.0, 1),  # overloaded: still at least one
        (16, 3.4, 13),
        (1, 0.0, 1),
    ],
)
def test_default_is_free_cpus(cpus: int, load: float, expected: int) -> None:
    assert threads.choose_threads(cpus=cpus, load=load) == expected


def test_default_reads_affinity_and_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.2, 0.0, 0.0))
    monkeypatch.setattr(threads, "others_running", lambda: 3)
    assert threads.choose_threads() == 2
    # The load average still counts a job that ended seconds ago; nothing else runs now.
    monkeypatch.setattr(threads, "others_running", lambda: 0)
    assert threads.choose_threads() == 4
    monkeypatch.setattr(threads, "others_running", lambda: None)  # no /proc/loadavg
    assert threads.choose_threads() == 2


@pytest.mark.parametrize(
    ("cpus", "load", "running", "expected"),
    [
        (2, 0.7, 0, 2),  # the load of a job that just ended: both cores are free now
        (2, 1.0, 1, 1),  # a busy process that still runs
        (2, 0.2, 1, 2),  # a process that only started: the load average has not seen it
        (2, 2.0, 5, 1),
    ],
)
def test_busy_cores_are_those_both_measures_agree_on(
    cpus: int, load: float, running: int, expected: int
) -> None:
    assert threads.choose_threads(cpus=cpus, load=load, running=running) == expected


def test_others_running_reads_the_runnable_count(tmp_path: Path) -> None:
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("0.71 1.09 1.56 3/81 8743\n")
    assert threads.others_running(loadavg) == 2  # the reading task itself is one of the 3
    loadavg.write_text("garbage\n")
    assert threads.others_running(loadavg) is None
    assert threads.others_running(tmp_path / "missing") is None


def test_explicit_values_win(monkeypatch: pytest.MonkeyPatch) -> None:
    assert threads.choose_threads(3, cpus=2, load=2.0) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.choose_threads(cpus=8, load=0.0) == 2  # torch's own variable is honoured
    monkeypatch.setenv("PREFOPT_THREADS", "5")
    assert threads.choose_threads(cpus=2, load=2.0) == 5  # and PREFOPT_THREADS over it
    monkeypatch.setenv("PREFOPT_THREADS", "zero")
    with pytest.raises(UsageError, match="PREFOPT_THREADS"):
        threads.choose_threads()


def test_apply_sets_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("PREFOPT_THREADS", "1")
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    try:
        assert threads.apply_threads() == 1
        assert torch.get_num_threads() == 1
        assert threads.os.environ["TOKENIZERS_PARALLELISM"] == "false"
        assert threads.os.environ["RAYON_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


def test_global_threads_option_sets_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from prefopt.cli.main import _command_words, app

    result = CliRunner().invoke(app, ["--threads", "3", "plugins", "list"])
    assert result.exit_code == 0, result.output
    assert threads.os.environ["PREFOPT_THREADS"] == "3"
    # the option's value is no command word: `prefopt --threads 3 train dpo` still finds train
    assert _command_words(["--threads", "3", "train", "dpo", "--beta", "0.1"])[:2] == [
        "train",
        "dpo",
    ]
    assert CliRunner().invoke(app, ["--threads", "0", "plugins", "list"]).exit_code == 2
