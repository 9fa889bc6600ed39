#!/usr/bin/env python3
"""Record what the real pywaggle writes to data.ndjson, for tests/test_pywaggle.py (see README.md here).

Run it with the Python that has pywaggle (the waap-test-pywaggle image). It publishes through pywaggle's public API
with PYWAGGLE_LOG_DIR pointing at a temporary folder, then copies that folder's data.ndjson to OUT_DIR and writes
OUT_DIR/expected.json: per line, the name, the value as published (repr for non-JSON values) and either the exact
timestamp that was passed to publish (ts_ns) or the wall-clock window around a call that let pywaggle take the time
(before_ns, after_ns: time.time_ns(), the clock pywaggle reads).
"""

import json
import os
import shutil
import sys
import tempfile
import time

# timestamps chosen for pywaggle's formatting (datetime.fromtimestamp(ns / 1e9).isoformat() + f"{ns % 1000:03d}"):
# the microseconds are rounded (half-even) from a float, and omitted when they are zero.
EXPLICIT = [
    ("edge.round_up", 1700000000123456789),  # .123457 + 789: the microseconds were rounded up
    ("edge.no_round", 1700000000123456123),  # .123456 + 123
    ("edge.zero_us", 1700000000000000123),  # no ".ffffff" at all: "...:20123"
    ("edge.carry_second", 1700000000999999789),  # rounds up into the next second: "...:21789"
    ("edge.exact_second", 1700000001000000000),  # "...:21000"
    ("edge.half", 1700000000000000500),  # a tie on the nanoseconds
    ("edge.midnight", 1704067199999999600),  # 2023-12-31T23:59:59.9999996 rounds into 2024
]


def main():
    out_dir = sys.argv[1]
    log_dir = tempfile.mkdtemp()
    os.environ["PYWAGGLE_LOG_DIR"] = log_dir
    from waggle.plugin import Plugin

    expected = []

    def natural(name, value, call, **kw):
        before = time.time_ns()
        call()
        expected.append(dict(name=name, value=value, before_ns=before, after_ns=time.time_ns(), **kw))

    with Plugin() as plugin:
        for i, (name, ts) in enumerate(EXPLICIT):
            plugin.publish(name, float(i), timestamp=ts)
            expected.append({"name": name, "value": float(i), "ts_ns": ts})
        natural("test.fps", 30.5, lambda: plugin.publish("test.fps", 30.5, meta={"camera": "left", "note": "ünï"}))
        natural("test.int", 42, lambda: plugin.publish("test.int", 42))
        natural("test.bool", True, lambda: plugin.publish("test.bool", True))
        natural("test.negative", -1.25e-7, lambda: plugin.publish("test.negative", -1.25e-7))
        natural("test.nan", "nan", lambda: plugin.publish("test.nan", float("nan")))
        natural("test.inf", "inf", lambda: plugin.publish("test.inf", float("inf")))
        natural("test.huge_int", "10**400", lambda: plugin.publish("test.huge_int", 10**400))
        natural("test.text", "hello", lambda: plugin.publish("test.text", "hello", meta={"kind": "text"}))

        def timed():
            with plugin.timeit("test.inference"):
                time.sleep(0.01)

        natural("test.inference", "duration_ns", timed, min_value=10_000_000)
        path = os.path.join(tempfile.mkdtemp(), "frame.jpg")
        with open(path, "wb") as f:
            f.write(b"not really a jpeg")
        natural("upload", "path", lambda: plugin.upload_file(path, meta={"camera": "left"}))

    os.makedirs(out_dir, exist_ok=True)
    shutil.copyfile(os.path.join(log_dir, "data.ndjson"), os.path.join(out_dir, "data.ndjson"))
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump({"tz": os.environ.get("TZ", ""), "lines": expected}, f, indent=1)
        f.write("\n")
    shutil.rmtree(log_dir)


if __name__ == "__main__":
    main()
