"""The ``waap ingest`` and ``waap runs`` commands, and the store step of ``waap run`` (profiler.store)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, List, Optional, TextIO

from .store import DEFAULT_STORE_NAME, IngestReport, ResultStore, StoreError, find_run_dirs, store_path

__all__ = ["add_store_options", "add_store_parsers", "cmd_ingest", "cmd_runs", "store_session"]

_STORE_HELP = "the results store: a SQLite file, or sqlite:///path (default: waap.db in the results folder)"
DEFAULT_STORE = f"results/{DEFAULT_STORE_NAME}"  # the embedded store of `waap run`'s default results folder


def add_store_options(p: argparse.ArgumentParser) -> None:
    """``--store`` and ``--no-store`` for ``waap run``."""
    p.add_argument("--store", help=_STORE_HELP)
    p.add_argument("--no-store", action="store_true", help="do not record the runs in a results store")


def add_store_parsers(sub: Any) -> None:
    p = sub.add_parser("ingest", help="record run directories in a results store",
                       description="Record run directories (a run, a session folder, or a whole results folder) in "
                                   "a results store. Idempotent: a run recorded again replaces its rows. Runs that "
                                   "have not finished are skipped, with the reason. Exit status 1 when nothing "
                                   "could be recorded.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--store", default=DEFAULT_STORE,
                   help=f"the results store: a SQLite file, or sqlite:///path (default: {DEFAULT_STORE})")
    p.add_argument("--no-samples", action="store_true",
                   help="record the runs and their summaries, not every sample")
    p = sub.add_parser("runs", help="list the runs in a results store, newest first")
    p.add_argument("--store", default=DEFAULT_STORE, help=f"the results store (default: {DEFAULT_STORE})")
    p.add_argument("--image", help="only the runs of this image")
    p.add_argument("--limit", type=_positive, default=20, help="at most this many runs (default 20)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _report(report: IngestReport, where: Path, out: TextIO) -> None:
    for path, why in report.skipped:
        out.write(f"  skipped {path}: {why}\n")
    out.write(f"Stored {len(report.stored)} run(s), {report.samples} sample value(s), in {where}\n")


def store_session(session_path: Path, output: Path, store: Optional[str], out: TextIO) -> None:
    """``waap run``'s last step: record the session's runs in the store. A store that fails is reported, never
    fatal: the run directories hold everything, and ``waap ingest`` can record them later."""
    try:
        where = store_path(store) if store else output / DEFAULT_STORE_NAME
        with ResultStore(where) as s:
            report = s.ingest([session_path], now_ns=time.time_ns())
    except StoreError as e:
        out.write(f"Not stored: {e} (the run directories are complete: `waap ingest {session_path}` later)\n")
        return
    _report(report, where, out)


def cmd_ingest(ns: argparse.Namespace, out: TextIO) -> int:
    where = store_path(ns.store)
    run_dirs = [d for path in ns.paths for d in find_run_dirs(path)]  # before the store is created
    with ResultStore(where) as s:
        report = s.ingest(run_dirs, samples=not ns.no_samples, now_ns=time.time_ns())
    _report(report, where, out)
    return 0 if report.stored or not report.skipped else 1


def cmd_runs(ns: argparse.Namespace, out: TextIO) -> int:
    where = store_path(ns.store)
    if not where.exists():
        raise StoreError(f"no store at {where}: `waap run` writes waap.db in its results folder; give --store")
    with ResultStore(where) as s:
        runs = s.runs(image=ns.image, limit=ns.limit)
    if not runs:
        out.write(f"no runs in {where}\n")
        return 0
    rows: List[List[str]] = [["run", "image", "tool", "status", "stop reason", "exit", "duration", "samples"]]
    for r in runs:
        rows.append([r["run_id"], r["image"] or "-", r["tool"] or "-", r["status"], r["stop_reason"] or "-",
                     "-" if r["exit_code"] is None else str(r["exit_code"]),
                     "-" if r["duration_s"] is None else f"{r['duration_s']:.1f}s", str(r["samples"])])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")
    return 0
