#!/usr/bin/env python3
"""What parsing one tegrastats line costs: ``profiler.tegrastats.parse_fields`` on each recorded line of
``tests/data/tegrastats`` (Nano and Xavier NX, JetPack 4 and 5), timed one call at a time with ``perf_counter_ns``.

Prints, per fixture line and over all of them, the median, p95 and max wall time per line in µs. Target (issue):
a line parse ≤ 50 µs. This is a benchmark, not a test: it asserts nothing about time and needs no Jetson.

    .venv/bin/python bench/tegrastats_parse.py
    .venv/bin/python bench/tegrastats_parse.py --repeat 20000 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from profiler.tegrastats import parse_fields  # noqa: E402

DATA = ROOT / "tests" / "data" / "tegrastats"


def spread(ns: List[int], unit: str = "us") -> Dict[str, float]:
    """Median, p95 and max of call times in nanoseconds, in ``unit`` (``us`` or ``ms``), and the number of calls."""
    scale = {"us": 1e3, "ms": 1e6}[unit]
    ordered = sorted(ns)
    return {
        f"median_{unit}": statistics.median(ordered) / scale,
        f"p95_{unit}": ordered[int(0.95 * (len(ordered) - 1))] / scale,
        f"max_{unit}": ordered[-1] / scale,
        "calls": len(ordered),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5000, help="timed parses per fixture line (default 5000)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    lines = {path.name: path.read_text().strip() for path in sorted(DATA.glob("*.txt"))}
    if not lines:
        print(f"no fixture lines in {DATA}", file=sys.stderr)
        return 1
    for line in lines.values():  # warm-up: compiled patterns, allocator
        for _ in range(200):
            parse_fields(line)

    clock = time.perf_counter_ns
    per_line: Dict[str, List[int]] = {}
    for _ in range(args.repeat):  # interleaved, so drift in the machine's state spreads over every line
        for name, line in lines.items():
            t0 = clock()
            parse_fields(line)
            per_line.setdefault(name, []).append(clock() - t0)

    every = [ns for values in per_line.values() for ns in values]
    results: Dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "lines": {name: spread(ns) for name, ns in per_line.items()},
        "all": spread(every),
        "target_us": 50,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"tegrastats line parse, Python {results['python']} on {results['machine']}, {args.repeat} parses a line")
    for name, row in results["lines"].items():
        print(
            f"  {name:26} median {row['median_us']:6.1f} µs  p95 {row['p95_us']:6.1f} µs  max {row['max_us']:7.1f} µs"
        )
    row = results["all"]
    print(f"  {'all lines':26} median {row['median_us']:6.1f} µs  p95 {row['p95_us']:6.1f} µs  (target ≤ 50 µs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
