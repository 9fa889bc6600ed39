#!/usr/bin/env python3
"""What a profiling tool (Nsight Systems, nvprof) adds to the demo app under ``waap run``, against the same app
run unwrapped by the same ``waap run`` in the same sitting.

Every run is ``waap run --image IMG --args "-interval 0 --frames N --work W --use-cpu" -q -o TMPDIR --metrics ...``,
once per *way*: unwrapped (no ``--tools``), ``--tools nsys`` and ``--tools nvprof``. Same image, same app, same
options, so the only difference is the tool. Each round runs every way once, in rotating order (round 1:
unwrapped, nsys, nvprof; round 2: nsys, nvprof, unwrapped; ...) so that drift falls on every way alike. The app is
the demo plugin (examples/objcounter): N frames of W blur-and-count passes each, as fast as it can; N is
calibrated once so that the work takes about ``--work-seconds``, or given with ``--frames``. For each run we
record:

* work      the app's own measure of its frame loop (``runtime_s`` of objcounter-summary.json, wall clock);
* frames    the sum of its per-frame times, reported through WaAP's ``custom`` collector (summary.json's
            ``app.frame.seconds_total``; absent when the custom collector does not run);
* wall      the command's wall time, what a user waits for;
* before    from launching the command to the app's first frame: WaAP's start-up, the tool check (a short-lived
            container that looks for the tool in the image), creating and starting the container, the tool's and
            the app's start-up;
* after     from the app's last frame to the command's return, split by the run directory's events.jsonl into
            ``in_container`` (app end -> ``exited``: the app's interpreter exiting and, under a tool, the tool
            finishing inside the container: nsys turns its capture into report.nsys-rep there),
            ``after_exit`` (``exited`` -> ``run_finished``: removing the container, the summary, for nsys the
            ``nsys stats`` export in a second short-lived container (``container_removed`` -> ``tool_stats``),
            the tool's post-processing) and ``to_return`` (writing the manifest, the process exiting).

The app's timestamps come from the summary's ``started_unix_s`` and ``runtime_s`` (millisecond precision); the
containers share the host's real-time clock. Ratios (work, frames, wall) and differences (before, after) are taken
per round against the unwrapped run of the same round, then summarised as medians over rounds.

This is a benchmark, not a test: it asserts nothing about time and exits non-zero only when a command fails or
a run does not complete (a tool whose post-processing fails is reported, not fatal). ``--aa`` adds a second
unwrapped run to each round, compared with the first: the noise floor of this machine (``--tools none --aa``:
the A/A control alone). It reuses bench/overhead.py's helpers (machine facts, the timed command, the waap
command).

    .venv/bin/python bench/tool_overhead.py                      # 5 rounds x (unwrapped, nsys, nvprof), ~4 s each
    .venv/bin/python bench/tool_overhead.py --rounds 7 --aa      # with an A/A control in every round
    .venv/bin/python bench/tool_overhead.py --tools nsys --json > tools.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from overhead import (
    ENGINE_PIDS,
    BenchError,
    default_waap,
    engine_pids,
    ensure_image,
    log,
    machine_facts,
    median,
    timed,
)

DEFAULT_IMAGE = "waap-test-nvidia:latest"
TOOLS = ("nsys", "nvprof")
BASE = "unwrapped"
AGAIN = "unwrapped-2"  # the A/A control's second unwrapped run
APP_SUMMARY = "objcounter-summary.json"
CALIBRATION_FRAMES = 20
TIMES = ("work_s", "frames_s", "wall_s")  # compared by ratio
SPANS = ("before_s", "after_s")  # compared by difference


# -- one run -----------------------------------------------------------------------------------------------------
def tool_of(way: str) -> Optional[str]:
    return way if way in TOOLS else None


def app_args(frames: int, work: int) -> str:
    return f"-interval 0 --frames {frames} --work {work} --use-cpu"


def read_events(path: Path) -> Dict[str, int]:
    """The first timestamp of each event kind (a torn last line is skipped)."""
    events: Dict[str, int] = {}
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        events.setdefault(event["event"], event["ts_ns"])
    return events


def run_way(waap: Sequence[str], ns: argparse.Namespace, way: str, frames: int) -> Dict[str, Any]:
    tool = tool_of(way)
    options = ["--metrics", ns.metrics] if ns.metrics else []
    if ns.interval:
        options += ["--interval", ns.interval]
    if tool:
        options += ["--tools", tool]
    what = f"waap run ({way})"
    with tempfile.TemporaryDirectory(prefix="waap-tool-bench-") as out:
        raw = timed(
            [*waap, "run", "--image", ns.image, "--args", app_args(frames, ns.work), "--timeout",
             str(int(max(120, 20 * ns.work_seconds))), "-o", out, "-q", *options],
            what,
        )
        runs = sorted(Path(out).glob("*/*/manifest.json"))
        if len(runs) != 1:
            raise BenchError(f"{what}: expected one run directory under {out}, found {len(runs)}")
        run_dir = runs[0].parent
        manifest = json.loads(runs[0].read_text())
        if manifest.get("status") != "complete" or manifest.get("exit_code") != 0:
            raise BenchError(
                f"{what}: the run is {manifest.get('status')} ({manifest.get('stop_reason')}, exit code "
                f"{manifest.get('exit_code')}): {manifest.get('error')}\n"
                f"{(run_dir / 'app.log').read_text(errors='replace')[-2000:]}"
            )
        try:
            app = json.loads((run_dir / "output" / APP_SUMMARY).read_text())
        except (OSError, ValueError) as e:
            raise BenchError(f"{what}: no readable {APP_SUMMARY} in the run's output ({e})") from e
        if app.get("frames") != frames:
            raise BenchError(f"{what}: the app did {app.get('frames')} frames, not {frames}")
        frames_s: Optional[float] = None
        summary_path = run_dir / "summary.json"
        if summary_path.exists():
            metric = json.loads(summary_path.read_text()).get("metrics", {}).get("app.frame.seconds_total")
            if isinstance(metric, dict) and isinstance(metric.get("last"), (int, float)):
                frames_s = float(metric["last"])
        events = read_events(run_dir / "events.jsonl")
        tools = manifest.get("tools") or []
    first_ns = round(app["started_unix_s"] * 1e9)
    end_ns = first_ns + round(app["runtime_s"] * 1e9)
    result: Dict[str, Any] = {
        "work_s": float(app["runtime_s"]),
        "frames_s": frames_s,
        "wall_s": raw["wall_s"],
        "before_s": (first_ns - raw["launch_ns"]) / 1e9,
        "after_s": (raw["return_ns"] - end_ns) / 1e9,
        "command_cpu_s": raw["command_cpu_s"],
        "host_busy_cpus": raw["host_busy_cpus"],
        "tool_status": tools[0].get("status") if tools else None,
        "tool_error": (tools[0].get("error") or "")[:300] if tools else None,
    }
    if {"run_started", "started", "exited", "container_removed", "run_finished"} <= events.keys():
        result["before_breakdown_s"] = {
            "to_run_started": (events["run_started"] - raw["launch_ns"]) / 1e9,
            "create_start": (events["started"] - events["run_started"]) / 1e9,
            "app_init": (first_ns - events["started"]) / 1e9,
        }
        result["after_breakdown_s"] = {
            "in_container": (events["exited"] - end_ns) / 1e9,
            "after_exit": (events["run_finished"] - events["exited"]) / 1e9,
            "tool_stats": (events["tool_stats"] - events["container_removed"]) / 1e9 if "tool_stats" in events
            else None,
            "to_return": (raw["return_ns"] - events["run_finished"]) / 1e9,
        }
    return result


def tool_version(image: str, tool: str) -> Optional[str]:
    try:
        done = subprocess.run(["docker", "run", "--rm", "--entrypoint", tool, image, "--version"],
                              capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return lines[-1] if done.returncode == 0 and lines else None


# -- the benchmark -----------------------------------------------------------------------------------------------
def compare(run: Dict[str, Any], base: Dict[str, Any]) -> Dict[str, Optional[float]]:
    out: Dict[str, Optional[float]] = {}
    for key in TIMES:
        a, b = run[key], base[key]
        out[key.replace("_s", "_ratio")] = a / b if a is not None and b else None
    for key in SPANS:
        out[key.replace("_s", "_extra_s")] = run[key] - base[key]
    return out


def med_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return median(known) if known else None


def summarise(rounds: List[Dict[str, Any]], ways: Sequence[str]) -> Dict[str, Any]:
    summary: Dict[str, Any] = {}
    for way in ways:
        runs = [r["runs"][way] for r in rounds]
        entry: Dict[str, Any] = {
            f"{key}_median": med_or_none([run[key] for run in runs])
            for key in (*TIMES, *SPANS, "command_cpu_s", "host_busy_cpus")
        }
        for part in ("before_breakdown_s", "after_breakdown_s"):
            parts = [run[part] for run in runs if part in run]
            if parts:
                entry[f"{part[:-2]}_median_s"] = {k: med_or_none([p[k] for p in parts]) for k in parts[0]}
        if way != BASE:
            vs = [r["vs_" + BASE][way] for r in rounds]
            for key in vs[0]:
                entry[f"{key}_median"] = med_or_none([v[key] for v in vs])
            work = [v["work_ratio"] for v in vs if v["work_ratio"] is not None]
            entry["work_ratio_range"] = [min(work), max(work)] if work else None
        statuses = sorted({str(run["tool_status"]) for run in runs if run["tool_status"] is not None})
        if statuses:
            entry["tool_statuses"] = statuses
            entry["tool_error_example"] = next((run["tool_error"] for run in runs if run["tool_error"]), None)
        summary[way] = entry
    return summary


def benchmark(ns: argparse.Namespace) -> Dict[str, Any]:
    waap = shlex.split(ns.waap) if ns.waap else default_waap()
    try:
        ensure_image(ns.image)
    except BenchError as e:
        raise BenchError(f"{e} (the default image is built by `bash scripts/build-images.sh nvidia`)") from e
    facts = machine_facts()
    load_before = os.getloadavg()
    ENGINE_PIDS[:] = engine_pids()
    tools = [t for t in ns.tools.split(",") if t and t != "none"]
    ways = [BASE, *tools, *([AGAIN] if ns.aa else [])]
    log(f"machine: {facts['nproc']} CPUs, {facts['cpu_model']}, kernel {facts['kernel']}, docker {facts['docker']}")
    log(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}; waap command: {shlex.join(waap)}")
    versions = {tool: tool_version(ns.image, tool) for tool in tools}
    for tool, version in versions.items():
        log(f"{tool} in {ns.image}: {version}")

    frames = ns.frames
    if frames is None:
        # the faster of two short unwrapped runs: the first one also warms the engine and the page cache up
        cal = min(run_way(waap, ns, BASE, CALIBRATION_FRAMES)["work_s"] for _ in range(2))
        frames = max(1, round(CALIBRATION_FRAMES * ns.work_seconds / cal))
        log(f"calibration: {CALIBRATION_FRAMES} frames of work {ns.work} in {cal:.3f} s -> {frames} frames "
            f"for ~{ns.work_seconds:g} s of work")
    log(f"warm-up: one run of each way ({', '.join(ways)}), not counted")
    for way in ways:
        run_way(waap, ns, way, frames)

    rounds: List[Dict[str, Any]] = []
    for index in range(ns.rounds):
        shift = index % len(ways)
        order = [*ways[shift:], *ways[:shift]]
        runs = {way: run_way(waap, ns, way, frames) for way in order}
        vs = {way: compare(runs[way], runs[BASE]) for way in ways if way != BASE}
        rounds.append({"round": index + 1, "order": order, "runs": runs, "vs_" + BASE: vs})
        log(f"round {index + 1}/{ns.rounds} ({'/'.join(order)}): " + ", ".join(
            f"{way} work x{v['work_ratio']:.3f} wall x{v['wall_ratio']:.3f} after {v['after_extra_s']:+.2f} s"
            for way, v in vs.items()))
    load_after = os.getloadavg()
    log(f"load average after: {' '.join(f'{x:.2f}' for x in load_after)}")
    return {
        "machine": facts,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "image": ns.image,
        "tool_versions": versions,
        "app_args": app_args(frames, ns.work),
        "waap_options": {"metrics": ns.metrics, "interval": ns.interval},
        "waap_command": waap,
        "ways": ways,  # every ratio is way / unwrapped, within a round
        "frames": frames,
        "work": ns.work,
        "rounds_count": ns.rounds,
        "rounds": rounds,
        "summary": summarise(rounds, ways),
    }


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(result: Dict[str, Any]) -> str:
    m, s, ways = result["machine"], result["summary"], result["ways"]
    versions = ", ".join(f"{t} {v}" for t, v in result["tool_versions"].items()) or "none"
    lines = [
        f"Tool overhead under waap run, against the unwrapped app -- {m['date']}",
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, kernel {m['kernel']}, docker {m['docker']}",
        f"load average before {' '.join(f'{x:.2f}' for x in result['load_average_before'])}, "
        f"after {' '.join(f'{x:.2f}' for x in result['load_average_after'])}",
        f"image {result['image']} ({versions})",
        f"app args \"{result['app_args']}\", waap options {result['waap_options']}, {result['rounds_count']} rounds",
        "",
        "per run: wall = command wall time, work = the app's frame loop (its own clock), before = launch to the",
        "app's first frame, after = the app's last frame to the command's return, busy = host CPUs busy meanwhile,",
        "tool = the status of WaAP's post-processing of the tool's output; ratios and differences vs unwrapped",
        f"{'round':>5} {'way':<12} {'wall':>8} {'work':>8} {'before':>7} {'after':>7} {'busy':>5} | "
        f"{'work':>6} {'wall':>6} {'before':>7} {'after':>7} {'tool':<8}",
    ]
    for r in result["rounds"]:
        for way in r["order"]:
            run, v = r["runs"][way], r["vs_" + BASE].get(way)
            cmp = (f"{_fmt(v['work_ratio'], '6.3f')} {_fmt(v['wall_ratio'], '6.3f')} "
                   f"{v['before_extra_s']:>+6.2f}s {v['after_extra_s']:>+6.2f}s" if v else f"{'':>29}")
            lines.append(
                f"{r['round']:>5} {way:<12} {run['wall_s']:>7.2f}s {run['work_s']:>7.3f}s {run['before_s']:>6.2f}s "
                f"{run['after_s']:>6.2f}s {_fmt(run['host_busy_cpus'], '5.2f')} | {cmp} {run['tool_status'] or '':<8}"
            )
    lines += ["", "Summary (medians over rounds)"]
    for way in ways:
        e = s[way]
        lines.append(
            f"  {way:<12} work {e['work_s_median']:.3f} s, frames {_fmt(e['frames_s_median'], '.3f')} s, wall "
            f"{e['wall_s_median']:.2f} s, before {e['before_s_median']:.2f} s, after {e['after_s_median']:.2f} s, "
            f"waap CPU {e['command_cpu_s_median']:.2f} s, host busy {_fmt(e['host_busy_cpus_median'], '.2f')}"
        )
        if way != BASE:
            lo, hi = e["work_ratio_range"] or (None, None)
            lines.append(
                f"  {'':<12} vs {BASE}: work x{_fmt(e['work_ratio_median'], '.4f')} (rounds {_fmt(lo, '.3f')} .. "
                f"{_fmt(hi, '.3f')}), frames x{_fmt(e['frames_ratio_median'], '.4f')}, wall "
                f"x{_fmt(e['wall_ratio_median'], '.4f')}, before {e['before_extra_s_median']:+.2f} s, after "
                f"{e['after_extra_s_median']:+.2f} s"
            )
        b, a = e.get("before_breakdown_median_s"), e.get("after_breakdown_median_s")
        if b and a:
            stats = "" if a["tool_stats"] is None else f" (nsys stats {a['tool_stats']:.2f})"
            lines.append(
                f"  {'':<12} before: to run_started {b['to_run_started']:.2f}, create+start {b['create_start']:.2f}, "
                f"app init {b['app_init']:.2f}; after: in container {a['in_container']:.2f}, after exit "
                f"{a['after_exit']:.2f}{stats}, to return {a['to_return']:.2f}"
            )
        if e.get("tool_statuses"):
            lines.append(f"  {'':<12} tool post-processing: {', '.join(e['tool_statuses'])}"
                         + (f" ({e['tool_error_example']})" if e.get("tool_error_example") else ""))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of one run per way (default 5)")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help=f"comma-separated subset of {','.join(TOOLS)}, or none (default: all)")
    parser.add_argument("--aa", action="store_true",
                        help="A/A control: a second unwrapped run in every round, compared with the first")
    parser.add_argument("--work-seconds", type=float, default=4.0,
                        help="approximate work per run, calibrated once with unwrapped runs (default 4)")
    parser.add_argument("--frames", type=int, help="fixed frame count instead of calibrating")
    parser.add_argument("--work", type=int, default=4, help="the app's --work: passes per frame (default 4)")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"the demo app with the tools (default {DEFAULT_IMAGE})")
    parser.add_argument("--metrics", default="system,container,custom",
                        help="collectors for waap run (default system,container,custom)")
    parser.add_argument("--interval", help="sampling interval for waap run in seconds (default: waap's, 1 s)")
    parser.add_argument("--waap", help="the waap command (default: the waap script beside this Python)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    ns = parser.parse_args(argv)
    unknown = sorted({t for t in ns.tools.split(",") if t} - {*TOOLS, "none"})
    if unknown:
        parser.error(f"unknown tool(s) {', '.join(unknown)}; known: {', '.join(TOOLS)}, none")
    if ns.rounds < 1 or ns.work_seconds <= 0 or ns.work < 1 or (ns.frames is not None and ns.frames < 1):
        parser.error("--rounds, --work and --frames must be at least 1 and --work-seconds positive")
    if not ns.aa and not any(t in TOOLS for t in ns.tools.split(",")):
        parser.error("nothing to compare: give a tool, or --aa")
    started = time.monotonic()
    try:
        result = benchmark(ns)
    except BenchError as e:
        log(f"tool_overhead: FAILED: {e}")
        return 1
    log(f"done in {time.monotonic() - started:.0f} s")
    print(json.dumps(result, indent=2) if ns.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
