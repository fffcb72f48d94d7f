"""The separately installable loss pack (``plugins/prefopt-losses``) end to end via the CLI.

If ``prefopt-losses`` is installed (CI: ``pip install -e plugins/prefopt-losses --no-deps``)
the subprocesses use it as installed. Otherwise (or with ``PREFOPT_TEST_BUILD_PLUGIN=1``) the
package is built into a wheel from a copy of its source and the wheel unpacked into a folder
on ``PYTHONPATH``: the same files and entry points ``pip install`` would put in place.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from prefopt.testing import run_cli, synthetic_pairs, write_pairs

PACK = Path(__file__).resolve().parents[1] / "plugins" / "prefopt-losses"
NAMES = ["ipo", "hinge", "robust", "simpo", "nca-pair", "apo-zero", "sppo-hard", "bco-pair",
         "exo-pair"]  # fmt: skip


def pack_version() -> str:
    text = (PACK / "src" / "prefopt_losses" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    assert match, "prefopt_losses.__version__ not found"
    return match.group(1)


def installed() -> bool:
    try:
        dist = metadata.distribution("prefopt-losses")
    except metadata.PackageNotFoundError:
        return False
    return any(ep.group == "prefopt" for ep in dist.entry_points)


@pytest.fixture(scope="module")
def pack_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if installed() and not os.environ.get("PREFOPT_TEST_BUILD_PLUGIN"):
        return {}
    work = tmp_path_factory.mktemp("pack")
    source = work / "source"  # build from a copy: setuptools writes build/ next to the sources
    skip = shutil.ignore_patterns("build", "*.egg-info", ".*cache*", "__pycache__")
    shutil.copytree(PACK, source, ignore=skip)
    wheels = work / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, f"building the plugin wheel failed:\n{build.stderr}"
    [wheel] = wheels.glob("prefopt_losses-*.whl")
    site = work / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    [entry_points] = site.glob("prefopt_losses-*.dist-info/entry_points.txt")
    assert (
        "[prefopt]" in entry_points.read_text()
        and "prefopt_losses.plugin" in entry_points.read_text()
    )
    return {"PYTHONPATH": str(site)}


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    return write_pairs(tmp_path / "pairs.jsonl", synthetic_pairs(8, seed=5))


def metrics_of(output_dir: Path) -> list[dict]:
    lines = (output_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if '"loss"' in line]


def test_plugins_list_shows_the_pack_with_package_and_version(pack_env) -> None:
    code, stdout, stderr = run_cli("plugins", "list", env=pack_env)
    assert code == 0, stderr
    assert "warning" not in stderr and "broken plugins" not in stdout
    rows = {
        line.split("│")[1].strip(): line for line in stdout.splitlines() if line.startswith("│ ")
    }
    for name in NAMES:
        cells = [cell.strip() for cell in rows[name].split("│")[1:-1]]
        assert cells[-2:] == ["prefopt-losses", pack_version()], cells
    assert [c.strip() for c in rows["simpo"].split("│")[1:-1]][2] == "no"  # no reference
    assert [c.strip() for c in rows["ipo"].split("│")[1:-1]][2] == "yes"


def test_train_ipo_end_to_end(pack_env, tiny_model: Path, pairs: Path, tmp_path: Path) -> None:
    env = {**pack_env, "PREFOPT_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "ipo-run"
    code, stdout, stderr = run_cli(
        "train", "ipo", "--beta", "0.2", "--model", str(tiny_model), "--train-file", str(pairs),
        "--output-dir", str(out), "--max-steps", "2",
        "--set", "training.per_device_train_batch_size=4", "--set", "training.logging_steps=1",
        env=env,
    )  # fmt: skip
    assert code == 0, stderr
    assert "run finished" in stdout
    steps = metrics_of(out)
    assert [s["step"] for s in steps] == [1, 2]
    # Step 1: LoRA starts at the reference (B = 0), so h = 0 and loss = (1/(2·0.2))² = 6.25
    # (up to the last bits the reference and policy passes may differ in under bf16 autocast).
    assert steps[0]["loss"] == pytest.approx(6.25, rel=1e-3)
    assert steps[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-3)
    assert all(math.isfinite(s["loss"]) for s in steps)
    assert (out / "adapter_model.safetensors").is_file()
    config = (out / "prefopt_config.yaml").read_text(encoding="utf-8")
    assert "algorithm_name: ipo" in config and "beta: 0.2" in config


def test_train_simpo_end_to_end_without_reference(
    pack_env, tiny_model: Path, tmp_path: Path
) -> None:
    # One pair, repeated: every batch holds the same pair, so logged means are its values.
    row = synthetic_pairs(1, seed=11)[0]
    data = write_pairs(tmp_path / "one-pair.jsonl", [row, row])
    out = tmp_path / "simpo-run"
    env = {**pack_env, "PREFOPT_CACHE_DIR": str(tmp_path / "cache")}
    beta, ratio = 2.5, 0.4
    code, stdout, stderr = run_cli(
        "train", "simpo", "--beta", str(beta), "--gamma-beta-ratio", str(ratio),
        "--model", str(tiny_model), "--train-file", str(data), "--output-dir", str(out),
        "--max-steps", "1", "--set", "training.per_device_train_batch_size=2",
        "--set", "training.logging_steps=1",
        env=env,
    )  # fmt: skip
    assert code == 0, stderr
    [step] = metrics_of(out)
    # Completion lengths, counted independently: tokens of the answer plus EOS.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    chosen_len = len(tokenizer(row["chosen"], add_special_tokens=False).input_ids) + 1
    rejected_len = len(tokenizer(row["rejected"], add_special_tokens=False).input_ids) + 1
    # rewards are β·(summed log-prob)/length of the policy alone: no reference subtracted.
    assert step["rewards/chosen"] == pytest.approx(
        beta * step["logps/chosen"] / chosen_len, rel=1e-5
    )
    assert step["rewards/rejected"] == pytest.approx(
        beta * step["logps/rejected"] / rejected_len, rel=1e-5
    )
    z = step["rewards/chosen"] - step["rewards/rejected"] - ratio * beta
    assert step["loss"] == pytest.approx(math.log1p(math.exp(-z)), rel=1e-5)
