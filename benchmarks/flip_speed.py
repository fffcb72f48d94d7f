"""Side-by-side speed of ``prefopt data flip`` and a naive json.loads/json.dumps loop.

Generates a JSONL file of preference pairs (200k rows by default, about 1 KB each, with
``h_w``/``h_l`` flags drawn uniformly from the four combinations), then times:

* **naive**: the loop everyone writes first — ``for line in f: row = json.loads(line)``,
  swap chosen/rejected for (1, 0) rows, ``f.write(json.dumps(row) + "\\n")``;
* **prefopt**: :func:`prefopt.data.flip.flip_file` (orjson, batched writes, atomic output,
  full validation of the h flags and a summary).

Both read and write the same files on the same disk; each is run ``--repeat`` times and the
best time is kept. Prints rows/s for each and the speed ratio. Run::

    python benchmarks/flip_speed.py            # 200k rows
    python benchmarks/flip_speed.py --rows 50000 --repeat 1
    python benchmarks/flip_speed.py --no-simdjson   # the fallback without pysimdjson
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from prefopt.data.flip import flip_file


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


def measure(function) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def race(naive, ours, repeat: int) -> dict[str, tuple[float, float]]:
    """Best (wall, cpu) of each contestant; runs alternate so background load hits both."""
    best = {"naive": (float("inf"),) * 2, "ours": (float("inf"),) * 2}
    for _ in range(repeat):
        for name, function in (("naive", naive), ("ours", ours)):
            wall, cpu = measure(function)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=None, help="where to put the files")
    parser.add_argument(
        "--no-simdjson", action="store_true", help="measure the orjson-only fallback"
    )
    args = parser.parse_args(argv)
    if args.no_simdjson:
        sys.modules["simdjson"] = None  # type: ignore[assignment]  # makes the import fail

    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        source = folder / "pairs.jsonl"
        write_input(source, args.rows)
        size_mb = source.stat().st_size / 1e6
        naive_out = folder / "naive.jsonl"
        ours_out = folder / "ours.jsonl"

        best = race(
            lambda: naive_flip(source, naive_out),
            lambda: flip_file(source, ours_out, force=True),
            args.repeat,
        )

        # Same rows, same values: the outputs differ only in JSON whitespace/escaping.
        with open(naive_out, encoding="utf-8") as a, open(ours_out, encoding="utf-8") as b:
            for line_a, line_b in zip(a, b, strict=True):
                if json.loads(line_a) != json.loads(line_b):
                    print("outputs differ", file=sys.stderr)
                    return 1

    (naive_wall, naive_cpu), (ours_wall, ours_cpu) = best["naive"], best["ours"]
    parser_name = "orjson only" if args.no_simdjson else "simdjson + orjson"
    print(f"input: {args.rows} rows, {size_mb:.0f} MB; best of {args.repeat}, interleaved")
    print(f"prefopt flip JSON path: {parser_name}")
    print(f"{'':16}  {'wall s':>7}  {'cpu s':>7}  {'rows/s (wall)':>14}")
    for name, (wall, cpu) in (("naive json loop", best["naive"]), ("prefopt flip", best["ours"])):
        print(f"{name:16}  {wall:7.2f}  {cpu:7.2f}  {args.rows / wall:14,.0f}")
    print(f"speed ratio: {naive_wall / ours_wall:.2f}x wall, {naive_cpu / ours_cpu:.2f}x cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
