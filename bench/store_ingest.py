#!/usr/bin/env python3
"""What recording a run in the results store costs: ``ResultStore.ingest`` of one run directory into a fresh SQLite
file, against just reading and parsing the same samples.jsonl with ``profiler.rundir.iter_jsonl``, measured in the
same run.

The run directory is made from a real one (by default a short ``waap run`` of the demo plugin, with the system,
container and custom collectors; ``--template RUN_DIR`` takes any finished run directory; ``--template none`` uses
built-in names and needs no Docker) and scaled up: its manifest and summary are kept, and samples.jsonl is
rewritten with N lines (default 1 000, 10 000 and 100 000) of ``--values`` (default 30) values each, in its own
format, with its metric names, sources and magnitudes, one 1 s tick after another (every metric once per tick).

For each N, ``--repeat`` times (default 3), interleaved:

* parse     ``sum(len(r["values"]) for r in iter_jsonl(samples.jsonl))``: reading and parsing, the baseline;
* ingest    opening a fresh store, ``ingest([run_dir])`` (one transaction: the run, its metrics, every sample) and
            closing it: what ``waap run`` adds at the end of a session and ``waap ingest`` costs per run;
* summary   the same with ``samples=False`` (``--no-samples``): the run and summary.json only.

Prints medians: values/s, seconds, the ratio ingest/parse, the store's size per stored value, and how many minutes
of 1 s sampling (of as many metrics as the template has) one second of ingest stores. This is a benchmark, not a
test: it asserts nothing about time. It exits non-zero only on a failure (a store that did not take every value).

    .venv/bin/python bench/store_ingest.py                        # ~40 s: three sizes, 3 repeats
    .venv/bin/python bench/store_ingest.py --lines 1000,10000 --repeat 5 --json
    .venv/bin/python bench/store_ingest.py --template none         # without Docker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from profiler.rundir import iter_jsonl  # noqa: E402
from profiler.store import ResultStore  # noqa: E402

DEMO_IMAGE = "waap-demo-objcounter:latest"
TICK_NS = 1_000_000_000

# --template none: names and magnitudes like the system and container collectors' (see docs/metrics.md)
_BUILTIN = [("system", f"system.{n}", v) for n, v in [
    ("cpu.percent", 46.2), ("cpu.user_percent", 30.1), ("cpu.system_percent", 12.4), ("cpu.iowait_percent", 0.5),
    ("cpu.core.0.percent", 51.0), ("cpu.core.1.percent", 40.3), ("cpu.online_cores", 2.0), ("load.1m", 0.19),
    ("load.5m", 0.53), ("load.15m", 0.76), ("memory.total_bytes", 25276502016.0), ("memory.used_bytes", 566218752.0),
    ("memory.available_bytes", 24710283264.0), ("swap.used_bytes", 0.0), ("disk.read_bytes_total", 36097582080.0),
    ("disk.write_bytes_total", 51298553856.0), ("net.rx_bytes_total", 3356128684.0),
    ("net.tx_bytes_total", 4442863.0)]] + [("container", f"container.{n}", v) for n, v in [
    ("cpu.usage_seconds_total", 0.028056579), ("cpu.usage_percent", 87.5), ("memory.usage_bytes", 13004800.0),
    ("memory.working_set_bytes", 2772992.0), ("memory.rss_bytes", 1818624.0), ("memory.cache_bytes", 10309632.0),
    ("pids.current", 2.0), ("blkio.read_bytes_total", 10280960.0), ("net.rx_bytes_total", 200.0),
    ("net.tx_bytes_total", 0.0), ("net.rx_packets_total", 2.0), ("net.tx_packets_total", 0.0)]]


class BenchError(Exception):
    pass


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the run directory ---------------------------------------------------------------------------------------------
def make_template(work: Path, image: str) -> Path:
    """A real run directory: a short ``waap run`` of the demo plugin (~2 s) with system, container and custom."""
    cmd = [sys.executable, "-m", "profiler.cli", "run", "--image", image, "--args", "-interval 0.2 --frames 10",
           "--metrics", "system,container,custom", "--interval", "0.5", "--no-store", "-q", "-o", str(work / "real")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    runs = sorted((work / "real").glob("*/*/manifest.json"))
    if done.returncode != 0 or len(runs) != 1:
        raise BenchError(f"`{' '.join(cmd)}` failed (exit {done.returncode}): {done.stderr.strip()[-400:]}; "
                         "give --template RUN_DIR, or --template none to run without Docker")
    return runs[0].parent


def template_metrics(run_dir: Optional[Path]) -> List[Tuple[str, str, float]]:
    """(source, metric, first value) of every metric of the template's samples.jsonl, in order of appearance."""
    if run_dir is None:
        return list(_BUILTIN)
    seen: Dict[str, Tuple[str, str, float]] = {}
    for record in iter_jsonl(run_dir / "samples.jsonl"):
        for name, value in (record.get("values") or {}).items():
            if name not in seen and isinstance(value, (int, float)) and not isinstance(value, bool):
                seen[name] = (str(record.get("source") or ""), name, float(value))
    if not seen:
        raise BenchError(f"{run_dir / 'samples.jsonl'} has no numeric values")
    return list(seen.values())


def write_run(template: Optional[Path], metrics: List[Tuple[str, str, float]], dst: Path, lines: int, per_line: int,
              seed: int) -> int:
    """A finished run directory at ``dst`` with ``lines`` sample lines of ``per_line`` values; the values written."""
    dst.mkdir(parents=True)
    run_id = f"20990101T000000Z-bench{lines}.{dst.name}"
    manifest: Dict[str, Any] = {}
    if template is not None:
        manifest = json.loads((template / "manifest.json").read_text())
        shutil.copy(template / "summary.json", dst / "summary.json")
    manifest.update(run_id=run_id, session_id=run_id.split(".")[0], finished=True, status="complete",
                    stop_reason="exited", exit_code=0)
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    # metric names for `per_line` distinct values a line; more metrics than the template has get a numbered twin
    names: List[Tuple[str, str, float]] = []
    for i in range(max(per_line, len(metrics))):
        source, name, value = metrics[i % len(metrics)]
        names.append((source, name if i < len(metrics) else f"{name}.{i // len(metrics)}", value))
    lines_per_tick = -(-len(names) // per_line)
    rng = random.Random(seed)
    t0 = 1_795_320_780_000_000_000
    written = 0
    with open(dst / "samples.jsonl", "w", encoding="utf-8") as fh:
        for i in range(lines):
            tick, part = divmod(i, lines_per_tick)
            chosen = [names[(part * per_line + k) % len(names)] for k in range(per_line)]
            values: Dict[str, float] = {}
            for _, name, v in chosen:
                if v.is_integer():  # counters and byte counts: integral and growing
                    values[name] = v + tick * 4096.0 if name.endswith("_total") else v
                else:
                    values[name] = v * rng.uniform(0.9, 1.1)
            record = {"ts_ns": t0 + tick * TICK_NS + part * 1000, "source": chosen[0][0], "values": values}
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            written += len(values)
    return written


# -- the measurements ----------------------------------------------------------------------------------------------
def parse_once(samples: Path) -> Tuple[float, int]:
    t0 = time.perf_counter()
    values = sum(len(r.get("values") or {}) for r in iter_jsonl(samples))
    return time.perf_counter() - t0, values


def ingest_once(run_dir: Path, db: Path, samples: bool) -> Tuple[float, int, int, Dict[str, int]]:
    """Seconds for open + ingest + close of a fresh store; the values stored; the store's size in bytes, in all and
    per table and index (SQLite's dbstat, where it is compiled in)."""
    for leftover in (db, db.with_name(db.name + "-journal")):
        leftover.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with ResultStore(db) as store:
        report = store.ingest([run_dir], samples=samples, now_ns=time.time_ns())
    seconds = time.perf_counter() - t0
    if report.skipped or len(report.stored) != 1:
        raise BenchError(f"ingest of {run_dir} did not store the run: {report.skipped}")
    size = db.stat().st_size
    split: Dict[str, int] = {}
    try:
        with sqlite3.connect(db) as c:
            split = {str(n): int(b) for n, b in c.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")}
        c.close()
    except sqlite3.Error:
        pass
    db.unlink()
    return seconds, report.samples, size, split


def filesystem(path: Path) -> str:
    """The mount holding ``path`` and its type, from /proc/mounts."""
    best = ("?", "?")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and str(path.resolve()).startswith(parts[1]) and len(parts[1]) >= len(best[0]):
                best = (parts[1], parts[2])
    except OSError:
        pass
    return f"{best[0]} ({best[1]})"


def loadavg() -> Optional[float]:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def measure(template: Optional[Path], what: str, sizes: Sequence[int], per_line: int, repeat: int,
            work: Path) -> Dict[str, Any]:
    metrics = template_metrics(template)
    results: Dict[str, Any] = {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "machine": platform.machine(),
        "nproc": os.cpu_count(),
        "filesystem": filesystem(work),
        "template": what,
        "load_before": loadavg(),
        "template_metrics": len(metrics),
        "values_per_line": per_line,
        "repeat": repeat,
        "sizes": [],
    }
    for lines in sizes:
        run_dir = work / "session" / f"run-{lines}"
        log(f"writing {lines} lines of {per_line} values ...")
        written = write_run(template, metrics, run_dir, lines, per_line, seed=lines)
        samples = run_dir / "samples.jsonl"
        parse_once(samples)  # warm-up: page cache, imports
        parse_s: List[float] = []
        ingest_s: List[float] = []
        summary_s: List[float] = []
        sizes_b: List[int] = []
        split: Dict[str, int] = {}
        for r in range(repeat):
            log(f"  {lines} lines: round {r + 1}/{repeat}")
            seconds, values = parse_once(samples)
            if values != written:
                raise BenchError(f"parsed {values} values of {written} written")
            parse_s.append(seconds)
            seconds, stored, size, split = ingest_once(run_dir, work / "store.db", samples=True)
            if stored != written:
                raise BenchError(f"the store took {stored} values of {written} written")
            ingest_s.append(seconds)
            sizes_b.append(size)
            summary_s.append(ingest_once(run_dir, work / "store.db", samples=False)[0])
        p, i = statistics.median(parse_s), statistics.median(ingest_s)
        results["sizes"].append({
            "lines": lines,
            "values": written,
            "file_bytes": samples.stat().st_size,
            "parse_s": p,
            "parse_values_per_s": written / p,
            "ingest_s": i,
            "ingest_values_per_s": written / i,
            "ingest_s_min_max": [min(ingest_s), max(ingest_s)],
            "ratio": i / p,
            "summary_only_s": statistics.median(summary_s),
            "store_bytes": statistics.median(sizes_b),
            "store_bytes_per_value": statistics.median(sizes_b) / written,
            "store_bytes_per_value_by_part": {name: round(b / written, 1) for name, b in sorted(split.items())
                                              if b >= written},
            # one second of ingest stores this many minutes of 1 s sampling of the template's metrics
            "sampling_min_per_ingest_s": written / i / len(metrics) / 60,
        })
        shutil.rmtree(run_dir)
    results["load_after"] = loadavg()
    return results


def report(results: Dict[str, Any]) -> str:
    out = [
        f"Results store ingest, Python {results['python']}, SQLite {results['sqlite']}, {results['machine']} "
        f"({results['nproc']} CPUs), files on {results['filesystem']}",
        f"template: {results['template']} ({results['template_metrics']} metrics = values per 1 s tick); "
        f"{results['values_per_line']} values a line; medians of {results['repeat']}; load average "
        f"{results['load_before']} before, {results['load_after']} after",
        f"  {'lines':>7} {'values':>9} {'parse s':>8} {'parse val/s':>12} {'ingest s':>9} {'ingest val/s':>13} "
        f"{'ratio':>6} {'B/value':>8} {'summary s':>10} {'min of 1 s sampling per s':>26}",
    ]
    for s in results["sizes"]:
        out.append(
            f"  {s['lines']:>7} {s['values']:>9} {s['parse_s']:>8.3f} {s['parse_values_per_s']:>12,.0f} "
            f"{s['ingest_s']:>9.3f} {s['ingest_values_per_s']:>13,.0f} {s['ratio']:>6.1f} "
            f"{s['store_bytes_per_value']:>8.1f} {s['summary_only_s']:>10.4f} {s['sampling_min_per_ingest_s']:>26.1f}"
        )
    last = results["sizes"][-1]
    if last["store_bytes_per_value_by_part"]:
        parts = ", ".join(f"{k} {v}" for k, v in last["store_bytes_per_value_by_part"].items())
        out.append(f"  bytes per value at {last['lines']} lines, by table and index: {parts}")
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", default="1000,10000,100000", help="sample lines per run directory, comma-separated "
                                                                     "(default 1000,10000,100000)")
    parser.add_argument("--values", type=int, default=30, help="values per sample line (default 30)")
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each size (default 3)")
    parser.add_argument("--template", default="auto",
                        help="a finished run directory to scale up; 'auto' (default): make one with a short `waap "
                             f"run` of {DEMO_IMAGE}; 'none': built-in metric names, no Docker")
    parser.add_argument("--image", default=DEMO_IMAGE, help=f"the image for --template auto (default {DEMO_IMAGE})")
    parser.add_argument("--dir", type=Path, help="where to write the run directories and stores (default: a new "
                                                 "temporary folder, removed afterwards)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    ns = parser.parse_args(argv)
    try:
        sizes = [int(x) for x in ns.lines.split(",") if x.strip()]
    except ValueError:
        parser.error("--lines takes comma-separated numbers")
    if not sizes or min(sizes) < 1 or ns.values < 1 or ns.repeat < 1:
        parser.error("--lines, --values and --repeat must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="waap-store-bench-", dir=ns.dir))
    try:
        template: Optional[Path] = None
        what = "built-in system and container names"
        if ns.template == "auto":
            log(f"making a template run directory: waap run --image {ns.image} ...")
            template = make_template(work, ns.image)
            what = f"a real run of {ns.image} (system, container, custom)"
        elif ns.template != "none":
            template = Path(ns.template)
            if not (template / "manifest.json").is_file() or not (template / "samples.jsonl").is_file():
                parser.error(f"{template} is not a run directory with samples.jsonl")
            what = str(template)
        results = measure(template, what, sizes, ns.values, ns.repeat, work)
    except BenchError as e:
        log(f"store_ingest: {e}")
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2) if ns.json else report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
