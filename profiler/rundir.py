"""The run directory: one folder per target run holding the manifest, the event log, samples and the app's log.

Writers stream and flush so that a crash or a kill loses at most a torn last line, which readers drop.
The manifest is written when the run starts (status ``partial``) and replaced atomically when it ends.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Mapping, Optional

from .errors import RunDirError

__all__ = [
    "APP_LOG",
    "EVENTS",
    "MANIFEST",
    "OUTPUT_DIR",
    "SAMPLES",
    "SCHEMA_VERSION",
    "JsonlWriter",
    "RunDir",
    "iter_jsonl",
    "now_ns",
    "read_json_object",
    "read_jsonl",
    "read_manifest",
    "write_json_atomic",
]

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
EVENTS = "events.jsonl"
SAMPLES = "samples.jsonl"
APP_LOG = "app.log"
OUTPUT_DIR = "output"  # what the app wrote to /app/profiling_output


def now_ns() -> int:
    """Wall-clock time as integer Unix nanoseconds (UTC), the timestamp of every record."""
    return time.time_ns()


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON so that readers see either the old or the new file, never half of one."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise RunDirError(f"cannot write {path}: {e.strerror or e}") from e


class JsonlWriter:
    """Append-only JSON Lines file, flushed after every record; safe to call from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh: Optional[IO[str]] = None  # opened at the first record
        self._closed = False

    def write(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False, default=str) + "\n"
        with self._lock:
            if self._closed:
                raise RunDirError(f"{self.path} is closed")
            try:
                if self._fh is None:
                    self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
                    if _ends_torn(self.path):
                        self._fh.write("\n")  # a writer killed mid-line: never glue our record onto its torn one
                self._fh.write(line)
                self._fh.flush()
            except OSError as e:
                raise RunDirError(f"cannot write {self.path}: {e.strerror or e}") from e

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def _ends_torn(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except OSError:
        return False


def iter_jsonl(path: Path) -> Iterator[Dict[str, Any]]:
    """Each complete record of a JSON Lines file, read as it goes; a torn or unparsable line (a kill mid-write) is
    dropped. A missing file has no records."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break  # torn last line
                try:
                    value = json.loads(line)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    yield value
    except FileNotFoundError:
        return


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    """Every complete record of a JSON Lines file; a torn or unparsable line (a kill mid-write) is dropped."""
    return list(iter_jsonl(path))


def read_json_object(path: Path) -> Dict[str, Any]:
    """A JSON file holding an object, or ``{}`` when it is missing, unreadable or something else: for readers that
    show what they can (summaries, session files) and must not fail on a damaged run directory."""
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_manifest(run_dir: Path) -> Dict[str, Any]:
    path = run_dir / MANIFEST
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError as e:
        raise RunDirError(f"{run_dir} is not a run directory: no {MANIFEST}") from e
    except (OSError, ValueError) as e:
        raise RunDirError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object")
    return data


class RunDir:
    """Writer for one run directory. Create it, ``start`` the manifest, log events, ``finish``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=False)
            self.output.mkdir()
        except FileExistsError as e:
            raise RunDirError(f"run directory {path} already exists") from e
        except OSError as e:
            raise RunDirError(f"cannot create run directory {path}: {e.strerror or e}") from e
        self._manifest: Dict[str, Any] = {}
        self._events = JsonlWriter(path / EVENTS)

    @property
    def output(self) -> Path:
        return self.path / OUTPUT_DIR

    @property
    def app_log(self) -> Path:
        return self.path / APP_LOG

    @property
    def manifest(self) -> Dict[str, Any]:
        return dict(self._manifest)

    def start(self, manifest: Mapping[str, Any]) -> None:
        """Write the first manifest: a reader that finds only this one knows the run did not finish."""
        self._manifest = {"schema_version": SCHEMA_VERSION, **manifest, "status": "partial", "finished": False}
        write_json_atomic(self.path / MANIFEST, self._manifest)

    def update(self, **fields: Any) -> None:
        """Merge fields into the manifest and rewrite it (still unfinished)."""
        self._manifest.update(fields)
        write_json_atomic(self.path / MANIFEST, self._manifest)

    def event(self, kind: str, **fields: Any) -> None:
        self._events.write({"ts_ns": now_ns(), "event": kind, **fields})

    def finish(self, status: str, **fields: Any) -> Dict[str, Any]:
        """Replace the manifest with its final form. ``status`` is complete, partial or failed."""
        if status not in ("complete", "partial", "failed"):
            raise ValueError(f"bad run status {status!r}")
        self._manifest.update(fields)
        self._manifest.update(status=status, finished=True)
        write_json_atomic(self.path / MANIFEST, self._manifest)
        self._events.close()
        return dict(self._manifest)

    def iter_files(self) -> Iterator[Path]:
        yield from sorted(p for p in self.path.rglob("*") if p.is_file())
