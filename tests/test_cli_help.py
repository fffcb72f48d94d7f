"""``--help`` texts: flags show no value type, options with values keep theirs."""

from __future__ import annotations

import pytest

from prefopt.testing import run_cli


def test_flags_show_no_bool_type_but_valued_options_keep_theirs() -> None:
    code, out, _ = run_cli("data", "flip", "--help")
    assert code == 0
    assert "<bool>" not in out
    force = next(line for line in out.splitlines() if "--force" in line)
    assert "Overwrite an existing output file." in force
    output = next(line for line in out.splitlines() if "--output" in line)
    assert "<path>" in output


def _command_descriptions(help_text: str) -> dict[str, list[str]]:
    """The lines of each command's description in a help page's "Commands" panel."""
    entries: dict[str, list[str]] = {}
    inside = False
    current = ""
    for line in help_text.splitlines():
        if "Commands" in line and line.startswith("╭"):
            inside = True
            continue
        if not inside:
            continue
        if line.startswith("╰"):
            break
        cells = line.strip("│ ").split(None, 1)
        if line.startswith("│ ") and not line.startswith("│  ") and len(cells) == 2:
            current = cells[0]
            entries[current] = [cells[1].strip()]
        elif current:
            entries[current].append(line.strip("│ ").strip())
    return entries


@pytest.mark.parametrize("group", [(), ("eval",), ("plugins",), ("data",)])
def test_command_lists_wrap_whole_sentences_at_80_columns(group: tuple[str, ...]) -> None:
    """A description breaks where the terminal is full, not where a docstring's line ended
    ("held-out evaluation side by" / "side, on the embedded ..." before)."""
    code, out, _ = run_cli(*group, "--help", env={"COLUMNS": "80"})
    assert code == 0
    entries = _command_descriptions(out)
    assert entries, out
    for name, lines in entries.items():
        for line in lines[:-1]:  # every line but an entry's last is (nearly) full
            assert len(line) >= 50, (name, lines)


def test_train_help_names_the_way_to_an_algorithms_options() -> None:
    code, out, _ = run_cli("train", "--help", env={"COLUMNS": "80"})
    assert code == 0
    assert "see `prefopt train --help`" not in out
    assert "prefopt train ALGO --help" in " ".join(out.split())
