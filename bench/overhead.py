#!/usr/bin/env python3
"""What ``waap run`` costs a CPU-bound app, against a bare ``docker run`` of the same image, measured in one go.

Each pair runs the same app twice, once under each command, in alternating order (docker first in odd pairs, waap
first in even ones) so that drift (thermal, page cache, a noisy neighbour) falls on both sides alike. The app is
``python3 -c CODE N``: its first statement prints ``time.time_ns()``, then it does N iterations of pure-Python
arithmetic, then prints how long that work took (its own ``perf_counter``) and ``time.time_ns()`` again. For each
command we record:

* wall      the command's wall time (``perf_counter`` around ``subprocess.run``), what a user waits for;
* work      the app's own wall-clock measure of its CPU work, inside the container (cpu: its process_time);
* start-up  the app's first ``time_ns`` minus ``time_ns`` just before the command was launched (the container
            shares the host's real-time clock), i.e. from typing the command to the app's first instruction;
* teardown  the command's return minus the app's last ``time_ns``;
* the CPU used by the command's own processes, by the engine's daemons, and by the whole host meanwhile.

For waap runs the run directory's ``events.jsonl`` also splits the start-up into: the waap process up to its first
event (interpreter, imports, engine connection, clean-up of dead runs, image check, device facts), creating the
container, and starting it up to the app's first statement.

This is a benchmark, not a test: it prints ratios against the baseline measured in the same run and asserts
nothing about time. It exits non-zero only when a command fails. Targets (issue): work-time ratio ≤ 1.02,
start-up ≤ 1 s more than ``docker run``.

    python3 bench/overhead.py                 # 5 pairs, ~4 s of work each
    python3 bench/overhead.py --pairs 21 --work-seconds 2 --json > overhead.json
    python3 bench/overhead.py --aa            # A/A control: docker run vs docker run, the noise floor
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent

# Single line on purpose: it goes through `waap run --args` (shell-like splitting) and `docker run` unchanged.
APP_CODE = (
    "import time,sys;print('BENCH_FIRST_NS',time.time_ns(),flush=True);"
    "n=int(sys.argv[1]);p=time.perf_counter();c=time.process_time();s=0\n"
    "for i in range(n): s=(s+i*i)%1000003\n"
    "w=time.perf_counter()-p;c=time.process_time()-c;print('BENCH_WORK_S',repr(w),repr(c),s,flush=True);"
    "print('BENCH_END_NS',time.time_ns(),flush=True)"
)
CALIBRATION_ITERATIONS = 3_000_000


class BenchError(Exception):
    pass


# -- the machine -------------------------------------------------------------------------------------------------
def machine_facts() -> Dict[str, Any]:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    docker_version = _quiet(["docker", "version", "--format", "{{.Server.Version}} (client {{.Client.Version}})"])
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "docker": docker_version,
        "python": platform.python_version(),
    }


def _quiet(cmd: Sequence[str]) -> Optional[str]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def default_waap() -> List[str]:
    beside = Path(sys.executable).parent / "waap"
    if beside.exists():
        return [str(beside)]
    venv = REPO / ".venv" / "bin" / "waap"
    if venv.exists():
        return [str(venv)]
    found = shutil.which("waap")
    if found:
        return [found]
    return [sys.executable, "-m", "profiler.cli"]


def ensure_image(image: str) -> None:
    """Pull the image now if it is missing, so that no measurement includes a pull."""
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False).returncode == 0:
        return
    log(f"image {image} is missing: pulling it before any measurement")
    done = subprocess.run(["docker", "pull", image], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"cannot pull {image}: {done.stderr.strip()}")


# -- one measured command ----------------------------------------------------------------------------------------
def parse_app_output(text: str, what: str) -> Dict[str, Any]:
    found: Dict[str, Any] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "BENCH_FIRST_NS":
            found["first_ns"] = int(parts[1])
        elif parts[0] == "BENCH_WORK_S":
            found["work_s"] = float(parts[1])
            found["work_cpu_s"] = float(parts[2])
        elif parts[0] == "BENCH_END_NS":
            found["end_ns"] = int(parts[1])
    missing = {"first_ns", "work_s", "end_ns"} - found.keys()
    if missing:
        raise BenchError(f"{what}: the app's output lacks {sorted(missing)}:\n{text[-2000:]}")
    return found


def cpu_jiffies() -> Optional[List[int]]:
    """(busy, total) jiffies of the whole host, from /proc/stat; None where there is none."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return [total - idle, total]


ENGINE_DAEMONS = ("dockerd", "containerd")


def engine_pids() -> List[int]:
    """The Docker engine's daemons on this host (none when the engine is remote or in another PID namespace)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ENGINE_DAEMONS:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def engine_cpu_s(pids: Sequence[int]) -> Optional[float]:
    """CPU seconds the engine's daemons have used so far (not the containers' shims or the apps)."""
    if not pids:
        return None
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


ENGINE_PIDS: List[int] = []


def timed(cmd: Sequence[str], what: str) -> Dict[str, Any]:
    before_engine = engine_cpu_s(ENGINE_PIDS)
    before_cpu = cpu_jiffies()
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    launch_ns = time.time_ns()
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise BenchError(f"{what} could not be launched: {shlex.join(cmd)[:300]}: {e}") from e
    wall = time.perf_counter() - t0
    return_ns = time.time_ns()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    after_cpu = cpu_jiffies()
    after_engine = engine_cpu_s(ENGINE_PIDS)
    if done.returncode != 0:
        raise BenchError(
            f"{what} failed with exit code {done.returncode}: {shlex.join(cmd)[:300]}\n"
            f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}"
        )
    host_busy = None
    if before_cpu and after_cpu and after_cpu[1] > before_cpu[1]:
        # average number of busy CPUs on the host during the command: the app's 1 plus everything else
        host_busy = (after_cpu[0] - before_cpu[0]) / (after_cpu[1] - before_cpu[1]) * (os.cpu_count() or 1)
    return {
        "launch_ns": launch_ns,
        "return_ns": return_ns,
        "wall_s": wall,
        "stdout": done.stdout,
        # CPU time of the command's own process tree (waap, or the docker CLI), not of the app in the container
        "command_cpu_s": children.ru_utime - before_children.ru_utime + children.ru_stime - before_children.ru_stime,
        "host_busy_cpus": host_busy,
        "engine_cpu_s": None if before_engine is None or after_engine is None else after_engine - before_engine,
    }


def finish(raw: Dict[str, Any], app: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "wall_s": raw["wall_s"],
        "work_s": app["work_s"],
        "work_cpu_s": app["work_cpu_s"],
        "startup_s": (app["first_ns"] - raw["launch_ns"]) / 1e9,
        "teardown_s": (raw["return_ns"] - app["end_ns"]) / 1e9,
        "command_cpu_s": raw["command_cpu_s"],
        "host_busy_cpus": raw["host_busy_cpus"],
        "engine_cpu_s": raw["engine_cpu_s"],
    }


def run_docker(image: str, iterations: int) -> Dict[str, Any]:
    raw = timed(["docker", "run", "--rm", image, "python3", "-c", APP_CODE, str(iterations)], "docker run")
    return finish(raw, parse_app_output(raw["stdout"], "docker run"))


def run_waap(
    waap: Sequence[str], image: str, iterations: int, timeout_s: int, extra: Sequence[str] = ()
) -> Dict[str, Any]:
    args = shlex.join(["python3", "-c", APP_CODE, str(iterations)])
    with tempfile.TemporaryDirectory(prefix="waap-bench-") as out:
        raw = timed(
            [*waap, "run", "--image", image, "--args", args, "--timeout", str(timeout_s), "-o", out, "-q", *extra],
            "waap run",
        )
        runs = sorted(Path(out).glob("*/*/manifest.json"))
        if len(runs) != 1:
            raise BenchError(f"waap run: expected one run directory under {out}, found {len(runs)}")
        run_dir = runs[0].parent
        manifest = json.loads(runs[0].read_text())
        if manifest.get("exit_code") != 0 or manifest.get("stop_reason") != "exited":
            raise BenchError(
                f"waap run: the app ended with exit code {manifest.get('exit_code')}, stop reason "
                f"{manifest.get('stop_reason')}; see {run_dir}"
            )
        app = parse_app_output((run_dir / "app.log").read_text(errors="replace"), "waap run")
        events: Dict[str, int] = {}
        for line in (run_dir / "events.jsonl").read_text().splitlines():
            event = json.loads(line)
            events.setdefault(event["event"], event["ts_ns"])
    result = finish(raw, app)
    first, launch = app["first_ns"], raw["launch_ns"]
    if {"run_started", "container_created"} <= events.keys():
        # where the start-up goes, in seconds; "start" ends at the app's first statement, which is usually a
        # little before waap hears back from its start call
        result["startup_breakdown_s"] = {
            "to_first_event": (events["run_started"] - launch) / 1e9,
            "create": (events["container_created"] - events["run_started"]) / 1e9,
            "start": (first - events["container_created"]) / 1e9,
        }
    return result


# -- the benchmark -----------------------------------------------------------------------------------------------
def log(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def benchmark(ns: argparse.Namespace) -> Dict[str, Any]:
    waap = shlex.split(ns.waap) if ns.waap else default_waap()
    ensure_image(ns.image)
    facts = machine_facts()
    ENGINE_PIDS[:] = engine_pids()
    log(f"machine: {facts['nproc']} CPUs, {facts['cpu_model']}, kernel {facts['kernel']}, docker {facts['docker']}")
    log(f"waap command: {shlex.join(waap)}")

    iterations = ns.iterations
    if iterations is None:
        # the faster of two short docker runs: the first one also warms the engine and the page cache up
        cal = min(run_docker(ns.image, CALIBRATION_ITERATIONS)["work_s"] for _ in range(2))
        iterations = max(1, round(CALIBRATION_ITERATIONS * ns.work_seconds / cal))
        log(
            f"calibration: {CALIBRATION_ITERATIONS} iterations in {cal:.3f} s -> {iterations} iterations "
            f"for ~{ns.work_seconds:g} s of work"
        )
    timeout_s = int(max(60, 10 * ns.work_seconds))

    other = "docker2" if ns.aa else "waap"  # the side compared with docker run

    def run(side: str) -> Dict[str, Any]:
        if side == "waap":
            return run_waap(waap, ns.image, iterations, timeout_s, waap_options(ns))
        return run_docker(ns.image, iterations)

    if ns.aa:
        log("A/A control: docker run against docker run, to show this machine's noise floor")
    log("warm-up: one run of each command (not counted)")
    run("docker")
    run(other)

    pairs: List[Dict[str, Any]] = []
    for index in range(ns.pairs):
        order = ("docker", other) if index % 2 == 0 else (other, "docker")
        pair: Dict[str, Any] = {"pair": index + 1, "order": "/".join(order)}
        for side in order:
            pair[side] = run(side)
        pair["work_ratio"] = pair[other]["work_s"] / pair["docker"]["work_s"]
        pair["work_cpu_ratio"] = pair[other]["work_cpu_s"] / pair["docker"]["work_cpu_s"]
        pair["wall_ratio"] = pair[other]["wall_s"] / pair["docker"]["wall_s"]
        pair["startup_extra_s"] = pair[other]["startup_s"] - pair["docker"]["startup_s"]
        pairs.append(pair)
        log(
            f"pair {index + 1}/{ns.pairs} ({pair['order']}): work ratio {pair['work_ratio']:.4f}, "
            f"start-up +{pair['startup_extra_s']:.3f} s"
        )

    def med(side: str, key: str) -> float:
        return median([p[side][key] for p in pairs])

    summary: Dict[str, Any] = {
        "work_ratio_median": median([p["work_ratio"] for p in pairs]),
        "work_cpu_ratio_median": median([p["work_cpu_ratio"] for p in pairs]),
        "wall_ratio_median": median([p["wall_ratio"] for p in pairs]),
        "startup_docker_median_s": med("docker", "startup_s"),
        "startup_other_median_s": med(other, "startup_s"),
        "startup_extra_median_s": median([p["startup_extra_s"] for p in pairs]),
        "teardown_docker_median_s": med("docker", "teardown_s"),
        "teardown_other_median_s": med(other, "teardown_s"),
        "work_docker_median_s": med("docker", "work_s"),
        "work_other_median_s": med(other, "work_s"),
        "wall_docker_median_s": med("docker", "wall_s"),
        "wall_other_median_s": med(other, "wall_s"),
        "command_cpu_docker_median_s": med("docker", "command_cpu_s"),
        "command_cpu_other_median_s": med(other, "command_cpu_s"),
    }
    engine = [(p["docker"]["engine_cpu_s"], p[other]["engine_cpu_s"]) for p in pairs]
    if all(d is not None and w is not None for d, w in engine):
        summary["engine_cpu_docker_median_s"] = median([d for d, _ in engine])
        summary["engine_cpu_other_median_s"] = median([w for _, w in engine])
    busy = [r["host_busy_cpus"] for p in pairs for r in (p["docker"], p[other]) if r["host_busy_cpus"] is not None]
    if busy:
        summary["host_busy_cpus_median"] = median(busy)
        summary["host_busy_cpus_max"] = max(busy)
    breakdowns = [p[other]["startup_breakdown_s"] for p in pairs if "startup_breakdown_s" in p[other]]
    if breakdowns:
        summary["waap_startup_breakdown_median_s"] = {k: median([b[k] for b in breakdowns]) for k in breakdowns[0]}
    summary["targets"] = {
        "work_ratio_max": 1.02,
        "startup_extra_max_s": 1.0,
        "work_ratio_met": summary["work_ratio_median"] <= 1.02,
        "startup_extra_met": summary["startup_extra_median_s"] <= 1.0,
    }
    return {
        "machine": facts,
        "image": ns.image,
        "compared": ["docker", other],  # every ratio is compared[1] / compared[0]
        "waap_command": waap,
        "iterations": iterations,
        "pairs_count": ns.pairs,
        "pairs": pairs,
        "summary": summary,
    }


def report(result: Dict[str, Any]) -> str:
    m, s = result["machine"], result["summary"]
    other = result["compared"][1]
    lines = [
        f"WaAP overhead: {other} vs docker run -- {m['date']}",
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, kernel {m['kernel']}, docker {m['docker']}",
        f"image {result['image']}, {result['iterations']} iterations per run, {result['pairs_count']} pairs",
        "",
        "per command: wall = command wall time, work = the app's work (wall clock), cpu = the app's work (CPU time),",
        "start = launch to the app's first statement, busy = host CPUs busy meanwhile (app included)",
        f"{'pair':>4} {'order':<14} | {'docker: wall':>12} {'work':>7} {'cpu':>7} {'start':>6} {'busy':>4} | "
        f"{other + ': wall':>12} {'work':>7} {'cpu':>7} {'start':>6} {'busy':>4} | {'work':>6} {'cpu':>6} "
        f"{'wall':>6} {'start':>7}",
        f"{'':>4} {'':<14} | {'':>12} {'':>7} {'':>7} {'':>6} {'':>4} | {'':>12} {'':>7} {'':>7} {'':>6} {'':>4} | "
        f"{'ratio':>6} {'ratio':>6} {'ratio':>6} {'extra':>7}",
    ]

    def side(r: Dict[str, Any]) -> str:
        busy = "-" if r["host_busy_cpus"] is None else f"{r['host_busy_cpus']:.2f}"
        return f"{r['wall_s']:>11.3f}s {r['work_s']:>6.3f}s {r['work_cpu_s']:>6.3f}s {r['startup_s']:>5.3f}s {busy:>4}"

    for p in result["pairs"]:
        lines.append(
            f"{p['pair']:>4} {p['order']:<14} | {side(p['docker'])} | {side(p[other])} | "
            f"{p['work_ratio']:>6.3f} {p['work_cpu_ratio']:>6.3f} {p['wall_ratio']:>6.3f} "
            f"{p['startup_extra_s']:>+6.3f}s"
        )
    t = s["targets"]
    ratio = f"{other}/docker"

    def verdict(met: bool) -> str:
        return ("met" if met else "MISSED") if other == "waap" else "n/a in an A/A control"

    lines += [
        "",
        "Summary (medians over pairs)",
        f"  app work time ratio  {ratio:<14} {s['work_ratio_median']:.4f}   (target <= {t['work_ratio_max']}: "
        f"{verdict(t['work_ratio_met'])})",
        f"  app CPU time ratio   {ratio:<14} {s['work_cpu_ratio_median']:.4f}   (the app's own process_time)",
        f"  command wall ratio   {ratio:<14} {s['wall_ratio_median']:.4f}   "
        f"(wall {s['wall_other_median_s']:.3f} s vs {s['wall_docker_median_s']:.3f} s)",
        f"  start-up (launch -> app's first statement): docker {s['startup_docker_median_s']:.3f} s, "
        f"{other} {s['startup_other_median_s']:.3f} s",
        f"  start-up extra       {other + '-docker':<14} {s['startup_extra_median_s']:+.3f} s  "
        f"(target <= +{t['startup_extra_max_s']:g} s: {verdict(t['startup_extra_met'])})",
        f"  teardown (app's last statement -> command returns): docker {s['teardown_docker_median_s']:.3f} s, "
        f"{other} {s['teardown_other_median_s']:.3f} s",
        f"  CPU time of the command's own processes: docker {s['command_cpu_docker_median_s']:.3f} s, "
        f"{other} {s['command_cpu_other_median_s']:.3f} s",
    ]
    if "engine_cpu_other_median_s" in s:
        lines.append(
            f"  CPU time of the engine (dockerd + containerd) meanwhile: docker "
            f"{s['engine_cpu_docker_median_s']:.3f} s, {other} {s['engine_cpu_other_median_s']:.3f} s"
        )
    if "host_busy_cpus_median" in s:
        lines.append(
            f"  host busy CPUs during the commands (the app's 1 included): median "
            f"{s['host_busy_cpus_median']:.2f}, max {s['host_busy_cpus_max']:.2f} of {m['nproc']}"
        )
    b = s.get("waap_startup_breakdown_median_s")
    if b:
        lines.append(
            f"  waap start-up breakdown: process to first event {b['to_first_event'] * 1000:.0f} ms, create "
            f"{b['create'] * 1000:.0f} ms, start to app's first statement {b['start'] * 1000:.0f} ms"
        )
    return "\n".join(lines)


def waap_options(ns: argparse.Namespace) -> List[str]:
    """The measurement options passed through to ``waap run``."""
    options: List[str] = []
    if ns.metrics:
        options += ["--metrics", ns.metrics]
    if ns.interval:
        options += ["--interval", ns.interval]
    return options


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5, help="pairs of runs to measure (default 5)")
    parser.add_argument(
        "--work-seconds",
        type=float,
        default=4.0,
        help="approximate CPU work per run, calibrated once with docker run (default 4)",
    )
    parser.add_argument("--iterations", type=int, help="fixed iteration count instead of calibrating")
    parser.add_argument("--image", default="waap-base:bookworm", help="image with python3 (default waap-base:bookworm)")
    parser.add_argument(
        "--waap", help="the waap command (default: the waap script beside this Python, else python -m profiler.cli)"
    )
    parser.add_argument(
        "--aa",
        action="store_true",
        help="A/A control: compare docker run with docker run instead of waap, to see the noise floor",
    )
    parser.add_argument("--metrics", help="collectors for waap run, e.g. system,container,custom (default: waap's)")
    parser.add_argument("--interval", help="sampling interval for waap run in seconds (default: waap's, 1 s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    ns = parser.parse_args(argv)
    if ns.pairs < 1 or ns.work_seconds <= 0:
        parser.error("--pairs must be at least 1 and --work-seconds positive")
    try:
        result = benchmark(ns)
    except BenchError as e:
        log(f"overhead: FAILED: {e}")
        return 1
    print(json.dumps(result, indent=2) if ns.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
