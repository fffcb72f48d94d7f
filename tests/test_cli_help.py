"""``--help`` texts: flags show no value type, options with values keep theirs."""

from __future__ import annotations

from prefopt.testing import run_cli


def test_flags_show_no_bool_type_but_valued_options_keep_theirs() -> None:
    code, out, _ = run_cli("data", "flip", "--help")
    assert code == 0
    assert "<bool>" not in out
    force = next(line for line in out.splitlines() if "--force" in line)
    assert "Overwrite an existing output file." in force
    output = next(line for line in out.splitlines() if "--output" in line)
    assert "<path>" in output
