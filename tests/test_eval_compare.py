"""``prefopt eval compare``: a Δ sweep side by side, as a table and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from prefopt.cli.main import app
from prefopt.eval.compare import choose_x, load_result_set, load_result_sets

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(
    folder: Path, delta: float, accuracy: float, rate: float, judge: float | None = None
) -> Path:
    """A run folder as a sweep leaves it: config, eval results and maybe judge results."""
    folder.mkdir(parents=True)
    config = {
        "algorithm_name": "factual",
        "model": {"name_or_path": "base"},
        "data": {"train": "train.jsonl"},
        "training": {"run_name": folder.name},
        "algorithm": {"beta": 0.1, "delta": delta, "label_smoothing": 0.0},
    }
    (folder / "prefopt_config.yaml").write_text(yaml.safe_dump(config))
    results = {
        "kind": "prefopt.eval",
        "run": None,
        "metrics": {"pairs": 10, "accuracy": accuracy, "hallucination_preference_rate": rate},
        "by_delta_h": {"1": {"pairs": 6, "accuracy": accuracy / 2, "margin": 0.5}},
    }
    (folder / "eval_results.json").write_text(json.dumps(results))
    if judge is not None:
        judged = {"kind": "prefopt.judge", "metrics": {"mean_factuality": judge, "win_rate": 0.6}}
        (folder / "judge_results.json").write_text(json.dumps(judged))
    return folder


@pytest.fixture
def sweep(tmp_path: Path) -> list[Path]:
    return [
        write_run(tmp_path / "delta10", 10.0, 0.8, 0.10, judge=7.5),
        write_run(tmp_path / "delta0", 0.0, 0.6, 0.40, judge=5.0),
        write_run(tmp_path / "delta50", 50.0, 0.9, 0.05, judge=8.0),
    ]


def test_folder_results_are_merged_and_flattened(sweep: list[Path]) -> None:
    result = load_result_set(sweep[0])
    assert result.label == "delta10"
    assert result.run is not None and result.run["algorithm"] == "factual"
    assert result.metrics["accuracy"] == 0.8
    assert result.metrics["accuracy[Δh=1]"] == 0.4
    assert result.metrics["mean_factuality"] == 7.5
    assert choose_x(load_result_sets(sweep)) == "delta"  # beta is equal everywhere


def test_cli_table_sorted_by_delta_and_chart(sweep: list[Path], tmp_path: Path) -> None:
    chart = tmp_path / "charts" / "sweep.png"
    result = CliRunner().invoke(
        app, ["eval", "compare", *map(str, sweep), "--plot", str(chart)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "delta" in line and "│" in line]
    assert [line.split("│")[1].strip() for line in lines] == ["delta0", "delta10", "delta50"]
    assert "0.6000" in lines[0] and "0.4000" in lines[0] and "5.0000" in lines[0]
    assert "0.9000" in lines[2] and "0.0500" in lines[2]
    assert chart.read_bytes().startswith(PNG_MAGIC)


def test_files_by_name_and_explicit_metrics(tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"kind": "prefopt.eval", "metrics": {"accuracy": 0.5, "margin": 1.0}}))
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"kind": "prefopt.eval", "metrics": {"accuracy": 0.7}}))
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["eval", "compare", str(a), str(b), "-m", "margin", "--plot", str(tmp_path / "c.png")],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert "1.0000" in rows[0] and "–" in rows[1]  # b has no margin
    assert (tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)

    result = runner.invoke(app, ["eval", "compare", str(a), "-m", "nope"])
    assert (
        result.exit_code == 2
        and "unknown metric nope; available: accuracy, margin" in result.stderr
    )
    result = runner.invoke(app, ["eval", "compare", str(a), "--x", "delta"])
    assert result.exit_code == 2 and "no numeric hyperparameter 'delta'" in result.stderr


def test_bad_inputs(tmp_path: Path) -> None:
    runner = CliRunner()
    other = tmp_path / "other.json"
    other.write_text('{"accuracy": 1}')
    result = runner.invoke(app, ["eval", "compare", str(other)])
    assert result.exit_code == 2 and "not a prefopt results file" in result.stderr
    broken = tmp_path / "broken.json"
    broken.write_text('{"kind": ')
    result = runner.invoke(app, ["eval", "compare", str(broken)])
    assert result.exit_code == 2 and f"{broken}:1: invalid JSON" in result.stderr
    result = runner.invoke(app, ["eval", "compare", str(tmp_path)])
    assert result.exit_code == 2
    assert "no eval_results.json, judge_results.json or harness_results.json" in result.stderr


def test_cli_skips_folders_without_results_and_chart_is_not_private(
    sweep: list[Path], tmp_path: Path
) -> None:
    """``runs/*`` also matches the ``-merged`` folder merge writes: skipped with a notice."""
    import os
    import stat

    merged = tmp_path / "delta10-merged"
    merged.mkdir()
    chart = tmp_path / "sweep.png"
    args = ["eval", "compare", *map(str, sweep), str(merged), "--plot", str(chart)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    assert f"skipping {merged}: no eval_results.json" in result.stderr
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(chart.stat().st_mode) == 0o666 & ~mask
    alone = CliRunner().invoke(app, ["eval", "compare", str(merged)])
    assert alone.exit_code == 2 and "no eval_results.json" in alone.stderr


def test_narrow_terminal_shows_every_name_and_value_whole(tmp_path: Path) -> None:
    """In 80 columns a long run name and many metrics do not fit a table: each run becomes a
    record whose names and values are whole (no '…', nothing cut mid-word)."""
    long_names = [
        write_run(tmp_path / f"Factual_DPO_SmolLM2-135M-Instruct_delta{delta}", delta, 0.7, 0.2)
        for delta in (0, 10)
    ]
    result = CliRunner().invoke(
        app,
        ["eval", "compare", *map(str, long_names), "-m", "accuracy",
         "-m", "hallucination_preference_rate", "-m", "accuracy[Δh=1]"],
        env={"COLUMNS": "80"},
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "…" not in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    for folder in long_names:
        assert f"run {folder.name}" in result.stdout.splitlines()
    assert "  hallucination_preference_rate  0.2000" in result.stdout
    wide = CliRunner().invoke(
        app, ["eval", "compare", *map(str, long_names)], env={"COLUMNS": "200"}
    )
    assert "┃ run" in wide.stdout  # a table where it fits


def test_chart_labels_values_marks_missing_ones_and_drops_empty_panels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart had an empty win-rate panel, drew missing values as zeros and had no value
    labels. Run b has no judge results, no run has a win rate; the chart is by run (bars)."""
    import matplotlib.pyplot as plt

    from prefopt.eval import compare

    runs = [
        write_run(tmp_path / "a", 1.0, 0.8, 0.10, judge=7.5),
        write_run(tmp_path / "b", 1.0, 0.6, 0.40),
    ]
    sets = load_result_sets(runs)
    for s in sets:
        s.metrics.pop("win_rate", None)
    kept: list = []
    monkeypatch.setattr(plt, "close", lambda figure: kept.append(figure))
    metrics = ["accuracy", "mean_factuality", "win_rate"]
    compare.plot(sets, metrics, None, tmp_path / "c.png")
    (figure,) = kept
    panels = {axis.get_title(): axis for axis in figure.axes if axis.get_visible()}
    assert set(panels) == {"accuracy", "mean_factuality"}  # no empty win-rate panel
    texts = [t.get_text() for t in panels["mean_factuality"].texts]
    assert "7.5" in texts and "n/a" in texts  # b has no value: marked, not a bar at 0
    assert len(panels["mean_factuality"].patches) == 1
    assert {"0.8", "0.6"} <= {t.get_text() for t in panels["accuracy"].texts}
    with pytest.raises(Exception, match="none of the runs has a metric"):
        compare.plot(sets, ["win_rate"], None, tmp_path / "d.png")


def test_demo_legend_names_only_the_rows_its_table_has() -> None:
    """The demo's legend explained a [Δh=0] row its table did not have."""
    from prefopt.cli.demo import legend

    shown = legend(["accuracy", "accuracy[Δh=1]", "logp_accuracy"])
    assert [line.split(":")[0] for line in shown] == ["logp_accuracy", "accuracy"]
    assert shown[1].endswith("; [Δh=1] pairs with one hallucinated answer")
    assert "[Δh=0]" not in " ".join(shown)
    both = legend(["accuracy", "accuracy[Δh=1]", "accuracy[Δh=0]"])
    assert both[0].endswith(
        "[Δh=1] pairs with one hallucinated answer, [Δh=0] pairs of two true answers"
    )
