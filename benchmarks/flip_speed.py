"""Side-by-side speed of ``prefopt data flip`` and a naive json.loads/json.dumps loop.

Generates a JSONL file of preference pairs (200k rows by default, about 1 KB each, with
``h_w``/``h_l`` flags drawn uniformly from the four combinations), then times:

* **naive**: the loop everyone writes first — ``for line in f: row = json.loads(line)``,
  swap chosen/rejected for (1, 0) rows, ``f.write(json.dumps(row) + "\\n")``;
* **prefopt**: ``prefopt data flip`` (orjson and simdjson, both cores for a large file,
  full validation of the h flags, a summary, atomic output).

By default each contestant is a whole process, timed from its start to its exit: the naive
loop as ``python flip_speed.py --naive-worker IN OUT`` and prefopt as the command
``prefopt data flip IN -o OUT``, so interpreter start-up, imports and the process pool are
counted. Each run writes a new output, as a user's first flip of a file does: the previous
run's output is deleted before the clock starts. ``--overwrite`` keeps it instead, so the
naive loop truncates it and prefopt (``--force``) replaces it. That case costs prefopt more
on this VM, whatever the code does: an atomic write holds the old file until the new one is
complete, so its 235 MB of page cache comes from memory the host may have taken back (see
docs/performance.md). ``--inline`` times the two functions inside this process instead (no
start-up; CPU time of this process only, so a pool's workers are not counted).

The two alternate, ``--repeat`` times; every run is printed with the 1-minute load average
before it, and the medians and the median of the paired (same-repeat) ratios are reported.
prefopt's processes are its own choice by default (``--workers auto``: the free CPUs, i.e.
the CPU count minus the busy ones, from the load average and the tasks runnable now, so one
on a busy 2-core machine), or
``--workers N`` (given to it as ``PREFOPT_THREADS``); each run prints how many it used.
Run::

    python benchmarks/flip_speed.py                      # 200k rows, 5 alternating repeats
    python benchmarks/flip_speed.py --rows 50000 --repeat 1
    python benchmarks/flip_speed.py --workers 1          # the single-process path
    python benchmarks/flip_speed.py --no-simdjson        # the fallback without pysimdjson
    python benchmarks/flip_speed.py --overwrite          # replace the output each run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_rows(count: int, seed: int = 0):
    """Deterministic synthetic pairs resembling real preference data."""
    rng = random.Random(seed)
    words = ["model", "answer", "factual", "the", "capital", "of", "is", "Paris", "Berlin",
             "because", "data", "error", "correct", "über", "naïve", "日本"]  # fmt: skip

    def text(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    for index in range(count):
        yield {
            "id": f"pair-{index}",
            "prompt": text(30),
            "chosen": text(70),
            "rejected": text(70),
            "h_w": rng.randint(0, 1),
            "h_l": rng.randint(0, 1),
            "source": "synthetic",
            "score": round(rng.random(), 4),
        }


def write_input(path: Path, count: int) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for row in make_rows(count):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def naive_flip(source: Path, target: Path) -> int:
    """The baseline: standard-library json, one row at a time."""
    count = 0
    with open(source, encoding="utf-8") as handle, open(target, "w", encoding="utf-8") as out:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            swap = row["h_w"] == 1 and row["h_l"] == 0
            if swap:
                row["chosen"], row["rejected"] = row["rejected"], row["chosen"]
                row["h_w"], row["h_l"] = 0, 1
            row["flipped"] = swap
            out.write(json.dumps(row) + "\n")
            count += 1
    return count


def measure(function) -> tuple[float, float, str]:
    """Wall-clock and CPU seconds of one call, and its summary's process count."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    used = getattr(result[1], "workers", 1) if isinstance(result, tuple) else 1
    return time.perf_counter() - wall, time.process_time() - cpu, f"({used} processes)"


def measure_process(
    command: list[str], env: dict[str, str], output: Path, overwrite: bool, check: bool = True
) -> tuple[float, float, str]:
    """Wall-clock seconds of a whole process, start to exit, its CPU seconds (children
    included: a pool's workers count) and what it printed. Unless ``overwrite``, the
    previous run's ``output`` is deleted first (untimed), as for a user's first run. With
    ``check``, a failing exit status raises."""
    if not overwrite:
        output.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    done = subprocess.run(command, check=check, env=env, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, done.stdout


def processes_used(printed: str) -> int:
    """The process count ``prefopt data flip`` reports ("... (2 processes)"), 1 if none."""
    found = re.search(r"\((\d+) processes\)", printed)
    return int(found.group(1)) if found else 1


def race(contestants: dict, repeat: int) -> dict[str, list[tuple[float, float, float]]]:
    """(wall, cpu, load average before) of every run (a contestant returns wall, cpu and what
    it printed); the contestants alternate, and swap
    who goes first each repeat, so background load and a warm page cache hit both."""
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in contestants}
    names = list(contestants)
    for index in range(repeat):
        for name in names if index % 2 == 0 else names[::-1]:
            load = os.getloadavg()[0]
            wall, cpu, printed = contestants[name]()
            runs[name].append((wall, cpu, load))
            used = f", {processes_used(printed)} process(es)" if name == "prefopt" else ""
            print(f"  repeat {index + 1}: {name:8s} {wall:6.2f} s wall {cpu:6.2f} s cpu  "
                  f"(load average before: {load:.2f}{used})", flush=True)  # fmt: skip
    return runs


def prefopt_command() -> list[str]:
    found = shutil.which("prefopt", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "prefopt"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=None, help="where to put the files")
    parser.add_argument(
        "--workers", default="auto", help="prefopt's processes (default: its own choice)"
    )
    parser.add_argument("--inline", action="store_true", help="time functions, not processes")
    parser.add_argument(
        "--no-simdjson", action="store_true", help="measure the orjson-only fallback"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="each run replaces the previous run's output (prefopt with --force, the naive "
        "loop truncating it) instead of writing a new file",
    )
    parser.add_argument("--naive-worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.naive_worker:
        naive_flip(*args.naive_worker)
        return 0
    env = dict(os.environ)
    if args.workers != "auto":
        env["PREFOPT_THREADS"] = args.workers
    if args.no_simdjson:
        sys.modules["simdjson"] = None  # type: ignore[assignment]  # makes the import fail
        # the same for the prefopt process: a folder whose simdjson.py fails to import
        blocker = Path(tempfile.mkdtemp(prefix="no-simdjson-"))
        (blocker / "simdjson.py").write_text("raise ImportError('blocked by the benchmark')\n")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(blocker), env.get("PYTHONPATH")]))

    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        source = folder / "pairs.jsonl"
        write_input(source, args.rows)
        size_mb = source.stat().st_size / 1e6
        naive_out = folder / "naive.jsonl"
        ours_out = folder / "ours.jsonl"
        if args.inline:
            from prefopt.data.flip import flip_file

            workers = None if args.workers == "auto" else int(args.workers)
            contestants = {
                "naive": lambda: measure(lambda: naive_flip(source, naive_out)),
                "prefopt": lambda: measure(
                    lambda: flip_file(source, ours_out, force=True, workers=workers)
                ),
            }
        else:
            naive = [sys.executable, __file__, "--naive-worker", str(source), str(naive_out)]
            ours = [*prefopt_command(), "data", "flip", str(source), "-o", str(ours_out)]
            if args.overwrite:  # the previous run's output is replaced
                ours.append("--force")
            contestants = {
                "naive": lambda: measure_process(naive, env, naive_out, args.overwrite),
                "prefopt": lambda: measure_process(ours, env, ours_out, args.overwrite),
            }
        print(f"input: {args.rows} rows, {size_mb:.0f} MB; {args.repeat} alternating repeats, "
              f"{'inline' if args.inline else 'whole processes'}, prefopt workers "
              f"{args.workers}, {os.cpu_count()} CPUs")  # fmt: skip
        runs = race(contestants, args.repeat)

        # Same rows, same values: the outputs differ only in JSON whitespace/escaping.
        with open(naive_out, encoding="utf-8") as a, open(ours_out, encoding="utf-8") as b:
            for line_a, line_b in zip(a, b, strict=True):
                if json.loads(line_a) != json.loads(line_b):
                    print("outputs differ", file=sys.stderr)
                    return 1

    parser_name = "orjson only" if args.no_simdjson else "simdjson + orjson"
    print(f"prefopt flip JSON path: {parser_name}; load average now {os.getloadavg()[0]:.2f}")
    print(f"{'':16}  {'median wall s':>13}  {'best wall s':>11}  {'median cpu s':>12}  "
          f"{'rows/s (median)':>15}")  # fmt: skip
    medians = {}
    for name, label in (("naive", "naive json loop"), ("prefopt", "prefopt flip")):
        wall = statistics.median(run[0] for run in runs[name])
        cpu = statistics.median(run[1] for run in runs[name])
        best = min(run[0] for run in runs[name])
        medians[name] = (wall, cpu)
        print(f"{label:16}  {wall:13.2f}  {best:11.2f}  {cpu:12.2f}  {args.rows / wall:15,.0f}")
    paired = [a[0] / b[0] for a, b in zip(runs["naive"], runs["prefopt"], strict=True)]
    print(
        f"speed ratio: {medians['naive'][0] / medians['prefopt'][0]:.2f}x wall (medians), "
        f"{medians['naive'][1] / medians['prefopt'][1]:.2f}x cpu; paired wall ratios "
        f"{', '.join(f'{r:.2f}' for r in paired)} (median {statistics.median(paired):.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
