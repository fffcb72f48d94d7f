"""What prefopt prints keeps its brackets: install hints such as ``pip install 'prefopt[plot]'``
and paths such as ``data[1].jsonl`` are no rich markup (it swallowed ``[plot]`` before)."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefopt.console import console, styled
from prefopt.testing import synthetic_pairs, write_pairs
from prefopt.testing.cli_runner import run_cli_in_process as run_cli


def test_plain_text_keeps_its_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    console().print("chart: skipped (pip install 'prefopt[plot]')")
    console().print(styled("saved to [bold]{}[/]", "runs/[v2]"), markup=True)
    assert capsys.readouterr().out.splitlines() == [
        "chart: skipped (pip install 'prefopt[plot]')",
        "saved to runs/[v2]",
    ]


def test_a_bracketed_path_is_printed_whole(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "pairs[plot].jsonl", synthetic_pairs(4))
    code, stdout, stderr = run_cli("data", "validate", str(data))
    assert code == 0, stderr
    assert f"validate: {data}" in stdout
    assert "clean" in stdout
