#!/usr/bin/env python3
"""A pywaggle plugin as Waggle apps write them, unchanged for WaAP: it only uses pywaggle's public API.

Each step publishes ``test.fps`` (30.0 + step, meta camera=left), ``test.step`` (the step, an int) and times a short
sleep with ``plugin.timeit("test.inference")``. Once it publishes ``test.fixed`` with an explicit timestamp and
uploads a small file (pywaggle records uploads as string values named ``upload``). With ``PYWAGGLE_LOG_DIR`` set,
pywaggle appends every one of these to ``$PYWAGGLE_LOG_DIR/data.ndjson``; no RabbitMQ is needed for that.

stdout gets one JSON line per publish with the host-independent facts a test can check: name, value, and the
wall-clock nanoseconds just before and just after the call.
"""

import argparse
import json
import os
import tempfile
import time

from waggle.plugin import Plugin

FIXED_TS_NS = 1700000000123456789  # 2023-11-14T22:13:20.123456789Z


def report(name, value, before_ns, after_ns):
    print(json.dumps({"name": name, "value": value, "before_ns": before_ns, "after_ns": after_ns}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10, help="steps (default 10)")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between steps (default 0.05)")
    args = parser.parse_args()

    with Plugin() as plugin:
        before = time.time_ns()
        plugin.publish("test.fixed", 1.5, meta={"kind": "fixed"}, timestamp=FIXED_TS_NS)
        report("test.fixed", 1.5, before, time.time_ns())
        for step in range(args.count):
            value = 30.0 + step
            before = time.time_ns()
            plugin.publish("test.fps", value, meta={"camera": "left"})
            report("test.fps", value, before, time.time_ns())
            before = time.time_ns()
            plugin.publish("test.step", step)
            report("test.step", step, before, time.time_ns())
            before = time.time_ns()
            with plugin.timeit("test.inference"):
                time.sleep(0.01)
            report("test.inference", None, before, time.time_ns())
            time.sleep(args.interval)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("hello from pywaggle\n")
        before = time.time_ns()
        plugin.upload_file(f.name, meta={"kind": "upload"})
        report("upload", os.path.basename(f.name), before, time.time_ns())
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    main()
