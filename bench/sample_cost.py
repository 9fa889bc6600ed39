#!/usr/bin/env python3
"""What one sample costs: ``ContainerCollector.sample()`` (and ``SystemCollector.sample()`` when it exists) against
the Docker stats API's ``one-shot`` call, measured in the same run on the same container.

A container from the base image sleeps while we time, one call at a time with ``perf_counter_ns``:

* ``container`` N calls of ``ContainerCollector.sample()`` (its cgroup files and /proc/<pid>/net/dev);
* ``system``    N calls of ``SystemCollector.sample()`` (skipped, with a message, when it cannot be imported);
* ``one-shot``  M calls of ``container.stats(stream=False, one_shot=True)`` (engine API 1.41+);
* ``plain``     K calls of ``container.stats(stream=False)``: what the stats API costs without one-shot (it waits
                for a second reading to compute a CPU rate), the reason the collector reads cgroup files.

The engine reads container stats on its own 1-second tick, and a stats call waits for the next tick (one-shot skips
only the priming one): calls made back to back, as here, line up with the tick and take about 1 s; a call at a
random moment waits 0.5 s on average. Either way it is thousands of times a cgroup read.

For each it prints the median, p95 and max wall time per call in ms, the CPU time per call of this process, and the
ratio of the medians to ``container``'s. Target (issue): a ``container`` sample ≤ 1 ms. This is a benchmark, not a
test: it asserts nothing about time and exits non-zero only when something it needs fails.

    .venv/bin/python bench/sample_cost.py
    .venv/bin/python bench/sample_cost.py --samples 5000 --one-shot 50 --plain 0 --json > sample_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import docker

from profiler.collectors.base import Collector, RunContext
from profiler.collectors.container import ContainerCollector

LABEL = "waap.bench"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure(call: Callable[[], Any], n: int, warmup: int = 0) -> Dict[str, Any]:
    for _ in range(warmup):
        call()
    walls: List[float] = []
    cpu0 = time.process_time_ns()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        call()
        walls.append((time.perf_counter_ns() - t0) / 1e6)
    cpu_ms = (time.process_time_ns() - cpu0) / 1e6 / n
    walls.sort()
    return {
        "calls": n,
        "median_ms": statistics.median(walls),
        "p95_ms": walls[min(n - 1, round(0.95 * (n - 1)))],
        "max_ms": walls[-1],
        "cpu_ms_per_call": cpu_ms,
    }


def sampler(collector: Collector) -> Callable[[], Any]:
    def call() -> Any:
        values = collector.sample(time.time_ns())
        if not values:
            raise RuntimeError(f"{collector.name}: the sample came back empty")
        return values

    return call


def system_collector(ctx: RunContext) -> Optional[Collector]:
    try:
        from profiler.collectors.system import SystemCollector
    except ImportError as e:
        log(f"system: skipped, profiler.collectors.system.SystemCollector cannot be imported ({e})")
        return None
    collector: Collector = SystemCollector()
    collector.start(ctx, lambda s: None)
    return collector


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1000, help="collector samples to time (default 1000)")
    parser.add_argument("--one-shot", type=int, default=20, help="one-shot stats calls to time (default 20)")
    parser.add_argument("--plain", type=int, default=3, help="stats calls without one-shot to time (default 3)")
    parser.add_argument("--image", default=os.environ.get("WAAP_BASE_IMAGE", "waap-base:bookworm"))
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = parser.parse_args(argv)

    client = docker.from_env(timeout=120)
    try:
        client.images.get(args.image)
    except docker.errors.ImageNotFound:
        log(f"pulling {args.image}")
        client.images.pull(args.image)
    container = client.containers.run(
        args.image, ["python3", "-c", "import time; time.sleep(3600)"], detach=True, labels={LABEL: "sample_cost"}
    )
    results: Dict[str, Dict[str, Any]] = {}
    facts: Dict[str, Any] = {}
    try:
        container.reload()
        ctx = RunContext(
            run_id="bench",
            container_id=container.id,
            container_pid=int(container.attrs["State"]["Pid"]),
            run_dir=Path("/nonexistent"),
            output_dir=Path("/nonexistent"),
            interval_s=1.0,
        )
        collector = ContainerCollector()
        collector.start(ctx, lambda s: None)
        facts = {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "docker_api": client.api._version,
            "engine": client.version().get("Version"),
            "container_source": collector.status.reason,
            "metrics_per_container_sample": len(collector.sample(time.time_ns()) or {}),
        }
        log(f"container: {args.samples} samples ({collector.status.reason})")
        results["container"] = measure(sampler(collector), args.samples, warmup=20)
        system = system_collector(ctx)
        if system is not None:
            log(f"system: {args.samples} samples")
            results["system"] = measure(sampler(system), args.samples, warmup=20)
            system.stop()
        if args.one_shot > 0:
            log(f"one-shot: {args.one_shot} calls of container.stats(stream=False, one_shot=True)")
            results["one-shot"] = measure(lambda: container.stats(stream=False, one_shot=True), args.one_shot, 2)
        if args.plain > 0:
            log(f"plain: {args.plain} calls of container.stats(stream=False) (each waits for two readings)")
            results["plain"] = measure(lambda: container.stats(stream=False), args.plain)
    finally:
        container.remove(force=True)
        client.close()

    base = results["container"]["median_ms"]
    for row in results.values():
        row["ratio_to_container"] = row["median_ms"] / base
    if args.json:
        print(json.dumps({"facts": facts, "results": results}, indent=2))
        return 0
    for key, value in facts.items():
        print(f"{key}: {value}")
    print()
    widths = (-10, 6, 10, 9, 9, 12, 12)  # negative: left-aligned
    header = ("source", "calls", "median ms", "p95 ms", "max ms", "cpu ms/call", "× container")
    print(" ".join(f"{h:<{-w}}" if w < 0 else f"{h:>{w}}" for h, w in zip(header, widths)))
    for name, row in results.items():
        print(
            f"{name:<10} {row['calls']:>6} {row['median_ms']:>10.3f} {row['p95_ms']:>9.3f} {row['max_ms']:>9.3f} "
            f"{row['cpu_ms_per_call']:>12.3f} {row['ratio_to_container']:>12.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
