"""WaAP's own cost while it profiles: the CPU time and resident memory of the `waap run` process during a run of
an idle app (so everything measured is WaAP's), sampled from outside with psutil.

    .venv/bin/python bench/self_cost.py [--seconds 60] [--interval 1] [--metrics system,container,custom]

Targets (issue 3): at most 2 % of one core and 80 MB RSS for a 60 s run at a 1 s interval. The `docker run` CLI
doing the same wait is measured in the same run as the baseline. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import psutil


def watch(cmd: Sequence[str], poll_s: float = 0.5) -> Dict[str, float]:
    """Run ``cmd`` and follow its process: CPU seconds (user + system, itself only), peak and last RSS."""
    start = time.monotonic()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    rss: List[int] = []
    cpu = 0.0
    while proc.poll() is None:
        try:
            with ps.oneshot():
                times = ps.cpu_times()
                cpu = times.user + times.system
                rss.append(ps.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(poll_s)
    wall = time.monotonic() - start
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {err.strip()[-500:]}")
    return {"wall_s": wall, "cpu_s": cpu, "cpu_pct_of_core": 100 * cpu / wall, "rss_peak_mb": max(rss) / 2**20}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--interval", default="1")
    parser.add_argument("--metrics", default="system,container,custom")
    parser.add_argument("--image", default="waap-base:bookworm")
    ns = parser.parse_args(argv)
    waap = str(Path(sys.executable).with_name("waap"))
    with tempfile.TemporaryDirectory(prefix="waap-self-") as out:
        cmd = [waap, "run", "--image", ns.image, "--args", f"sleep {ns.seconds}", "--metrics", ns.metrics,
               "--interval", ns.interval, "-o", out, "-q"]
        measured = watch(cmd)
        samples = sum(1 for p in Path(out).glob("*/*/samples.jsonl") for _ in p.open())
    baseline = watch(["docker", "run", "--rm", ns.image, "sleep", str(ns.seconds)])
    print(f"waap run, {ns.seconds} s idle app, metrics {ns.metrics}, interval {ns.interval} s ({samples} samples)")
    print(f"{'process':<12} {'wall s':>8} {'CPU s':>8} {'% of a core':>12} {'peak RSS MB':>12}")
    for name, r in (("waap run", measured), ("docker run", baseline)):
        print(f"{name:<12} {r['wall_s']:8.1f} {r['cpu_s']:8.2f} {r['cpu_pct_of_core']:12.2f} {r['rss_peak_mb']:12.1f}")
    print(f"targets: <= 2 % of one core -> {measured['cpu_pct_of_core']:.2f} %; "
          f"<= 80 MB RSS -> {measured['rss_peak_mb']:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
