#!/usr/bin/env python3
"""How many messages per second the metrics socket's server takes in from one client, with nothing valid dropped.

The server is a real ``MetricsServer`` (its own thread in this process). The client is a separate Python process
(no shared GIL) that connects and writes ``--messages`` protocol lines, prepared before the clock starts, as fast as
the socket takes them. The rate is measured on the server's side: from the sample of the first message to the sample
of the last, as the sink sees them (the sink is where the runner writes ``samples.jsonl``); "end to end" is from the
client's first write (``time.monotonic``, one clock for both processes on Linux) to that last sample.

Sinks: ``count`` (counts the samples: the server's own cost) and ``jsonl`` (the runner's way: every sample is a line
of a ``samples.jsonl``, written and flushed by ``profiler.rundir.JsonlWriter``). Mixes: ``counter`` (running totals,
as profiler/plugin.py sends them) and ``mixed`` (counters, increments, gauges, single and aggregated timers, events
with attributes, in turn).

After every round it checks that every message was accepted, none rejected, one sample came per message, and the
counter's last total is the expected one. It asserts nothing about time; target (issue): ≥ 100 000 messages/s.

    python3 bench/socket_ingest.py                       # 5 rounds of 300 000 messages, count and jsonl sinks
    python3 bench/socket_ingest.py --rounds 9 --messages 500000 --sink count --mix mixed --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from profiler.channel import MetricsServer  # noqa: E402
from profiler.collectors import Sample  # noqa: E402
from profiler.rundir import JsonlWriter  # noqa: E402

# The client: builds its lines first, connects, prints the monotonic time of its first write, writes everything.
CLIENT = r"""
import json, os, socket, sys, time
path, n, mix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
src = "bench-%d" % os.getpid()
now = time.time_ns()
def message(i):
    if mix == "counter" or i % 6 == 0:
        return {"type": "counter", "name": "frames", "total": i + 1, "src": src, "ts_ns": now}
    kind = i % 6
    if kind == 1:
        return {"type": "counter", "name": "bytes", "inc": 1500}
    if kind == 2:
        return {"type": "gauge", "name": "queue.len", "value": i % 17, "ts_ns": now}
    if kind == 3:
        return {"type": "timer", "name": "infer", "value": 0.031}
    if kind == 4:
        return {"type": "timer", "name": "decode", "count": i, "sum": i * 0.004, "min": 0.003, "max": 0.005,
                "src": src}
    return {"type": "event", "name": "detection", "attrs": {"label": "car", "score": 0.87}, "seq": i, "src": src}
last = n - 1 if mix == "counter" else max(i for i in range(max(0, n - 6), n) if i % 6 == 0)
data = b"".join(json.dumps(message(i), separators=(",", ":")).encode() + b"\n" for i in range(n))
fd = os.open(os.path.dirname(path), os.O_RDONLY)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect("/proc/self/fd/%d/%s" % (fd, os.path.basename(path)))
print(json.dumps({"bytes": len(data), "last_counter_total": last + 1}), flush=True)
sys.stdin.readline()  # go
print(time.monotonic_ns(), flush=True)
sock.sendall(data)
sock.close()
"""


def one_round(n: int, mix: str, sink_kind: str) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="waap-bench-") as tmp:
        seen = {"n": 0, "first_ns": 0, "last_ns": 0, "last_total": None}
        done = threading.Event()
        writer: Optional[JsonlWriter] = JsonlWriter(Path(tmp) / "samples.jsonl") if sink_kind == "jsonl" else None

        def sink(sample: Sample) -> None:
            if writer is not None:
                writer.write(sample.to_json())
            seen["n"] += 1
            if seen["n"] == 1:
                seen["first_ns"] = time.monotonic_ns()
            total = sample.values.get("app.frames.total")
            if total is not None:
                seen["last_total"] = total
            if seen["n"] == n:
                seen["last_ns"] = time.monotonic_ns()
                done.set()

        server = MetricsServer(Path(tmp) / "sock", sink=sink)
        server.start()
        client = subprocess.Popen([sys.executable, "-c", CLIENT, str(server.path), str(n), mix], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert client.stdin is not None and client.stdout is not None
        prepared = json.loads(client.stdout.readline())
        client.stdin.write("\n")
        client.stdin.flush()
        sent_ns = int(client.stdout.readline())
        finished = done.wait(timeout=max(60.0, n / 5000))
        client.wait(timeout=60)
        server.stop()
        if writer is not None:
            writer.close()
        counters = server.counters()
    server_s = (seen["last_ns"] - seen["first_ns"]) / 1e9
    e2e_s = (seen["last_ns"] - sent_ns) / 1e9
    return {
        "messages": n,
        "bytes": prepared["bytes"],
        "complete": finished,
        "server_rate": (n - 1) / server_s if finished and server_s > 0 else 0.0,
        "end_to_end_rate": n / e2e_s if finished and e2e_s > 0 else 0.0,
        "accepted": counters["lines_accepted"],
        "rejected": counters["lines_rejected"],
        "samples": seen["n"],
        "duplicates": counters["duplicates"],
        "nothing_dropped": finished and counters["lines_accepted"] == n and counters["lines_rejected"] == 0
        and seen["n"] == n and seen["last_total"] == prepared["last_counter_total"],
    }


def benchmark(rounds: int, n: int, mixes: Sequence[str], sinks: Sequence[str],
              log: Callable[[str], None]) -> Dict[str, Any]:
    results: Dict[str, Any] = {
        "machine": {"python": platform.python_version(), "nproc": os.cpu_count(), "kernel": platform.release()},
        "rounds": rounds,
        "messages_per_round": n,
        "target": ">= 100000 messages/s from one client, nothing valid dropped",
        "configs": [],
    }
    for mix in mixes:
        for sink in sinks:
            runs: List[Dict[str, Any]] = []
            for r in range(rounds):
                runs.append(one_round(n, mix, sink))
                log(f"  mix={mix} sink={sink} round {r + 1}/{rounds}: {runs[-1]['server_rate']:,.0f} msg/s")
            results["configs"].append({
                "mix": mix,
                "sink": sink,
                "median_server_rate": statistics.median(x["server_rate"] for x in runs),
                "median_end_to_end_rate": statistics.median(x["end_to_end_rate"] for x in runs),
                "min_server_rate": min(x["server_rate"] for x in runs),
                "bytes_per_message": runs[0]["bytes"] / n,
                "nothing_dropped": all(x["nothing_dropped"] for x in runs),
                "runs": runs,
            })
    return results


def report(result: Dict[str, Any]) -> str:
    lines = [
        f"socket_ingest: {result['rounds']} rounds x {result['messages_per_round']:,} messages from one client "
        f"process, Python {result['machine']['python']}, {result['machine']['nproc']} CPUs",
        f"{'mix':<8} {'sink':<6} {'bytes/msg':>9} {'median msg/s':>13} {'min msg/s':>11} {'end-to-end':>11}  "
        "nothing valid dropped",
    ]
    for c in result["configs"]:
        lines.append(
            f"{c['mix']:<8} {c['sink']:<6} {c['bytes_per_message']:>9.0f} {c['median_server_rate']:>13,.0f} "
            f"{c['min_server_rate']:>11,.0f} {c['median_end_to_end_rate']:>11,.0f}  "
            f"{'yes' if c['nothing_dropped'] else 'NO'}"
        )
    lines.append("target: >= 100,000 messages/s (median), nothing valid dropped")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per configuration (default 5)")
    parser.add_argument("--messages", type=int, default=300_000, help="messages per round (default 300000)")
    parser.add_argument("--mix", choices=["counter", "mixed", "both"], default="both")
    parser.add_argument("--sink", choices=["count", "jsonl", "both"], default="both")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    ns = parser.parse_args(argv)
    if ns.rounds < 1 or ns.messages < 12:
        parser.error("--rounds must be at least 1 and --messages at least 12")
    mixes = ["counter", "mixed"] if ns.mix == "both" else [ns.mix]
    sinks = ["count", "jsonl"] if ns.sink == "both" else [ns.sink]
    result = benchmark(ns.rounds, ns.messages, mixes, sinks, lambda text: print(text, file=sys.stderr))
    print(json.dumps(result, indent=2) if ns.json else report(result))
    return 0 if all(c["nothing_dropped"] for c in result["configs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
