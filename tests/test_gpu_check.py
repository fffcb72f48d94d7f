"""benchmarks/gpu_check.py in its dry mode on the CPU: the steps that need no training run, and
each result is on disk the moment its step ends (one JSON line per step)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_dry_run_writes_each_step_as_it_finishes(tmp_path: Path) -> None:
    steps = ["versions", "architectures", "layouts", "shared_rows", "generation"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--only", *steps],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "OUT": str(tmp_path)},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == steps
    assert all(r["status"] == "ok" and r["device"] == "cpu" for r in records), records
    lean = records[1]["max_abs_lean_minus_full"]
    assert {"llama", "granite", "gemma2", "qwen2-152k-vocab"} <= set(lean)
    assert all(value < 1e-4 for value in lean.values() if isinstance(value, float)), lean
    assert all(value < 1e-4 for value in records[2]["max_abs_vs_padded"].values())
    shared = records[3]["max_abs_vs_padded"]
    assert {"sdpa/lists/packed", "eager/turns/prefix"} <= set(shared)
    assert all(value < 1e-4 for value in shared.values()), shared
    assert records[4]["equal"] is True
