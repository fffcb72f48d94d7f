"""`prefopt sweep`: planning (job names, folders, run names, layered configs, errors), the
dry run, a real 2 models × 2 deltas sweep, skipping finished jobs, --index and a failing job."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from prefopt.errors import ConfigError, UsageError
from prefopt.testing import synthetic_pairs, write_pairs
from prefopt.training.sweep import DONE_FILE, job_finished, load_sweep


def _write(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def _sweep(tmp_path: Path, **overrides) -> dict:
    content = {
        "algorithm": "factual",
        "output_root": str(tmp_path / "runs"),
        "models": [{"id": "org/Alpha-1B", "short": "alpha"}, {"id": "org/Beta-2B"}],
        "deltas": [0, 2.5],
        "base": {
            "data": {"train": "pairs.jsonl", "eval": None},
            "training": {"max_steps": 2, "learning_rate": 1e-6},
            "algorithm": {"beta": 0.2},
        },
    }
    content.update(overrides)
    return content


def test_plan_expands_models_times_deltas(tmp_path: Path) -> None:
    plan = load_sweep(_write(tmp_path / "sweep.yaml", _sweep(tmp_path)))
    assert plan.spec.name == "factual"
    names = [job.name for job in plan.jobs]
    assert names == ["alpha_delta0", "alpha_delta2.5", "Beta-2B_delta0", "Beta-2B_delta2.5"]
    root = tmp_path / "runs"
    assert [job.output_dir for job in plan.jobs] == [root / name for name in names]
    assert [job.run_name for job in plan.jobs] == [
        "FactualDPO_alpha_delta0",
        "FactualDPO_alpha_delta2.5",
        "FactualDPO_Beta-2B_delta0",
        "FactualDPO_Beta-2B_delta2.5",
    ]
    job = plan.jobs[1]
    assert job.config.model.name_or_path == "org/Alpha-1B"
    assert job.config.algorithm.delta == 2.5 and job.config.algorithm.beta == 0.2
    assert job.config.training["max_steps"] == 2
    assert job.config.training["learning_rate"] == 1e-6
    assert job.config.data.train == "pairs.jsonl" and job.config.data.eval is None
    assert job.values == {"algorithm.delta": 2.5}


def test_grid_axes_base_file_and_null_sections(tmp_path: Path) -> None:
    base = _write(tmp_path / "base.yaml", {"lora": None, "training": {"max_steps": 3}})
    content = _sweep(
        tmp_path,
        models=["org/Gamma"],
        deltas=[10],
        grid={"beta": [0.1, 0.3], "training.learning_rate": [1e-5]},
        base=str(base),
    )
    plan = load_sweep(_write(tmp_path / "sweep.yaml", content))
    assert [job.name for job in plan.jobs] == [
        "Gamma_delta10_beta0.1_learning_rate1e-05",
        "Gamma_delta10_beta0.3_learning_rate1e-05",
    ]
    assert plan.jobs[1].run_name == "FactualDPO_Gamma_delta10_beta0.3_learning_rate1e-05"
    config = plan.jobs[1].config
    assert config.lora is None and config.training["max_steps"] == 3
    assert config.algorithm.beta == 0.3 and config.training["learning_rate"] == 1e-5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"models": []}, "models: expected a non-empty list"),
        ({"models": [{"short": "x"}]}, "models[0]: id: expected"),
        ({"models": [{"id": "a/x", "short": "s"}, {"id": "b/y", "short": "s"}]},
         "are both named 's_delta0'"),
        ({"models": [{"id": "a/x", "short": "no/slash"}]}, "short: 'no/slash' must use"),
        ({"grid": {"gamma": [1]}}, "grid.gamma: algorithm 'factual' has no parameter 'gamma'"),
        ({"deltas": 5}, "deltas: expected a non-empty list"),
        ({"deltas": [-1]}, "job 0 (alpha_delta-1): algorithm 'factual': delta must be >= 0"),
        ({"base": {"training": {"learning_rat": 1}}},
         "unknown config key 'training.learning_rat' in "),
        ({"sweeps": 1}, "unknown sweep key 'sweeps'"),
        ({"algorithm": "factul"}, "unknown algorithm 'factul'. Did you mean 'factual'?"),
    ],
)  # fmt: skip
def test_plan_errors_name_the_file_and_the_problem(
    tmp_path: Path, overrides: dict, message: str
) -> None:
    path = _write(tmp_path / "sweep.yaml", _sweep(tmp_path, **overrides))
    with pytest.raises(UsageError) as info:
        load_sweep(path)
    assert message in str(info.value)
    if isinstance(info.value, ConfigError) and "algorithm" not in overrides:
        assert str(path) in str(info.value)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from prefopt.cli.main import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dry_run_prints_the_jobs_and_trains_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # one table row per line
    path = _write(tmp_path / "sweep.yaml", _sweep(tmp_path))
    code, out, err = _cli(capsys, "sweep", str(path), "--dry-run")
    assert code == 0, err
    for name in ("alpha_delta0", "Beta-2B_delta2.5", "FactualDPO_<job>", "pending"):
        assert name in out
    assert not (tmp_path / "runs").exists()
    code, _, err = _cli(capsys, "sweep", str(path), "--index", "4")
    assert code == 2 and "--index 4: the sweep has jobs 0 to 3" in err

    monkeypatch.setenv("COLUMNS", "80")  # what every job shares above, one row a job below
    code, out, err = _cli(capsys, "sweep", str(path), "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert "  run name: FactualDPO_<job>" in lines
    assert f"  output: {tmp_path / 'runs'}/<job>" in lines
    rows = [line for line in lines if line.startswith("│")]
    assert len(rows) == 4  # one row a job: a table that fits
    assert all(len(line) <= 80 for line in lines if line.startswith("│"))
    assert "Beta-2B_delta2.5" in rows[-1] and "delta=2.5" in rows[-1]
    assert "…" not in out


def test_sweep_trains_skips_finished_and_runs_one_index(
    tiny_model: Path,
    tiny_qwen2: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    rows = synthetic_pairs(8, with_h_flags=True)
    for index, row in enumerate(rows):  # 4 pairs with Δh = 1, 4 with Δh = 0
        row["h_w"], row["h_l"] = (0, 1) if index < 4 else (0, 0)
    data = write_pairs(tmp_path / "pairs.jsonl", rows)
    content = _sweep(
        tmp_path,
        models=[
            {"id": str(tiny_model), "short": "llama"},
            {"id": str(tiny_qwen2), "short": "qwen"},
            {"id": str(tmp_path / "no-such-model"), "short": "missing"},
        ],
        deltas=[0, 4],
        base={
            "data": {"train": str(data)},
            "training": {"max_steps": 1, "per_device_train_batch_size": 8, "logging_steps": 1},
        },
    )
    path = _write(tmp_path / "sweep.yaml", content)
    code, out, err = _cli(capsys, "sweep", str(path), "-q")
    assert code == 2, err  # the missing model's two jobs failed as bad usage; the rest trained
    assert "job 4 (missing_delta0) failed: " in err and "path does not exist" in err
    root = tmp_path / "runs"
    for short in ("llama", "qwen"):
        for delta in (0, 4):
            job_dir = root / f"{short}_delta{delta}"
            assert job_finished(job_dir), err
            first = json.loads((job_dir / "metrics.jsonl").read_text().splitlines()[0])
            softplus = math.log1p(math.exp(0.1 * delta))
            expected = (4 * softplus + 4 * math.log(2)) / 8  # fresh adapter: m = 0 (fp32)
            assert first["loss"] == pytest.approx(expected, abs=2e-4)
            marker = json.loads((job_dir / DONE_FILE).read_text())
            assert marker["values"] == {"algorithm.delta": delta} and marker["steps"] == 1
            saved = yaml.safe_load((job_dir / "prefopt_config.yaml").read_text())
            assert saved["training"]["run_name"] == f"FactualDPO_{short}_delta{delta}"
    assert not job_finished(root / "missing_delta0")
    summary = out[out.index("sweep summary") :]
    assert summary.count("done") == 4 and summary.count("failed") == 2

    # a second invocation skips the finished jobs (their markers stay untouched)
    marker = root / "llama_delta0" / DONE_FILE
    before = marker.stat().st_mtime_ns
    code, out, _ = _cli(capsys, "sweep", str(path), "-q", "--index", "0")
    assert code == 0 and "already finished" in out
    assert marker.stat().st_mtime_ns == before

    # --index runs one job alone: job 3 again after its marker is removed
    (root / "qwen_delta4" / DONE_FILE).unlink()
    code, out, err = _cli(capsys, "sweep", str(path), "-q", "--index", "3")
    assert code == 0, err
    assert "job 4/6 qwen_delta4" in out and "llama_delta0" not in out
    assert job_finished(root / "qwen_delta4")


def test_example_factual_sweep_plans_models_times_ten_deltas() -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "factual_sweep.yaml"
    plan = load_sweep(example)
    deltas = [0, 2, 4, 6, 8, 10, 20, 30, 50, 100]
    assert len(plan.jobs) == 4 * len(deltas)
    assert [job.config.algorithm.delta for job in plan.jobs[:10]] == deltas
    assert plan.jobs[5].name == "qwen2.5-0.5b_delta10"
    assert plan.jobs[5].run_name == "FactualDPO_qwen2.5-0.5b_delta10"
    assert plan.jobs[5].output_dir == Path("runs/factual_sweep/qwen2.5-0.5b_delta10")
    assert plan.jobs[-1].config.model.name_or_path == "google/gemma-2-2b-it"
    assert plan.jobs[-1].config.data.train == "data/train_flipped.jsonl"


def test_only_the_processs_first_run_books_its_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep runs its jobs in one process: job 2's "startup" was job 1's whole run (25 s
    measured). The process's age goes to its first run alone."""
    from prefopt.training import timing

    monkeypatch.setattr(timing, "_startup_booked", False)
    monkeypatch.setattr(timing, "process_age", lambda: 3.0)
    first, second = timing.RunTimer(), timing.RunTimer()
    assert first.summary()["startup"] == 3.0
    assert "startup" not in second.summary()
    assert second.summary()["total"] < 1.0  # from the second job's own start


def test_dry_run_of_the_example_imports_no_transformers() -> None:
    """Listing 40 jobs took 20-25 s, 6 s of it importing transformers and peft to type the
    training settings; the cached TrainingArguments table types them (enums as text)."""
    import subprocess
    import sys

    from prefopt.training_arguments import training_argument_names

    training_argument_names()  # the table is cached (a first run per transformers version)
    probe = (
        "import json, sys\n"
        "from prefopt.cli.main import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    assert not exc.code\n"
        "heavy = ('torch', 'transformers', 'peft')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    example = Path(__file__).resolve().parents[1] / "examples" / "factual_sweep.yaml"
    proc = subprocess.run(
        [sys.executable, "-c", probe, "sweep", str(example), "--dry-run"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "40 jobs" in proc.stdout
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
