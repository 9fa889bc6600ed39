#!/usr/bin/env python3
"""What ``plugin.metric(...).inc()`` costs inside the app, beside prometheus_client's ``Counter.inc()`` measured in
the same run.

The app side runs as it would under ``waap run``: ``WAAP_METRICS_SOCKET`` points at a real ``MetricsServer`` (a
thread of this process), so the counter is the real one and the client's flush thread runs beside the loop (every
``WAAP_METRICS_FLUSH_S``, default 1 s). Each round times ``--calls`` back-to-back calls of a bound method with
``timeit`` (a C loop, no Python loop overhead) for every contender in turn, in rotating order; a call's cost is the
round's time divided by the calls, and the figure reported is the median over the rounds (also min and p90). One call
is far below the clock's resolution, hence batches. ``timeit`` disables the garbage collector while it times, for
every contender alike. The "empty" row is the same loop calling a method that does nothing: the floor every row
includes.

It checks at the end that the server received exactly the total counted. It asserts nothing about time; the
target (issue): median ≤ 0.5 µs and ratio to prometheus_client ≤ 1.

    python3 bench/plugin_inc.py                  # 31 rounds of 200 000 calls each: about 30 s
    python3 bench/plugin_inc.py --rounds 11 --calls 100000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client import Counter as PromCounter  # noqa: E402

from profiler.channel import ENV_SOCKET, MetricsServer  # noqa: E402
from profiler.collectors import Sample  # noqa: E402


class _Empty:
    __slots__ = ()

    def inc(self, n: float = 1) -> None:
        pass


def measure(fn: Callable[[], Any], calls: int) -> float:
    """Seconds per call of ``fn`` over one batch of ``calls``."""
    return timeit.Timer(fn).timeit(number=calls) / calls


def benchmark(rounds: int, calls: int) -> Dict[str, Any]:
    samples: List[Sample] = []
    with tempfile.TemporaryDirectory(prefix="waap-bench-") as tmp:
        server = MetricsServer(Path(tmp) / "sock", sink=samples.append)
        server.start()
        os.environ[ENV_SOCKET] = str(server.path)
        from profiler import plugin  # the module-level client reads the environment at its first use

        fps = plugin.metric("fps")
        timer = plugin.timer("infer")
        gauge = plugin.gauge("queue")
        prom = PromCounter("frames", "frames processed", registry=CollectorRegistry())
        noop = plugin._NoopClient().metric("fps")  # what an app gets when it is not profiled

        def timed_block() -> None:
            with timer:
                pass

        def set_gauge() -> None:
            gauge.set(3)

        def lookup_and_inc() -> None:
            plugin.metric("fps").inc()

        contenders: Dict[str, Callable[[], Any]] = {
            "plugin Counter.inc()": fps.inc,
            "prometheus_client Counter.inc()": prom.inc,
            "empty method call": _Empty().inc,
            "plugin, not profiled: inc()": noop.inc,
            "plugin.metric('fps').inc() (lookup each call)": lookup_and_inc,
            "plugin Gauge.set(3)": set_gauge,
            "plugin `with timer:` (empty block)": timed_block,
        }
        counted = {"plugin Counter.inc()": 0, "plugin.metric('fps').inc() (lookup each call)": 0}
        per_call: Dict[str, List[float]] = {name: [] for name in contenders}
        names = list(contenders)
        for _ in range(2):  # warm-up: caches, the flush thread's first connection
            for name in names:
                measure(contenders[name], calls // 10)
                counted[name] = counted.get(name, 0) + calls // 10
        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                per_call[name].append(measure(contenders[name], calls))
                counted[name] = counted.get(name, 0) + calls
        expected = counted["plugin Counter.inc()"] + counted["plugin.metric('fps').inc() (lookup each call)"]
        delivered = plugin.flush(5.0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            totals = [s.values["app.fps.total"] for s in samples if "app.fps.total" in s.values]
            if totals and totals[-1] == expected:
                break
            time.sleep(0.01)
        server.stop()
        received = [s.values["app.fps.total"] for s in samples if "app.fps.total" in s.values]

    rows = {}
    for name, values in per_call.items():
        ordered = sorted(values)
        rows[name] = {
            "median_ns": statistics.median(values) * 1e9,
            "min_ns": ordered[0] * 1e9,
            "p90_ns": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] * 1e9,
        }
    plugin_ns = rows["plugin Counter.inc()"]["median_ns"]
    prom_ns = rows["prometheus_client Counter.inc()"]["median_ns"]
    return {
        "machine": {"python": platform.python_version(), "nproc": os.cpu_count(), "kernel": platform.release()},
        "rounds": rounds,
        "calls_per_round": calls,
        "rows": rows,
        "plugin_median_ns": plugin_ns,
        "prometheus_median_ns": prom_ns,
        "ratio_plugin_to_prometheus": plugin_ns / prom_ns,
        "target": "median <= 500 ns, ratio <= 1",
        "check": {"flushed": delivered, "incs_counted": expected, "server_total": received[-1] if received else None,
                  "exact": bool(received) and received[-1] == expected},
    }


def report(result: Dict[str, Any]) -> str:
    lines = [
        f"plugin_inc: {result['rounds']} rounds x {result['calls_per_round']} calls, Python "
        f"{result['machine']['python']}, {result['machine']['nproc']} CPUs",
        f"{'per call':<48} {'median':>9} {'min':>9} {'p90':>9}",
    ]
    for name, row in result["rows"].items():
        lines.append(f"{name:<48} {row['median_ns']:>7.1f}ns {row['min_ns']:>7.1f}ns {row['p90_ns']:>7.1f}ns")
    check = result["check"]
    lines += [
        "",
        f"plugin Counter.inc() median {result['plugin_median_ns']:.1f} ns (target <= 500 ns); "
        f"ratio to prometheus_client Counter.inc() {result['ratio_plugin_to_prometheus']:.2f} (target <= 1)",
        f"server received total {check['server_total']} for {check['incs_counted']} increments: "
        f"{'exact' if check['exact'] else 'MISMATCH'}",
    ]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=31, help="rounds, each timing every contender (default 31)")
    parser.add_argument("--calls", type=int, default=200_000, help="calls per timed batch (default 200000)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    ns = parser.parse_args(argv)
    if ns.rounds < 1 or ns.calls < 10:
        parser.error("--rounds must be at least 1 and --calls at least 10")
    result = benchmark(ns.rounds, ns.calls)
    print(json.dumps(result, indent=2) if ns.json else report(result))
    return 0 if result["check"]["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
