"""The results store: every profiled run in one SQLite database, so runs can be found and compared with SQL.

``waap run`` ingests each session it finishes into ``<results folder>/waap.db`` (the embedded store; ``--store``
picks another file, ``--no-store`` none), and ``waap ingest`` reads run directories written elsewhere (a Jenkins
archive, a copied results folder) into any store. The run directory stays the source of truth: ingesting is
idempotent, a run ingested again replaces its rows, and nothing is lost by deleting the database.

Tables (docs/store.md has the columns): ``sessions``; ``runs`` (one row per run directory: what ran, how it ended,
the whole manifest as JSON); ``metrics`` (summary.json: per metric count/min/mean/p50/p95/max/last and, for
counters, increase and rate); ``samples`` (every value of samples.jsonl, one row per metric and timestamp); ``tools``
(a profiling tool's outcome and highlights). ``meta`` holds the schema version.

Only finished runs are ingested: a run whose runner is still writing (its manifest says ``finished: false``) is
skipped with the reason, and comes in with the next ingest once it has finished, been interrupted or been reaped.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from .errors import RunDirError, WaapError
from .rundir import MANIFEST, SAMPLES, iter_jsonl, read_json_object, read_manifest
from .summary import SUMMARY

__all__ = [
    "DEFAULT_STORE_NAME",
    "STORE_SCHEMA_VERSION",
    "IngestReport",
    "ResultStore",
    "StoreError",
    "find_run_dirs",
    "store_path",
]

STORE_SCHEMA_VERSION = 1
DEFAULT_STORE_NAME = "waap.db"  # the embedded store, in the results folder
SESSION_FILE = "session.json"
_BATCH = 5000  # sample rows per executemany

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY, profile_source TEXT, image TEXT, runs_planned INTEGER, finished INTEGER,
    interrupted INTEGER, error TEXT, ingested_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, dir TEXT NOT NULL, target TEXT, target_index INTEGER,
    repeat_index INTEGER, tool TEXT, image TEXT, image_id TEXT, digest TEXT, args TEXT, status TEXT NOT NULL,
    stop_reason TEXT, exit_code INTEGER, oom_killed INTEGER, error TEXT, start_ns INTEGER, end_ns INTEGER,
    duration_s REAL, started_at TEXT, ended_at TEXT, board TEXT, arch TEXT, hostname TEXT, profiler_version TEXT,
    samples INTEGER NOT NULL DEFAULT 0, manifest TEXT NOT NULL, ingested_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_image ON runs (image, start_ns);
CREATE INDEX IF NOT EXISTS runs_by_session ON runs (session_id);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, metric TEXT NOT NULL, unit TEXT, kind TEXT, source TEXT, count INTEGER,
    min REAL, mean REAL, p50 REAL, p95 REAL, max REAL, last REAL, increase REAL, rate_per_s REAL,
    PRIMARY KEY (run_id, metric)
);
CREATE TABLE IF NOT EXISTS samples (
    run_id TEXT NOT NULL, ts_ns INTEGER NOT NULL, source TEXT NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL,
    labels TEXT
);
CREATE INDEX IF NOT EXISTS samples_by_run ON samples (run_id, metric, ts_ns);
CREATE TABLE IF NOT EXISTS tools (
    run_id TEXT NOT NULL, name TEXT NOT NULL, status TEXT, error TEXT, highlights TEXT, entry TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""
_RUN_TABLES = ("samples", "metrics", "tools", "runs")
_METRIC_FIELDS = ("unit", "kind", "source", "count", "min", "mean", "p50", "p95", "max", "last", "increase",
                  "rate_per_s")


class StoreError(WaapError):
    """The store cannot be opened, is of another schema version, or a write failed."""


@dataclass
class IngestReport:
    """What an ingest did: run ids stored, run directories skipped (with why)."""

    stored: List[str] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (path, reason)
    samples: int = 0


def store_path(value: str) -> Path:
    """A store given as a file path or a ``sqlite:///path`` URL (``sqlite:////abs/path`` for an absolute one)."""
    prefix = "sqlite:///"
    if value.startswith(prefix) and len(value) > len(prefix):
        return Path(value[len(prefix):])
    if "://" in value:
        scheme = value.split("://", 1)[0]
        raise StoreError(f"unsupported store {scheme}://: give a SQLite file path (or sqlite:///path)")
    if not value:
        raise StoreError("no store given")
    return Path(value)


def find_run_dirs(path: Path) -> List[Path]:
    """The run directories at ``path``: itself (a run directory), its runs (a session folder, which has a
    session.json), or the runs of every session in it (a results folder), in name order. Only those levels are
    looked at: a ``manifest.json`` the app wrote into its ``output/`` folder is never taken for a run."""
    if (path / MANIFEST).is_file():
        return [path]
    if not path.is_dir():
        raise StoreError(f"{path} is not a run directory, a session folder or a results folder")
    sessions = [path] if (path / SESSION_FILE).is_file() else sorted(
        p.parent for p in path.glob(f"*/{SESSION_FILE}") if p.is_file())
    runs = [run for session in sessions for run in sorted(p.parent for p in session.glob(f"*/{MANIFEST}"))]
    if not runs:
        raise StoreError(f"no run directories in {path}: expected a run directory (with {MANIFEST}), a session "
                         f"folder (with {SESSION_FILE}) or a results folder of sessions")
    return runs


_INT64 = 2**63


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float: a damaged file, not a measurement
        return None
    return number if math.isfinite(number) else None


def _int(value: Any) -> Optional[int]:
    """An integer SQLite can hold (64 bits), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64:
        return value
    return None


def _list(value: Any) -> List[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def _object(data: Mapping[str, Any], key: str) -> Dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


class ResultStore:
    """One SQLite results store. Use as a context manager, or ``close()`` it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=30)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the store {path}: {e}") from e
        try:
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                with self._db:
                    self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(STORE_SCHEMA_VERSION),))
            elif row[0] != str(STORE_SCHEMA_VERSION):
                raise StoreError(f"the store {path} has schema version {row[0]}; this WaAP reads version "
                                 f"{STORE_SCHEMA_VERSION}: ingest the run directories into a new store")
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise StoreError(f"{path} is not a WaAP store (SQLite says: {e})") from e
        except StoreError:
            self._db.close()
            raise

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # -- writing -----------------------------------------------------------------------------------------------

    def ingest(self, paths: Iterable[Path], *, samples: bool = True, now_ns: int = 0) -> IngestReport:
        """Ingest every run directory found at ``paths`` (runs, sessions or results folders: ``find_run_dirs``),
        one transaction per run. A run that cannot be read is skipped with the reason; the others go on."""
        report = IngestReport()
        found = [d for path in paths for d in find_run_dirs(path)]
        for run_dir in {d.resolve(): d for d in found}.values():  # a run named twice (its session and itself): once
            try:
                run_id, count = self.ingest_run(run_dir, samples=samples, now_ns=now_ns)
            except RunDirError as e:
                report.skipped.append((str(run_dir), str(e)))
                continue
            if run_id not in report.stored:
                report.stored.append(run_id)
            report.samples += count
        return report

    def ingest_run(self, run_dir: Path, *, samples: bool = True, now_ns: int = 0) -> Tuple[str, int]:
        """Store one run directory, replacing what the store had of it: ``(run_id, samples stored)``. Raises
        ``RunDirError`` for a directory that is not a finished run."""
        manifest = read_manifest(run_dir)
        run_id = manifest.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            raise RunDirError(f"{run_dir / MANIFEST} has no run_id")
        if manifest.get("finished") is not True:
            raise RunDirError(f"{run_dir.name} has not finished (its runner may still be writing it): not ingested")
        session_id = _text(manifest.get("session_id")) or run_id.split(".", 1)[0]
        try:
            with self._db:
                for table in _RUN_TABLES:
                    self._db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
                self._session(run_dir.parent, session_id, now_ns)
                stored = self._samples(run_id, run_dir / SAMPLES) if samples else 0
                self._run(run_dir, run_id, session_id, manifest, stored, now_ns)
                self._metrics(run_id, read_json_object(run_dir / SUMMARY))
                self._tools(run_id, _list(manifest.get("tools")))
        except (ValueError, TypeError, OverflowError) as e:  # a value no column can hold: the run is damaged
            raise RunDirError(f"{run_dir.name} cannot be stored: {type(e).__name__}: {e}") from e
        except sqlite3.Error as e:
            raise StoreError(f"storing {run_dir} in {self.path} failed: {e}") from e
        return run_id, stored

    def _session(self, session_dir: Path, session_id: str, now_ns: int) -> None:
        s = read_json_object(session_dir / SESSION_FILE)
        if s.get("session_id") not in (None, session_id):
            s = {}  # a run directory copied out of its session: keep what the run knows
        self._db.execute(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (session_id, _text(s.get("profile_source")), _text(s.get("image")), _int(s.get("runs_planned")),
             None if "finished" not in s else int(bool(s["finished"])),
             None if "interrupted" not in s else int(bool(s["interrupted"])), _text(s.get("error")), now_ns),
        )

    def _run(self, run_dir: Path, run_id: str, session_id: str, m: Mapping[str, Any], samples: int,
             now_ns: int) -> None:
        app, target, device, profiler = (_object(m, key) for key in ("app", "target", "device", "profiler"))
        tools = [t.get("name") for t in _list(m.get("tools")) if isinstance(t, dict)]
        self._db.execute(
            f"INSERT INTO runs VALUES ({', '.join('?' * 28)})",
            (run_id, session_id, run_dir.name, _text(target.get("name")), _int(target.get("index")),
             _int(target.get("repeat_index")), _text(tools[0]) if tools else None, _text(app.get("image")),
             _text(app.get("image_id")), _text(app.get("digest")), json.dumps(app.get("args") or []),
             _text(m.get("status")) or "unknown", _text(m.get("stop_reason")), _int(m.get("exit_code")),
             None if m.get("oom_killed") is None else int(bool(m.get("oom_killed"))), _text(m.get("error")),
             _int(m.get("start_ns")), _int(m.get("end_ns")), _number(m.get("duration_s")),
             _text(m.get("started_at")), _text(m.get("ended_at")), _text(device.get("board")),
             _text(device.get("arch")), _text(device.get("hostname")), _text(profiler.get("version")), samples,
             json.dumps(m, sort_keys=True), now_ns),
        )

    def _metrics(self, run_id: str, summary: Mapping[str, Any]) -> None:
        metrics = summary.get("metrics")
        if not isinstance(metrics, dict):
            return
        rows = []
        for key, stats in metrics.items():
            if not isinstance(stats, dict):
                continue
            values = [_text(stats.get(f)) if f in ("unit", "kind", "source") else
                      (_int(stats.get(f)) if f == "count" else _number(stats.get(f))) for f in _METRIC_FIELDS]
            rows.append((run_id, str(key), *values))
        self._db.executemany(f"INSERT INTO metrics VALUES ({', '.join('?' * (2 + len(_METRIC_FIELDS)))})", rows)

    def _samples(self, run_id: str, path: Path) -> int:
        stored = 0
        batch: List[Tuple[Any, ...]] = []
        for row in _sample_rows(run_id, iter_jsonl(path)):
            batch.append(row)
            if len(batch) >= _BATCH:
                self._db.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?)", batch)
                stored += len(batch)
                batch = []
        if batch:
            self._db.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?)", batch)
            stored += len(batch)
        return stored

    def _tools(self, run_id: str, entries: List[Any]) -> None:
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                self._db.execute(
                    "INSERT OR REPLACE INTO tools VALUES (?, ?, ?, ?, ?, ?)",
                    (run_id, entry["name"], _text(entry.get("status")), _text(entry.get("error")),
                     json.dumps(entry.get("highlights") or []), json.dumps(entry, sort_keys=True)),
                )

    # -- reading -----------------------------------------------------------------------------------------------

    def runs(self, *, image: Optional[str] = None, limit: int = 20) -> List[Dict[str, Any]]:
        """The latest runs (newest first), optionally of one image."""
        sql = ("SELECT run_id, session_id, dir, image, tool, status, stop_reason, exit_code, duration_s, started_at, "
               "samples FROM runs")
        args: Sequence[Any] = ()
        if image is not None:
            sql += " WHERE image = ?"
            args = (image,)
        sql += " ORDER BY start_ns IS NULL, start_ns DESC, run_id DESC LIMIT ?"
        cursor = self._db.execute(sql, (*args, limit))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def metric(self, run_id: str, metric: str) -> Optional[Dict[str, Any]]:
        """One metric's statistics in one run, or None."""
        cursor = self._db.execute("SELECT * FROM metrics WHERE run_id = ? AND metric = ?", (run_id, metric))
        row = cursor.fetchone()
        return None if row is None else dict(zip([d[0] for d in cursor.description], row))

    def count(self, table: str) -> int:
        if table not in ("sessions", *_RUN_TABLES):
            raise ValueError(f"no table {table!r}")
        return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _sample_rows(run_id: str, records: Iterable[Mapping[str, Any]]) -> Iterator[Tuple[Any, ...]]:
    """(run_id, ts_ns, source, metric, value, labels) for every finite numeric value of every sample record."""
    for record in records:
        ts = _int(record.get("ts_ns"))
        values = record.get("values")
        if ts is None or not isinstance(values, dict):
            continue
        source = str(record.get("source") or "")
        labels = record.get("labels")
        labels_text = json.dumps(labels, sort_keys=True) if isinstance(labels, dict) and labels else None
        for metric, value in values.items():
            number = _number(value)
            if number is not None:
                yield run_id, ts, source, str(metric), number, labels_text
