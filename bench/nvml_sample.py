#!/usr/bin/env python3
"""What one sample of the NVML collector costs on this machine's NVIDIA GPUs: ``NvmlCollector.sample()`` with the
real nvidia-ml-py and driver, timed one call at a time with ``perf_counter_ns``, beside a baseline measured in the
same run: one bare ``nvmlDeviceGetMemoryInfo`` call per GPU (the least a GPU sample can ask).

Prints the GPUs, the fields NVML does not support on them (left out by the collector), and the median, p95 and max
time per sample in ms, and the ratio to the baseline. Target (issue): one NVML sample ≤ 2 ms where a GPU is
present. Without a GPU (no driver, no library, no nvidia-ml-py) it says why and exits 0: there is nothing to
measure. The app's own GPU memory (a process scan) is measured with a process of this machine standing in for the
app's container: ``--app-pid`` (default: this process). This is a benchmark, not a test: it asserts nothing.

    .venv/bin/python bench/nvml_sample.py
    .venv/bin/python bench/nvml_sample.py --samples 2000 --json
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tegrastats_parse import spread  # noqa: E402  (bench/ is on sys.path when a script of it runs)

from profiler.collectors.base import RunContext, Unavailable  # noqa: E402
from profiler.collectors.nvml import NvmlCollector  # noqa: E402


def _time(call: Any, n: int) -> List[int]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - t0)
    return times


def _baseline(nv: Any, handles: List[Any]) -> Any:
    """The least a GPU sample asks: every GPU's memory use, or, where NVML refuses that, a device count."""
    try:
        for h in handles:
            nv.nvmlDeviceGetMemoryInfo(h)
    except nv.NVMLError:
        return nv.nvmlDeviceGetCount
    return lambda: [nv.nvmlDeviceGetMemoryInfo(h) for h in handles]


def _ask(nv: Any, name: str, *args: Any) -> str:
    """A descriptive NVML value as text, or "?" when this NVML cannot say."""
    try:
        value = getattr(nv, name)(*args)
    except Exception:  # an NVML error or an old binding: only the label is lost
        return "?"
    return value.decode() if isinstance(value, bytes) else str(value)


def _own_container_id(pid: int) -> str:
    """The container id in ``pid``'s cgroup, or a placeholder: the collector maps GPU processes through it."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return "0" * 64
    for line in text.splitlines():
        for part in line.split("/"):
            word = part.rsplit("-", 1)[-1].removesuffix(".scope")
            if len(word) == 64 and all(c in "0123456789abcdef" for c in word):
                return word
    return "0" * 64


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000, help="timed samples (default 1000)")
    parser.add_argument("--app-pid", type=int, default=os.getpid(), help="the process standing in for the app")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="waap-nvml-bench-"))
    ctx = RunContext(run_id="bench", container_id=_own_container_id(args.app_pid), container_pid=args.app_pid,
                     run_dir=tmp, output_dir=tmp, interval_s=1.0)
    collector = NvmlCollector()
    try:
        collector.start(ctx, lambda *a, **k: None)
    except Unavailable as e:
        print(f"nothing to measure: the NVML collector is unavailable here: {e}")
        return 0
    try:
        nv: Any = importlib.import_module("pynvml")  # the module the collector loaded, NVML initialised
        handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
        gpus = [_ask(nv, "nvmlDeviceGetName", h) for h in handles]
        driver = _ask(nv, "nvmlSystemGetDriverVersion")
        for _ in range(20):  # warm-up: first calls set up NVML's caches
            collector.sample(time.time_ns())
        first = collector.sample(time.time_ns()) or {}
        sample_ns = _time(lambda: collector.sample(time.time_ns()), args.samples)
        baseline = _baseline(nv, handles)
        base_ns = _time(baseline, args.samples)
    finally:
        collector.stop()
    result: Dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "gpus": gpus,
        "driver": driver,
        "metrics_per_sample": len(first),
        "left_out": collector.status.reason,
        "sample": spread(sample_ns, "ms"),
        "baseline_memory_info": spread(base_ns, "ms"),
    }
    result["ratio_median"] = result["sample"]["median_ms"] / max(result["baseline_memory_info"]["median_ms"],
                                                                1e-9)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"GPUs: {', '.join(gpus)} (driver {driver}); {len(first)} metrics per sample")
    if collector.status.reason:
        print(f"left out / notes: {collector.status.reason}")
    s, b = result["sample"], result["baseline_memory_info"]
    print(f"one sample:            median {s['median_ms']:.3f} ms, p95 {s['p95_ms']:.3f} ms, max {s['max_ms']:.3f} ms "
          f"({s['calls']} samples)")
    print(f"baseline (memory info):  median {b['median_ms']:.3f} ms, p95 {b['p95_ms']:.3f} ms")
    print(f"ratio sample / baseline (medians): {result['ratio_median']:.1f}   target: one sample <= 2 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
