"""The progress line notices a throughput collapse (e.g. another process took the CPUs)."""

from __future__ import annotations

from prefopt.training import throughput
from prefopt.training.throughput import ThroughputWatch


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_steady_throughput_says_nothing_and_a_collapse_is_named(monkeypatch) -> None:
    clock = Clock()
    watch = ThroughputWatch(window=3, threshold=0.5, clock=clock)
    for step in range(1, 8):  # one step a second
        clock.now += 1.0
        watch.step(step)
        assert watch.note() == ""
    assert watch.best == 1.0
    monkeypatch.setattr(throughput, "current_load", lambda: 3.9)
    monkeypatch.setattr(throughput, "available_cpus", lambda: 2)
    for step in range(8, 11):  # now four seconds a step
        clock.now += 4.0
        watch.step(step)
    assert watch.recent() == 0.25
    assert watch.note() == "slowed to 0.2× of its best (load 3.9 on 2 CPUs)"
    monkeypatch.setattr(throughput, "current_load", lambda: 0.5)
    assert watch.note() == "slowed to 0.2× of its best"  # slow, but not for a busy machine


def test_warmup_steps_do_not_set_the_best() -> None:
    clock = Clock()
    watch = ThroughputWatch(window=3, clock=clock)
    clock.now = 0.1
    watch.step(1)
    clock.now = 0.2
    watch.step(2)  # a fast first pair of steps, before the window is full
    assert watch.best == 0.0 and watch.note() == ""
