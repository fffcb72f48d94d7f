"""``prefopt data stats`` (or ``validate``) on one process vs on the free CPUs, as whole processes.

Uses the input of ``flip_speed.py`` (200k synthetic pairs, 235 MB of JSONL) and times
``prefopt data stats IN --json`` (``--command validate``: ``prefopt data validate IN
--json``, no tokenizer) from start to exit, alternately with ``PREFOPT_THREADS=1``
(the single streaming pass) and with prefopt's own choice (``--workers auto``: the free CPUs,
so both cores of an idle 2-core machine), ``--repeat`` times; prints every run with the
1-minute load average before it, the medians and the paired ratios, and checks that both
printed the same statistics. Run::

    python benchmarks/stats_speed.py                 # 200k rows, 5 alternating repeats
    python benchmarks/stats_speed.py --rows 50000 --repeat 1
    python benchmarks/stats_speed.py --command validate
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from flip_speed import measure_process, prefopt_command, write_input


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=None, help="where to put the input")
    parser.add_argument("--command", default="stats", choices=["stats", "validate"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        source = Path(tmp) / "pairs.jsonl"
        write_input(source, args.rows)
        command = [*prefopt_command(), "data", args.command, str(source), "--json"]
        one = {**os.environ, "PREFOPT_THREADS": "1"}
        auto = {k: v for k, v in os.environ.items() if k != "PREFOPT_THREADS"}
        contestants = {"1 process": one, "auto": auto}
        size_mb = source.stat().st_size / 1e6
        print(f"input: {args.rows} rows, {size_mb:.0f} MB; {args.repeat} alternating repeats, "
              f"whole processes, {os.cpu_count()} CPUs")  # fmt: skip
        walls: dict[str, list[float]] = {name: [] for name in contestants}
        printed: dict[str, str] = {}
        names = list(contestants)
        for index in range(args.repeat):
            for name in names if index % 2 == 0 else names[::-1]:
                load = os.getloadavg()[0]
                # validate exits 2 on this input (its (1, 0) rows): the report is what counts
                wall, cpu, out = measure_process(command, contestants[name], source, True, False)
                walls[name].append(wall)
                printed[name] = out
                print(f"  repeat {index + 1}: {name:9s} {wall:6.2f} s wall {cpu:6.2f} s cpu  "
                      f"(load average before: {load:.2f})", flush=True)  # fmt: skip
    if json.loads(printed["1 process"]) != json.loads(printed["auto"]):
        print("the two printed different statistics", file=sys.stderr)
        return 1
    one_wall, auto_wall = (statistics.median(walls[name]) for name in names)
    paired = [a / b for a, b in zip(walls["1 process"], walls["auto"], strict=True)]
    print(f"median wall: 1 process {one_wall:.2f} s, auto {auto_wall:.2f} s -> "
          f"{one_wall / auto_wall:.2f}x; paired {', '.join(f'{r:.2f}' for r in paired)} "
          f"(median {statistics.median(paired):.2f}x); load average now "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
