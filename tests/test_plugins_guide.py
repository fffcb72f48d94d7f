"""docs/plugins.md's minimal plugin, built from the page's own code blocks, works as documented.

The blocks with a ``title="path"`` are the files of the plugin. The test writes them into an
empty folder, builds the folder into a wheel (as ``pip install`` would), puts the unpacked wheel
on ``PYTHONPATH`` and runs the documented steps: list, show, flags, a bad value, and the
plugin's own tests (which train one step of the tiny model).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from prefopt.testing import run_cli

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
BLOCK = re.compile(r"^```(\w+)(?: title=\"([^\"]+)\")?\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks() -> list[tuple[str, str | None, str]]:
    return [(m.group(1), m.group(2), m.group(3)) for m in BLOCK.finditer(GUIDE.read_text())]


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    project = tmp_path_factory.mktemp("guide") / "prefopt-margin"
    project.mkdir()
    files = {title: text for _, title, text in blocks() if title}
    assert sorted(files) == [
        "pyproject.toml",
        "src/prefopt_margin/__init__.py",
        "tests/test_margin_dpo.py",
    ]
    for title, text in files.items():
        (project / title).parent.mkdir(parents=True, exist_ok=True)
        (project / title).write_text(text, encoding="utf-8")
    wheels = project.parent / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(project)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    site = project.parent / "site"
    with zipfile.ZipFile(next(wheels.glob("prefopt_margin-0.1.0-*.whl"))) as archive:
        archive.extractall(site)
    return project, {"PYTHONPATH": str(site)}


def test_every_python_block_of_the_guide_compiles() -> None:
    python = [(title, text) for lang, title, text in blocks() if lang == "python"]
    assert len(python) >= 5
    for title, text in python:
        compile(text, title or "<docs/plugins.md>", "exec")


def test_listed_and_shown(plugin_env) -> None:
    _, env = plugin_env
    code, stdout, stderr = run_cli("plugins", "list", env=env)
    assert code == 0 and "warning" not in stderr, stderr
    [row] = [line for line in stdout.splitlines() if line.startswith("│ margin-dpo ")]
    assert [cell.strip() for cell in row.split("│")[3:6]] == ["yes", "prefopt-margin", "0.1.0"]
    code, stdout, stderr = run_cli("plugins", "show", "margin-dpo", env=env)
    assert code == 0, stderr
    assert "prefopt-margin 0.1.0" in stdout and "plugin API     1.0" in stdout
    [gamma] = [line for line in stdout.splitlines() if line.startswith("│ gamma ")]
    assert [cell.strip() for cell in gamma.split("│")[1:-1]] == [
        "gamma", "--gamma", "float", "1.0", "Target γ for β·m (0–5)."
    ]  # fmt: skip


def test_flags_reach_the_config(plugin_env) -> None:
    _, env = plugin_env
    code, stdout, stderr = run_cli("train", "margin-dpo", "--gamma", "2", "--print-config", env=env)
    assert code == 0, stderr
    assert "algorithm_name: margin-dpo" in stdout
    assert re.search(r"^algorithm:\n  beta: 0\.1\n  gamma: 2\.0$", stdout, re.MULTILINE), stdout


def test_bad_value_is_the_documented_one_line_error(plugin_env) -> None:
    _, env = plugin_env
    code, stdout, stderr = run_cli(
        "train", "margin-dpo", "--gamma", "-1", "--print-config", env=env
    )
    assert code == 2 and stdout == ""
    message = "error: algorithm 'margin-dpo': gamma must be >= 0, got -1.0"
    assert stderr.strip() == message
    assert f"`{message}`" in GUIDE.read_text()


def test_the_plugins_own_tests_pass(plugin_env) -> None:
    project, env = plugin_env
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project, capture_output=True, text=True, timeout=600,
        env={**os.environ, **env},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
