#!/usr/bin/env python3
"""What ``waap-submit`` adds to a build: its wall time minus the build's own duration, against the fake Jenkins of
the tests (``tests/jenkins_fake.py``) running builds of a fixed duration that archive a minimal run directory.

Each run launches ``python -m profiler.submit_cli --app-name … --output DIR`` (default polling) and measures
``perf_counter`` around it. The fake records when each request arrived and when the build stopped building, which
splits the overhead into:

* start-up   launch → first request (interpreter, imports, local validation, settings);
* submit     first request → the build started (job check, trigger, first queue poll);
* lag        the build stopped → the request that saw it (polling: pauses grow from 0.25 s to --poll, and one poll
             is aimed at the end Jenkins expects from earlier builds of the job, which helps only when this build
             is as long as those: give several durations to see the other case);
* finish     that request → the process exited (final build JSON, artifact download and extraction, summary).

overhead = wall − build duration = start-up + submit + lag + finish. This is a benchmark, not a test: it asserts
nothing about time and exits non-zero only when a submission fails. Target (issue): overhead ≤ 1 s.

    .venv/bin/python bench/submit_overhead.py                   # 7 runs of 3 s builds
    .venv/bin/python bench/submit_overhead.py --runs 15 --build-seconds 5 --poll 2 --json
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
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from profiler.pipeline.params import PARAMETERS  # noqa: E402
from profiler.submit_cli import POLL_S  # noqa: E402
from tests.jenkins_fake import FakeJenkins, config_xml, run_directory_executor  # noqa: E402

JOB = "nvidia-nx-profiling-pipeline"
TARGET_S = 1.0
SUMMARY = {"metrics": {"system.cpu.percent": {"count": 3, "mean": 12.0, "p50": 11.0, "p95": 20.0, "max": 21.0,
                                              "last": 10.0, "unit": "percent", "kind": "gauge"}}}


def one_run(fake: FakeJenkins, n: int, workdir: Path, poll: float) -> Dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JENKINS_", "WAAP_"))}
    env.update(JENKINS_URL=fake.url, JENKINS_USER="admin", JENKINS_TOKEN=fake.token(), NO_PROXY="127.0.0.1",
               PYTHONPATH=str(REPO))
    seen_before = len(fake.requests)
    launched = time.monotonic()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "profiler.submit_cli", "--app-name", "waggle/plugin-objectcounter:0.0.0",
         "--output", str(workdir / f"run-{n}"), "--poll", str(poll), "--quiet"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600,
    )
    wall = time.perf_counter() - t0
    exited = time.monotonic()
    if proc.returncode != 0:
        raise SystemExit(f"waap-submit failed ({proc.returncode}): {proc.stderr}")
    build = fake.builds(JOB)[-1]
    requests = fake.requests[seen_before:]
    assert build.ended is not None
    saw_end = min(r.at for r in requests if r.at >= build.ended and f"/{build.number}/api/json" in r.path)
    return {
        "build": build.number,
        "estimate_ms": build.estimated_ms,
        "wall_s": wall,
        "build_s": build.duration_ms / 1000,
        "overhead_s": wall - build.duration_ms / 1000,
        "startup_s": requests[0].at - launched,
        "submit_s": build.started - requests[0].at,
        "lag_s": saw_end - build.ended,
        "finish_s": exited - saw_end,
        "requests": len(requests),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--build-seconds", default="3", metavar="S[,S…]",
                        help="build duration; a list is cycled through, so that Jenkins' estimate (from earlier "
                             "builds of the job) is off, as with profiles of different lengths (default 3)")
    parser.add_argument("--poll", type=float, default=POLL_S, help=f"waap-submit --poll (default: its own, {POLL_S:g})")
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args()

    durations = [float(d) for d in ns.build_seconds.split(",")]
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="waap-submit-bench-") as tmp, FakeJenkins() as fake:
        fake.add_job(JOB, config_xml((p.name, p.kind, p.default) for p in PARAMETERS))
        for n in range(1, ns.runs + 1):
            fake.executor = run_directory_executor(seconds=durations[(n - 1) % len(durations)], summary=SUMMARY)
            row = one_run(fake, n, Path(tmp), ns.poll)
            rows.append(row)
            print(f"run {n}: wall {row['wall_s']:.3f}s  build {row['build_s']:.3f}s  overhead "
                  f"{row['overhead_s']:.3f}s", file=sys.stderr)

    keys = ("overhead_s", "startup_s", "submit_s", "lag_s", "finish_s")
    median = {k: statistics.median(r[k] for r in rows) for k in keys}
    repeat = {k: statistics.median(r[k] for r in rows[1:]) for k in keys} if len(rows) > 1 else median
    result = {"runs": rows, "median": median, "median_after_first": repeat, "target_overhead_s": TARGET_S,
              "build_seconds": durations, "poll_s": ns.poll, "python": platform.python_version(),
              "machine": platform.machine(), "cpus": os.cpu_count()}
    if ns.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"waap-submit overhead over builds of {ns.build_seconds} s, {ns.runs} runs, --poll {ns.poll:g} "
          f"(Python {platform.python_version()}, {os.cpu_count()} CPUs)")
    print(f"{'run':>3} {'estimate':>9} {'wall':>7} {'build':>7} {'overhead':>9} {'start-up':>9} {'submit':>7} "
          f"{'lag':>6} {'finish':>7} {'requests':>8}")
    for r in rows:
        estimate = "-" if r["estimate_ms"] < 0 else f"{r['estimate_ms'] / 1000:.2f}s"
        print(f"{r['build']:>3} {estimate:>9} {r['wall_s']:>6.3f}s {r['build_s']:>6.3f}s {r['overhead_s']:>8.3f}s "
              f"{r['startup_s']:>8.3f}s {r['submit_s']:>6.3f}s {r['lag_s']:>5.3f}s {r['finish_s']:>6.3f}s "
              f"{r['requests']:>8}")
    for label, m in (("median", median), ("median, runs 2+", repeat)):
        print(f"{label:>16}: overhead {m['overhead_s']:.3f}s (start-up {m['startup_s']:.3f}, submit "
              f"{m['submit_s']:.3f}, lag {m['lag_s']:.3f}, finish {m['finish_s']:.3f})  target ≤ {TARGET_S:g} s: "
              f"{'met' if m['overhead_s'] <= TARGET_S else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
