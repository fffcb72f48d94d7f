"""`prefopt report`: the page's content from run folders written here, its refusals, and a
3-run Δ sweep's report rendered by headless Chromium, every chart checked in the screenshot."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from prefopt.eval.run_report import build_report, load_run
from prefopt.eval.svg_chart import PALETTE, Series, line_chart, nice_ticks
from prefopt.testing.cli_runner import run_cli_in_process as run_cli


def write_run(
    folder: Path, lines: list[dict[str, Any]], config: dict[str, Any] | None = None
) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if config is not None:
        (folder / "prefopt_config.yaml").write_text(yaml.safe_dump(config))
    return folder


def steps(count: int, **extra: float) -> list[dict[str, Any]]:
    return [
        {"step": i, "loss": 0.7 - 0.01 * i, "rewards/margins": 0.1 * i, "learning_rate": 1e-5,
         **extra}
        for i in range(1, count + 1)
    ]  # fmt: skip


# -- charts ----------------------------------------------------------------------------------
def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0, 40) == [0, 10, 20, 30, 40]
    assert nice_ticks(0.31, 0.69) == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7])
    ticks = nice_ticks(-58.3, -17.9)
    assert ticks[0] <= -58.3 and ticks[-1] >= -17.9
    gaps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(gaps) == 1 and gaps.pop() in (10, 20, 25)
    assert nice_ticks(2, 2)[0] <= 2 <= nice_ticks(2, 2)[-1]  # one value: still an axis


def test_a_line_breaks_at_missing_values_and_a_lone_point_gets_a_marker() -> None:
    svg = line_chart("t", [Series("a", [(1, 1.0), (2, 2.0), (3, None), (4, 3.0)], "#0072b2")])
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 1
    assert "no data" in line_chart("t", [Series("a", [(1, None)], "#000000")])


# -- the page ----------------------------------------------------------------------------------
def test_the_page_holds_every_section_and_nothing_external(tmp_path: Path) -> None:
    finding = {
        "step": 3, "event": "health", "rule": "accuracy-pinned",
        "message": "reward accuracy has been 1.0 since step 1", "advice": "Lower the <rate>.",
    }  # fmt: skip
    lines = [
        *steps(4, **{"rewards/accuracies": 1.0, "grad_norm": 0.5}),
        {"step": 4, "eval_loss": 0.66, "eval_rewards/accuracies": 0.6},
        finding,
        {"summary": {"global_step": 4, "timing": {"train": 1.5, "total": 3.0},
                     "utilization": {"mfu": 0.31}, "precision": "bf16"}},
    ]  # fmt: skip
    run = write_run(
        tmp_path / "run-a", lines, {"algorithm_name": "dpo", "model": {"name_or_path": "m/x"}}
    )
    (run / "eval_results.json").write_text(
        json.dumps({"kind": "prefopt.eval", "metrics": {"accuracy": 0.625, "reward_margin": 0.4}})
    )
    page = build_report([load_run(run)], "my runs")
    assert "<title>my runs</title>" in page
    drawn = re.findall(r'<svg class="chart" id="([a-z_]+)"', page)
    assert drawn == ["loss", "margins", "accuracies", "learning_rate", "grad_norm"]
    assert "Lower the &lt;rate&gt;." in page and "accuracy-pinned" in page  # escaped
    assert "0.625" in page and "reward_margin" in page  # the evaluation results
    assert "31.0%" in page and ">1.5<" in page and "bf16" in page  # timing
    assert "name_or_path: m/x" in page  # the config
    assert not re.search(r"<script|<link|<img|src=|https?://(?!www\.w3\.org/2000/svg)", page)


def test_a_torn_last_line_is_left_out_and_said(tmp_path: Path) -> None:
    run = write_run(tmp_path / "live", steps(3))
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 4, "lo')  # a run still writing, or killed mid-line
    page = build_report([load_run(run)])
    assert "line 4) is cut short and was left out" in page
    assert '<svg class="chart" id="loss"' in page


def test_runs_in_folders_of_the_same_name_keep_their_own_label_and_colour(
    tmp_path: Path,
) -> None:
    first = write_run(tmp_path / "sweepA" / "delta5", steps(2))
    second = write_run(tmp_path / "sweepB" / "delta5", steps(2))
    page = build_report([load_run(first), load_run(second)])
    assert "sweepA/delta5" in page and "sweepB/delta5" in page
    assert PALETTE[0] in page and PALETTE[1] in page


def test_a_run_without_a_logged_step_says_so(tmp_path: Path) -> None:
    run = write_run(tmp_path / "early", [{"summary": {"global_step": 2}}])
    assert "No logged training step yet" in build_report([load_run(run)])


def test_a_long_run_is_thinned_to_the_pixels(tmp_path: Path) -> None:
    run = write_run(tmp_path / "long", steps(20_000))
    page = build_report([load_run(run)])
    assert len(page) < 200_000  # 20k points a curve, drawn as a few per pixel column
    polyline = re.search(r'id="loss".*?<polyline points="([^"]+)"', page, re.S)
    assert polyline is not None and len(polyline.group(1).split()) <= 4 * 440


def test_a_sweep_folder_is_its_runs(tmp_path: Path) -> None:
    for name in ("run_delta20", "run_delta5"):
        write_run(tmp_path / "sweep" / name, steps(3))
    (tmp_path / "sweep" / "notes").mkdir()
    out = tmp_path / "r.html"
    code, stdout, stderr = run_cli("report", str(tmp_path / "sweep"), "-o", str(out))
    assert code == 0, stderr
    assert "report: " in stdout and "(2 runs, 0 health findings)" in stdout
    page = out.read_text()
    assert page.index("run_delta5") < page.index("run_delta20")  # numbers sort as numbers
    assert "No health finding in any run." in page


def test_refusals_exit_2_and_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    code, _, stderr = run_cli("report", str(tmp_path / "missing"), "-o", str(out))
    assert code == 2 and "no such run folder" in stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, stderr = run_cli("report", str(empty), "-o", str(out))
    assert code == 2 and "no metrics.jsonl" in stderr
    broken = write_run(tmp_path / "broken", steps(2))
    with (broken / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 3, "loss": \n{"step": 4, "loss": 0.5}\n')
    code, _, stderr = run_cli("report", str(broken), "-o", str(out))
    assert code == 2 and f"{broken / 'metrics.jsonl'}:3: invalid JSON" in stderr
    assert not out.exists() and "Traceback" not in stderr
    out.write_text("mine")
    good = write_run(tmp_path / "good", steps(2))
    code, _, stderr = run_cli("report", str(good), "-o", str(out))
    assert code == 2 and "already exists" in stderr and out.read_text() == "mine"


# -- a real sweep, rendered by a browser -------------------------------------------------------
@pytest.fixture(scope="module")
def sweep_report(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-run Factual-DPO Δ sweep on the tiny model with eval data, one run evaluated, and
    its report."""
    from prefopt.testing import synthetic_pairs, write_pairs

    root = tmp_path_factory.mktemp("sweep")
    # A third of the pairs compare two true answers (Δh = 0), so that Δ changes the training.
    train = write_pairs(
        root / "train.jsonl", synthetic_pairs(48, with_h_flags=True, both_true=0.35)
    )
    held = write_pairs(root / "eval.jsonl", synthetic_pairs(16, held_out=True, with_h_flags=True))
    sweep = {
        "algorithm": "factual",
        "output_root": str(root / "runs"),
        "models": [{"id": str(tiny_model), "short": "tiny"}],
        "deltas": [0, 5, 20],
        "base": {
            "data": {"train": str(train), "eval": str(held)},
            "training": {
                "max_steps": 12, "logging_steps": 2, "eval_strategy": "steps", "eval_steps": 4,
                "per_device_train_batch_size": 8, "learning_rate": 5e-3, "bf16": False,
            },
        },
    }  # fmt: skip
    (root / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    code, _, stderr = run_cli("sweep", str(root / "sweep.yaml"))
    assert code == 0, stderr
    runs = sorted((root / "runs").iterdir())
    assert len(runs) == 3
    code, _, stderr = run_cli("eval", str(runs[0]), "--data", str(held))
    assert code == 0, stderr
    out = root / "report.html"
    code, _, stderr = run_cli("report", str(root / "runs"), "-o", str(out), "--title", "Δ sweep")
    assert code == 0, stderr
    return out


def test_the_sweep_report_has_every_run_and_chart(sweep_report: Path) -> None:
    page = sweep_report.read_text()
    drawn = re.findall(r'<svg class="chart" id="([a-z_]+)"', page)
    assert drawn == [
        "loss",
        "margins",
        "accuracies",
        "chosen",
        "rejected",
        "learning_rate",
        "grad_norm",
        "throughput",
    ]  # fmt: skip  (β is not logged by factual: no empty chart)
    for delta in ("delta0", "delta5", "delta20"):
        assert page.count(f"tiny_{delta}") >= 3
    assert "<h2>Evaluation</h2>" in page and "accuracy" in page


CHROMIUM = next(
    (
        shutil.which(name)
        for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
        if shutil.which(name)
    ),
    None,
)
MEASURE = """<script>
const charts = [...document.querySelectorAll('svg.chart')].map(svg => {
  const box = svg.getBoundingClientRect();
  const lines = svg.querySelectorAll('polyline.series, circle').length;
  return [svg.id, box.left, box.top + window.scrollY, box.width, box.height, lines]
    .map(v => typeof v === 'number' ? Math.round(v) : v).join(',');
});
document.body.setAttribute('data-charts', charts.join(';'));
document.body.setAttribute('data-height', document.documentElement.scrollHeight);
</script>"""


def chromium(*arguments: str) -> str:
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--force-device-scale-factor=1", *arguments],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def close_to(pixel: tuple[int, ...], color: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], color, strict=True))


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no headless Chromium here (apt-get install chromium-headless-shell; .ci/run "
    "installs it where it can)",
)
def test_chromium_draws_every_chart(sweep_report: Path, tmp_path: Path) -> None:
    from PIL import Image

    measured = tmp_path / "measured.html"
    measured.write_text(sweep_report.read_text().replace("</body>", MEASURE + "</body>"))
    width = 1200
    dom = chromium("--dump-dom", f"--window-size={width},1000", measured.as_uri())
    charts = re.search(r'data-charts="([^"]*)"', dom)
    height = re.search(r'data-height="(\d+)"', dom)
    assert charts is not None and height is not None, dom[:500]
    boxes = [item.split(",") for item in charts.group(1).split(";")]
    assert len(boxes) == 8

    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", f"--window-size={width},{height.group(1)}",
             sweep_report.as_uri())  # fmt: skip
    image = Image.open(shot).convert("RGB")
    pixels = image.load()
    assert pixels is not None
    background = sum(1 for p in image.getdata() if p == (255, 255, 255))
    assert background < 0.97 * image.width * image.height  # not a blank page

    run_colors = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in PALETTE[:3]]
    for name, left, top, box_width, box_height, lines in boxes:
        assert int(box_width) > 300 and int(box_height) > 150, name  # laid out, visible
        assert int(lines) >= 3, name  # one line per run at least
        assert int(top) + int(box_height) <= image.height, name
        inked = {index: 0 for index in range(3)}
        for x in range(int(left), int(left) + int(box_width)):
            for y in range(int(top), int(top) + int(box_height)):
                pixel = pixels[x, y]
                for index, color in enumerate(run_colors):
                    if close_to(pixel, color):  # type: ignore[arg-type]
                        inked[index] += 1
        # Every run's colour is on the chart (its legend swatch at least: runs whose curves
        # coincide hide each other), and lines, not swatches alone, were drawn.
        assert all(count >= 10 for count in inked.values()), (name, inked)
        assert sum(inked.values()) >= 600, (name, inked)
