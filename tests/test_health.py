"""Health checks: every rule on a synthetic metrics trajectory where it fires and one where it
does not; the monitor's once-only findings, switch and replay; the events in metrics.jsonl."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from prefopt.config import HealthConfig
from prefopt.training.health import (
    RULES,
    Finding,
    HealthMonitor,
    length_correlation,
)

DEFAULTS = HealthConfig()


def run(
    train: list[dict[str, Any]],
    evaluation: tuple[tuple[int, dict[str, Any]], ...] = (),
    max_steps: int = 100,
    every: int = 10,
    config: HealthConfig = DEFAULTS,
) -> list[Finding]:
    """Feed ``train`` as logged steps every ``every`` steps (evaluations after their step)."""
    monitor = HealthMonitor(config, max_steps)
    found: list[Finding] = []
    evals = dict(evaluation)
    for index, logs in enumerate(train):
        step = (index + 1) * every
        found += monitor.observe(step, logs)
        if step in evals:
            found += monitor.observe(step, evals[step])
    return found


def rules(found: list[Finding]) -> list[str]:
    return [finding.rule for finding in found]


def steps(**series: list[float]) -> list[dict[str, Any]]:
    """Logged steps from parallel series (``loss`` defaults to a slowly falling one)."""
    count = len(next(iter(series.values())))
    logs = [{"loss": 0.69 - 0.01 * index} for index in range(count)]
    for key, values in series.items():
        name = key.replace("__", "/")
        for log, value in zip(logs, values, strict=True):
            log[name] = value
    return logs


# -- likelihood displacement ---------------------------------------------------------------
def test_displacement_fires_when_chosen_falls_below_reference_while_margin_rises() -> None:
    found = run(
        steps(
            rewards__margins=[0.05, 0.3, 0.8, 1.5],
            logps__chosen_shift_per_token=[0.0, -0.1, -0.2, -0.6],
            logps__chosen=[-18.0, -20.0, -30.0, -56.3],
            logps__ref_chosen=[-17.9, -17.9, -17.9, -17.9],
        )
    )
    assert rules(found) == ["likelihood-displacement"]
    assert found[0].step == 40
    assert "0.60 nats per token" in found[0].message
    assert "-56.3" in found[0].message and "-17.9" in found[0].message
    assert "--rpo-alpha" in found[0].advice


@pytest.mark.parametrize(
    ("margins", "shifts"),
    [
        ([0.05, 0.3, 0.8, 1.5], [0.0, 0.1, 0.05, -0.2]),  # chosen fell, but not far: healthy
        ([0.05, 0.04, 0.02, 0.01], [0.0, -0.3, -0.5, -0.6]),  # margin did not rise
    ],
)
def test_displacement_stays_quiet(margins: list[float], shifts: list[float]) -> None:
    found = run(steps(rewards__margins=margins, logps__chosen_shift_per_token=shifts))
    assert "likelihood-displacement" not in rules(found)


def test_displacement_on_the_eval_pairs_fires_at_the_evaluation() -> None:
    """Training pairs' chosen answers gain likelihood while held-out correct answers lose it
    (the measured case: −17.9 to −56.3 nats on 30 held-out questions)."""
    evaluations = tuple(
        (step, {"eval_loss": 0.5, "eval_rewards/margins": margin,
                "eval_logps/chosen_shift_per_token": shift, "eval_logps/chosen": chosen,
                "eval_logps/ref_chosen": -17.9})
        for step, margin, shift, chosen in ((10, 0.1, -0.05, -19.0), (30, 0.9, -2.1, -56.3))
    )  # fmt: skip
    train = steps(rewards__margins=[0.1, 0.5, 1.0], logps__chosen_shift_per_token=[0.1, 0.2, 0.3])
    found = run(train, evaluation=evaluations)
    assert rules(found) == ["likelihood-displacement"]
    assert found[0].step == 30 and "on the eval data fell 2.10 nats per token" in found[0].message
    assert "-56.3 nats on average, -17.9 under the reference" in found[0].message


def test_displacement_at_the_closing_evaluation_alone() -> None:
    """No evaluation during training, one at the end: measured against step 0 (margin 0)."""
    closing = {"eval_loss": 0.4, "eval_rewards/margins": 1.5,
               "eval_logps/chosen_shift_per_token": -0.9}  # fmt: skip
    found = run(steps(rewards__margins=[0.1, 0.4]), evaluation=((20, closing),))
    assert rules(found) == ["likelihood-displacement"] and found[0].step == 20


def test_displacement_threshold_comes_from_the_config() -> None:
    trajectory = steps(rewards__margins=[0.1, 0.5], logps__chosen_shift_per_token=[0.0, -0.2])
    assert rules(run(trajectory)) == []
    lenient = dataclasses.replace(DEFAULTS, displacement_nats_per_token=0.1)
    assert rules(run(trajectory, config=lenient)) == ["likelihood-displacement"]


# -- accuracy pinned at 1.0 early ----------------------------------------------------------
def test_accuracy_pinned_early_with_growing_margins_fires() -> None:
    found = run(
        steps(rewards__accuracies=[0.7, 1.0, 1.0, 1.0], rewards__margins=[0.2, 2.0, 4.0, 7.0]),
        max_steps=200,
    )
    assert rules(found) == ["accuracy-pinned"]
    assert found[0].step == 40
    assert "since step 20 of 200" in found[0].message


@pytest.mark.parametrize(
    ("accuracies", "margins", "max_steps"),
    [
        ([0.7, 1.0, 0.9, 1.0], [0.2, 2.0, 4.0, 7.0], 200),  # not pinned: a step below 1
        ([0.7, 1.0, 1.0, 1.0], [0.2, 2.0, 2.0, 1.9], 200),  # margins stopped growing
        ([0.7, 0.8, 0.9, 1.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 70),  # reached late
    ],
)
def test_accuracy_pinned_stays_quiet(
    accuracies: list[float], margins: list[float], max_steps: int
) -> None:
    found = run(
        steps(rewards__accuracies=accuracies, rewards__margins=margins), max_steps=max_steps
    )
    assert "accuracy-pinned" not in rules(found)


# -- a loss that stays at ln 2 -------------------------------------------------------------
def test_flat_loss_at_ln2_fires_after_the_configured_steps() -> None:
    logs = [{"loss": math.log(2) + 1e-5 * (-1) ** i, "rewards/margins": 1e-4} for i in range(3)]
    found = run(logs, every=10)
    assert rules(found) == ["flat-loss"]
    assert found[0].step == 20  # flat_loss_steps (20) reached at the second log
    assert "ln 2" in found[0].message and "nothing is training" in found[0].message


def test_flat_loss_stays_quiet_when_the_loss_moves_or_too_early() -> None:
    moving = [{"loss": math.log(2) - 0.01 * i, "rewards/margins": 0.05 * i} for i in range(5)]
    assert "flat-loss" not in rules(run(moving))
    early = [{"loss": math.log(2), "rewards/margins": 0.0} for _ in range(3)]
    assert "flat-loss" not in rules(run(early, every=5))  # 15 steps < 20
    once = [{"loss": math.log(2), "rewards/margins": 0.0}]
    assert "flat-loss" not in rules(run(once, every=25))  # one value has not stayed anywhere
    sft = [{"loss": 1.83}, {"loss": 1.8305}, {"loss": 1.8301}]  # no margins: not a DPO loss
    assert "flat-loss" not in rules(run(sft))


# -- length exploitation -------------------------------------------------------------------
def test_length_exploitation_fires_on_two_high_correlations() -> None:
    found = run(
        steps(rewards__length_correlation=[0.2, 0.7, 0.8], rewards__margins=[0.1, 0.5, 0.9])
    )
    assert rules(found) == ["length-exploitation"]
    assert found[0].step == 30 and "0.80" in found[0].message
    assert "simpo" in found[0].advice


def test_length_exploitation_stays_quiet() -> None:
    once = steps(rewards__length_correlation=[0.2, 0.9, 0.3], rewards__margins=[0.1, 0.5, 0.9])
    assert "length-exploitation" not in rules(run(once))
    low = steps(rewards__length_correlation=[0.3, 0.4, 0.5], rewards__margins=[0.1, 0.5, 0.9])
    assert "length-exploitation" not in rules(run(low))


def test_length_correlation_is_pearson() -> None:
    margins = [0.0, 1.0, 2.0, 4.0]
    gaps = [1.0, 2.0, 3.0, 4.0]
    mean_m, mean_g = sum(margins) / 4, sum(gaps) / 4
    covariance = sum((m - mean_m) * (g - mean_g) for m, g in zip(margins, gaps, strict=True))
    spread_m = math.sqrt(sum((m - mean_m) ** 2 for m in margins))
    spread_g = math.sqrt(sum((g - mean_g) ** 2 for g in gaps))
    assert length_correlation(margins, gaps) == pytest.approx(covariance / (spread_m * spread_g))
    assert length_correlation([0.0, 0.0, 0.0], [1.0, 2.0, 3.0]) is None  # margins all 0


# -- adaptive β at its clamp ---------------------------------------------------------------
def test_beta_clamped_fires_after_the_configured_steps() -> None:
    found = run(steps(beta_at_clamp=[0.0, 1.0, 1.0, 1.0], beta=[0.1, 0.001, 0.001, 0.001]))
    assert rules(found) == ["beta-clamped"]
    assert found[0].step == 30  # clamped over steps 11-30: the 20 configured
    assert "β = 0.001" in found[0].message


def test_beta_clamped_stays_quiet_when_beta_leaves_the_clamp() -> None:
    found = run(steps(beta_at_clamp=[1.0, 0.5, 1.0, 0.0, 1.0]))
    assert "beta-clamped" not in rules(found)


# -- gradient norm spikes ------------------------------------------------------------------
def test_grad_norm_spike_fires_against_the_median() -> None:
    found = run(steps(grad_norm=[1.0, 1.2, 0.9, 1.1, 1.0, 1.05, 25.0, 1.0]))
    assert rules(found) == ["grad-norm-spike"]
    assert found[0].step == 70
    assert "25" in found[0].message and "24 times" in found[0].message


def test_grad_norm_spike_stays_quiet() -> None:
    steady = steps(grad_norm=[1.0, 1.2, 0.9, 1.1, 1.0, 1.05, 8.0, 1.0])  # 8x < 10x
    assert "grad-norm-spike" not in rules(run(steady))
    early = steps(grad_norm=[1.0, 50.0])  # no history to judge against yet
    assert "grad-norm-spike" not in rules(run(early))


# -- train far above eval ------------------------------------------------------------------
def test_train_eval_gap_fires_at_the_evaluation() -> None:
    found = run(
        steps(rewards__accuracies=[0.6, 0.8, 0.9, 1.0]),
        evaluation=(
            (20, {"eval_loss": 0.7, "eval_rewards/accuracies": 0.5}),  # 0.70 against 0.5
            (40, {"eval_loss": 0.7, "eval_rewards/accuracies": 0.55}),  # 0.95 against 0.55
        ),
        max_steps=1000,
    )
    assert rules(found) == ["train-eval-gap"]
    assert found[0].step == 40 and "0.95 (the steps before this evaluation) against 0.55" in (
        found[0].message
    )


def test_train_eval_gap_is_judged_at_the_evaluation_only() -> None:
    """A later, luckier training batch does not make an old evaluation look worse."""
    found = run(
        steps(rewards__accuracies=[0.6, 0.7, 1.0, 1.0]),
        evaluation=((20, {"eval_loss": 0.7, "eval_rewards/accuracies": 0.55}),),
        max_steps=1000,
    )
    assert "train-eval-gap" not in rules(found)


def test_train_eval_gap_stays_quiet_when_close() -> None:
    found = run(
        steps(rewards__accuracies=[0.6, 0.8, 0.85]),
        evaluation=((30, {"eval_loss": 0.7, "eval_rewards/accuracies": 0.7}),),
        max_steps=1000,
    )
    assert found == []


def test_the_length_window_survives_a_checkpoint() -> None:
    import torch

    from prefopt.training.step_metrics import LengthWatch

    watch = LengthWatch()
    watch.add(torch.tensor([0.5, -0.25, 1.0] * 20), torch.tensor([3.0, -1.0, 5.0] * 20))
    restored = LengthWatch()
    restored.load_state_dict(json.loads(json.dumps(watch.state_dict())))
    assert restored.correlation() == watch.correlation() is not None
    assert list(restored.margins) == list(watch.margins)


def test_pairs_per_second_leaves_out_what_follows_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clock restarts at the next training batch: an evaluation or a checkpoint after a
    logged step is not counted as training. Pairs are counted as the batches give them (a list
    of four gives six under lists.pairs=all)."""
    from prefopt.training import step_metrics

    now = [0.0]
    monkeypatch.setattr(step_metrics.time, "perf_counter", lambda: now[0])
    rate = step_metrics.PairsPerSecond()
    assert rate.rate() is None  # no batch yet
    rate.start()
    for pairs in (8, 8, 6, 10):
        rate.start()  # later batches keep the mark
        rate.add(pairs)
    now[0] = 2.0
    assert rate.rate() == pytest.approx(32 / 2.0)
    now[0] = 12.0  # ten seconds of evaluation and saving
    rate.start()
    rate.add(12)
    now[0] = 14.0
    assert rate.rate() == pytest.approx(12 / 2.0)


# -- the monitor -------------------------------------------------------------------------
def test_a_finding_is_reported_once() -> None:
    monitor = HealthMonitor(DEFAULTS, 1000)
    reported = []
    for step in range(10, 200, 10):
        reported += monitor.observe(step, {"loss": math.log(2), "rewards/margins": 0.0})
    assert rules(reported) == ["flat-loss"]
    assert monitor.findings == reported


def test_disabled_checks_find_nothing() -> None:
    off = dataclasses.replace(DEFAULTS, enabled=False)
    logs = [{"loss": math.log(2), "rewards/margins": 0.0}] * 5
    assert run(logs, config=off) == []


def test_replay_restores_history_and_findings() -> None:
    flat = Finding("flat-loss", 20, "the loss has stayed", "check")
    records = [
        {"step": 10, "loss": 0.5, "rewards/accuracies": 1.0, "rewards/margins": 1.0},
        {"step": 20, "loss": 0.4, "rewards/accuracies": 1.0, "rewards/margins": 2.0},
        flat.event(),
    ]
    monitor = HealthMonitor(DEFAULTS, 200)
    monitor.replay(records)
    assert monitor.findings == [flat]
    new = monitor.observe(30, {"loss": 0.3, "rewards/accuracies": 1.0, "rewards/margins": 3.0})
    assert rules(new) == ["accuracy-pinned"]  # the streak began before the resume
    assert "since step 10" in new[0].message


def test_every_rule_is_documented() -> None:
    guide = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    for name in RULES:
        assert f"`{name}`" in guide, name
    for field in dataclasses.fields(HealthConfig):
        assert f"`{field.name}`" in guide, field.name


def test_events_go_to_metrics_jsonl_before_the_summary(tmp_path: Path) -> None:
    from prefopt.training.callbacks import MetricsJsonlCallback

    metrics = MetricsJsonlCallback(tmp_path)
    metrics.path.write_text(
        json.dumps({"step": 10, "loss": 0.6}) + "\n" + json.dumps({"summary": {"a": 1}}) + "\n"
    )
    metrics._summary_written = True
    finding = Finding("train-eval-gap", 10, "m", "a")
    metrics.write_event(finding.event())
    lines = [json.loads(line) for line in metrics.path.read_text().splitlines()]
    assert lines[1] == {
        "step": 10, "event": "health", "rule": "train-eval-gap", "message": "m", "advice": "a",
    }  # fmt: skip
    assert "summary" in lines[-1]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("health.flat_loss_steps", 0, "health.flat_loss_steps: expected a positive integer"),
        ("health.grad_spike_factor", 1.0, "health.grad_spike_factor: expected a factor above 1"),
        ("health.length_correlation", 1.5, "health.length_correlation: expected a correlation"),
        ("health.eval_accuracy_gap", -0.1, "health.eval_accuracy_gap: expected a positive"),
    ],
)
def test_bad_thresholds_are_refused(key: str, value: Any, message: str, tmp_path: Path) -> None:
    from prefopt.testing.cli_runner import run_cli_in_process

    code, _, stderr = run_cli_in_process(
        "train", "dpo", "--model", "nowhere", "--train-file", "nothing.jsonl",
        "--output-dir", str(tmp_path / "out"), "--set", f"{key}={value}",
    )  # fmt: skip
    assert code == 2
    assert message in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


# -- end to end ----------------------------------------------------------------------------
DISPLACING = [
    "--max-steps", "40", "--set", "lora=null", "--set", "training.learning_rate=1e-2",
    "--set", "training.logging_steps=4", "--set", "training.per_device_train_batch_size=8",
    "--set", "training.bf16=false",
]  # fmt: skip


def test_a_displacing_run_names_the_finding(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    """Full fine-tuning of the tiny model at a learning rate far too high: both answers lose
    likelihood, the chosen one too, while the margin grows."""
    from prefopt.testing.cli_runner import run_cli_in_process

    out = tmp_path / "out"
    code, stdout, stderr = run_cli_in_process(
        "train", "dpo", "--model", str(tiny_model), "--train-file", str(pairs_file),
        "--output-dir", str(out), *DISPLACING,
    )  # fmt: skip
    assert code == 0, stderr
    assert stderr.count("health: step") == 1  # printed once, when it first held
    assert "likelihood-displacement" in stderr
    assert "health: 1 finding" in stdout  # the closing summary
    assert "likelihood displacement (step" in stdout and "advice: Add an NLL term" in stdout
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    events = [line for line in lines if line.get("event") == "health"]
    assert [event["rule"] for event in events] == ["likelihood-displacement"]
    step = events[0]["step"]
    logged = next(line for line in lines if line.get("step") == step and "loss" in line)
    assert logged["logps/chosen_shift_per_token"] <= -0.25
    assert logged["logps/chosen"] < logged["logps/ref_chosen"]
    assert lines.index(logged) < lines.index(events[0])
    assert lines[-1]["summary"]["health"] == events


def test_switched_off_checks_stay_silent(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    from prefopt.testing.cli_runner import run_cli_in_process

    out = tmp_path / "out"
    code, stdout, stderr = run_cli_in_process(
        "train", "dpo", "--model", str(tiny_model), "--train-file", str(pairs_file),
        "--output-dir", str(out), *DISPLACING, "--set", "health.enabled=false",
    )  # fmt: skip
    assert code == 0, stderr
    assert "health" not in stdout and "health:" not in stderr
    assert '"event"' not in (out / "metrics.jsonl").read_text()
