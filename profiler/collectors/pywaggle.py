"""pywaggle apps, unchanged: follow the ``data.ndjson`` that pywaggle writes when ``PYWAGGLE_LOG_DIR`` is set.

What pywaggle does with ``PYWAGGLE_LOG_DIR`` (read in 0.56.3's source, and run; DESIGN.md dates the feature to
0.54): ``Plugin()`` opens ``$PYWAGGLE_LOG_DIR/data.ndjson`` for appending (creating the folder and an ``uploads/``
folder in it), and every ``plugin.publish(name, value, meta=..., timestamp=...)`` — ``plugin.timeit(name)`` is a
``publish`` of the block's duration in nanoseconds (an int) — prints one line and flushes at once::

    {"meta":{"camera":"left"},"name":"test.fps","timestamp":"2026-11-22T01:25:59.996858591","value":30.0}

(keys sorted, compact separators; ``value`` is an int, float, bool or str — ``NaN``/``Infinity`` as Python's json
writes them; ``upload_file`` adds a line named ``upload`` whose value is the path of the copy under ``uploads/``).
The line is written before the message is queued for RabbitMQ, and publishing needs no broker: without one,
pywaggle's publisher thread retries in the background (an app's exit waits up to a second for it), and the queued
messages stay in the app's memory (about 220 bytes per publish).

The timestamp is ``datetime.fromtimestamp(ns / 1e9).isoformat() + f"{ns % 1000:03d}"``: the app container's *local*
time without a zone, microseconds rounded half-even from a float and then the last three digits of the
nanoseconds — so ``.123457789`` stands for ``…123456789`` ns, and when the rounded microseconds are zero isoformat
leaves the fraction out and the three digits stick to the seconds (``22:13:20123``). ``parse_timestamp`` inverts
that: to the nanosecond pywaggle was given for about 95% of times; for the rest the format cannot tell two values
1 µs apart (read plainly, half of all times would be 1 µs off).

The zone: the runner sets ``TZ=UTC`` in the app container with ``PYWAGGLE_LOG_DIR`` (``pywaggle_env``). glibc takes
it without tzdata (checked in waap-base, which has none), and it overrides the image's ``/etc/localtime`` and ``TZ``,
so the naive times are UTC. A follower can be told another zone (``tz``) for an app whose TZ could not be set; a
timestamp that carries ``Z`` or an offset is taken as written. Samples stamped minutes ahead of the runner's clock
are counted (``future``): the sign of a zone east of UTC.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import threading
import time
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Set

from .base import MetricInfo, Sample, SampleSink

__all__ = [
    "PYWAGGLE_APP_DIR",
    "PYWAGGLE_CATALOG",
    "PYWAGGLE_DATA_FILE",
    "PYWAGGLE_DIR_NAME",
    "PYWAGGLE_SOURCE",
    "PywaggleFollower",
    "parse_timestamp",
    "prepare_pywaggle_dir",
    "pywaggle_env",
]

PYWAGGLE_DIR_NAME = "pywaggle"  # inside the run's output folder
PYWAGGLE_DATA_FILE = "data.ndjson"  # pywaggle's name for it
# profiler.app.APP_OUTPUT_DIR (not imported: this module needs no Docker SDK; a test keeps the two equal)
PYWAGGLE_APP_DIR = "/app/profiling_output/" + PYWAGGLE_DIR_NAME
PYWAGGLE_SOURCE = "pywaggle"  # the samples' "source"
METRIC_PREFIX = "app."

PYWAGGLE_CATALOG = (
    MetricInfo(
        name="app.<name>",
        unit="as published",
        kind="gauge",
        meaning=(
            "a pywaggle app's plugin.publish(name, value) with a numeric value (bool as 0/1), at the publish's own "
            "timestamp, labels = its meta; plugin.timeit(name) publishes the block's duration in nanoseconds. "
            "Read from $PYWAGGLE_LOG_DIR/data.ndjson; string values (uploads) are counted, not sampled"
        ),
    ),
)


def pywaggle_env() -> Dict[str, str]:
    """What the runner sets in the app container: pywaggle's log folder in the output mount, and UTC as the
    container's local time (pywaggle writes local time without a zone). Both override what the image sets."""
    return {"PYWAGGLE_LOG_DIR": PYWAGGLE_APP_DIR, "TZ": "UTC"}


def prepare_pywaggle_dir(output_dir: Path) -> Path:
    """Create the pywaggle folder in the run's output folder, writable by any user the app runs as (as the output
    folder is), and return the path of the data file to follow there. pywaggle would create the folder itself,
    but only as the app's user."""
    folder = output_dir / PYWAGGLE_DIR_NAME
    folder.mkdir(exist_ok=True)
    folder.chmod(0o777)
    return folder / PYWAGGLE_DATA_FILE


# -- timestamps -------------------------------------------------------------------------------------------------
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})"
    r"(?:\.(\d{1,9})|(\d{3}))?"  # a fraction, or pywaggle's three digits stuck to the seconds
    r"(Z|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)


def _epoch_us(moment: datetime) -> int:
    return (moment - _EPOCH) // _US


def _pywaggle_us(ns: int) -> int:
    """The microseconds pywaggle prints for ``ns``, as Unix microseconds (the rounding does not depend on the zone)."""
    return _epoch_us(datetime.fromtimestamp(ns / 1e9, timezone.utc))


def parse_timestamp(text: str, tz: tzinfo = timezone.utc) -> int:
    """Unix nanoseconds (UTC) of an ISO 8601 time as pywaggle writes it; a time without a zone is in ``tz``.

    pywaggle's form (no zone; 9 fraction digits, or 3 digits right after the seconds) is inverted: of the two
    nanosecond values its rounding could have printed so, the one that prints so — exact, except where the float's
    error lets both print the same (about 10% of times; then a guess, 1 µs off half the time). Other forms (1-8
    digits, a zone) are read as plain decimal fractions. Raises ValueError for anything else."""
    m = _TIMESTAMP.fullmatch(text)
    if m is None:
        raise ValueError(f"not an ISO 8601 time: {text[:64]!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction, stuck, offset = m.group(7), m.group(8), m.group(9)
    zone = tz
    if offset == "Z":
        zone = timezone.utc
    elif offset:
        hours, minutes = int(offset[1:3]), int(offset[-2:])
        if hours > 23 or minutes > 59:
            raise ValueError(f"bad UTC offset in {text[:64]!r}")
        zone = timezone((-1 if offset[0] == "-" else 1) * timedelta(hours=hours, minutes=minutes))
    seconds_us = _epoch_us(datetime(year, month, day, hour, minute, second, tzinfo=zone))
    if offset is None and (stuck is not None or (fraction is not None and len(fraction) == 9)):
        printed_us = seconds_us + (int(fraction[:6]) if fraction else 0)
        nanos = int(stuck if stuck is not None else fraction[6:])
        # the true microsecond is the printed one or the one before (rounded up); when the float's error lets both
        # print the same, the one that rounds so without that error comes first
        order = (printed_us - 1, printed_us) if nanos > 500 else (printed_us, printed_us - 1)
        for us in order:
            if _pywaggle_us(us * 1000 + nanos) == printed_us:
                return us * 1000 + nanos
        return printed_us * 1000 + nanos  # not pywaggle's rounding: read it as written
    if stuck is not None:
        return seconds_us * 1000 + int(stuck)
    return seconds_us * 1000 + int((fraction or "").ljust(9, "0"))


# -- the follower -----------------------------------------------------------------------------------------------
_NAME = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*", re.ASCII)  # pywaggle's rule for publish names
_MAX_NAME_CHARS = 128  # pywaggle's limit
FUTURE_SLACK_NS = 120 * 10**9
_READ_CHUNK = 64 * 1024
COUNTER_NAMES = ("accepted", "non_numeric", "rejected", "oversize", "torn", "future", "sink_errors")


class PywaggleFollower:
    """Follows a pywaggle ``data.ndjson`` while the app runs and turns every numeric record into a ``Sample``:
    ``ts_ns`` from the record's timestamp (UTC ns, see ``parse_timestamp``), ``source`` "pywaggle", ``values``
    ``{"app.<name>": float(value)}``, ``labels`` the record's meta (string pairs only; at most ``max_labels``, keys
    over 64 characters left out, values cut to 256).

    Decisions: a bool is 1.0/0.0 (pywaggle accepts it as an int). A string value (``upload`` records, text) and a
    number that is not finite (NaN, ±Infinity, an int too large for a float) is no sample — never a fake number —
    and is counted as ``non_numeric``; they are not events either (the file keeps them). A record needs pywaggle's
    shape (an object with a valid ``name``, a ``timestamp`` and an int/float/bool/str ``value``), else it is counted
    ``rejected``, as are lines over ``max_line_bytes`` (also ``oversize``), names beyond ``max_names`` distinct metrics,
    and a torn last line still incomplete at ``stop`` (also ``torn``). Nothing in the file can raise out of here.

    The file may appear late, or never: it is looked for at every poll (the last path component is opened without
    following symbolic links, and only a regular file is read: the folder is the app's). Only complete lines are
    read; an incomplete last line waits in a buffer of at most ``max_line_bytes`` until its newline comes. A file
    that is truncated or replaced is read from its start again.

    API: ``start()`` polls every ``poll_s`` on a daemon thread; ``stop()`` ends it and reads once more, so what was
    published before the app exited is not lost; ``poll()`` reads what is there now (the thread's step, or for a
    host that drives its own loop); ``counters`` are the tallies above. ``clock_ns`` is the runner's wall clock,
    used only to count ``future`` samples.
    """

    def __init__(
        self,
        path: Path,
        sink: SampleSink,
        *,
        poll_s: float = 0.2,
        clock_ns: Callable[[], int] = time.time_ns,
        tz: tzinfo = timezone.utc,
        max_line_bytes: int = 64 * 1024,
        max_names: int = 1000,
        max_labels: int = 32,
    ) -> None:
        if poll_s <= 0:
            raise ValueError("poll_s must be positive")
        self.path = Path(path)
        self.sink = sink
        self.poll_s = poll_s
        self.clock_ns = clock_ns
        self.tz = tz
        self.max_line_bytes = max_line_bytes
        self.max_names = max_names
        self.max_labels = max_labels
        self.error: Optional[str] = None  # the last unexpected failure of a poll (the thread goes on)
        self._counts: Dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self._names: Set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._stopped = False
        self._closed = False
        self._dir_fd: Optional[int] = None
        self._fd: Optional[int] = None
        self._offset = 0
        self._partial = bytearray()
        self._skipping = False  # inside a line already rejected as oversize, until its newline

    # -- API ------------------------------------------------------------------------------------------------
    @property
    def counters(self) -> Dict[str, int]:
        return dict(self._counts)

    def start(self) -> None:
        if self._thread is not None or self._stopped:
            raise RuntimeError("a PywaggleFollower starts once")
        self._thread = threading.Thread(target=self._run, name="waap-pywaggle", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the thread, read what is left, drop (and count) a torn last line, close the file. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                self.error = f"the follower thread did not end within {timeout_s:g}s; its last read was skipped"
                return
        self._poll_safely()
        with self._lock:
            self._drop_partial()
            self._close()
            self._closed = True

    def poll(self) -> None:
        """Read every complete line there is now and hand its samples to the sink."""
        with self._lock:
            if self._closed or (self._fd is None and not self._open()):
                return
            assert self._fd is not None
            self._read_to_end()
            if self._replaced_or_truncated():
                self._read_to_end()  # a replaced file: what its writer added to it last is still in this fd
                self._drop_partial()
                self._close_file()
                if self._open():
                    self._read_to_end()

    # -- reading --------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._poll_safely()
            if self._stop.wait(self.poll_s):
                return

    def _poll_safely(self) -> None:
        try:
            self.poll()
        except Exception as e:  # a follower's fault must not end the thread, nor the run
            self.error = f"{type(e).__name__}: {e}"

    def _open(self) -> bool:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            if self._dir_fd is None:
                self._dir_fd = os.open(self.path.parent, flags | os.O_DIRECTORY)
            fd = os.open(self.path.name, flags | os.O_NONBLOCK, dir_fd=self._dir_fd)
        except OSError:  # not there yet (or a link, which is not followed)
            return False
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return False
        self._fd, self._offset = fd, 0
        return True

    def _read_to_end(self) -> None:
        assert self._fd is not None
        while True:
            chunk = os.pread(self._fd, _READ_CHUNK, self._offset)
            if not chunk:
                return
            self._offset += len(chunk)
            self._feed(chunk)

    def _replaced_or_truncated(self) -> bool:
        assert self._fd is not None and self._dir_fd is not None
        if os.fstat(self._fd).st_size < self._offset:
            return True
        try:
            now = os.stat(self.path.name, dir_fd=self._dir_fd, follow_symlinks=False)
        except OSError:
            return False  # removed: keep the open file, which may still grow
        return now.st_ino != os.fstat(self._fd).st_ino

    def _feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            piece = chunk[start:end]
            start = end + 1
            if self._skipping:
                self._skipping = False
                continue
            if self._partial:
                self._partial += piece
                line = bytes(self._partial)
                self._partial.clear()
            else:
                line = piece
            if len(line) > self.max_line_bytes:
                self._count("oversize", "rejected")
            else:
                self._line(line)
        rest = chunk[start:]
        if rest and not self._skipping:
            if len(self._partial) + len(rest) > self.max_line_bytes:
                self._partial.clear()
                self._skipping = True
                self._count("oversize", "rejected")
            else:
                self._partial += rest

    def _drop_partial(self) -> None:
        if self._partial:
            self._count("torn", "rejected")
        self._partial.clear()
        self._skipping = False

    def _close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._offset = 0

    def _close(self) -> None:
        self._close_file()
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def _count(self, *names: str) -> None:
        for name in names:
            self._counts[name] += 1

    # -- records --------------------------------------------------------------------------------------------
    def _line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            record = json.loads(line.decode("utf-8"))
            sample = self._sample(record)
        except Exception:  # bad UTF-8 or JSON, too deep, too many digits, an impossible date...
            self._count("rejected")
            return
        if sample is None:
            return
        try:
            self.sink(sample)
        except Exception as e:
            self._count("sink_errors")
            self.error = f"the sample sink failed: {type(e).__name__}: {e}"
            return
        self._count("accepted")

    def _sample(self, record: Any) -> Optional[Sample]:
        """The record's sample; None when it has none (counted here). Raises on a malformed record."""
        if not isinstance(record, dict):
            raise ValueError("not an object")
        name, stamp, value = record.get("name"), record.get("timestamp"), record.get("value")
        if not (isinstance(name, str) and len(name) <= _MAX_NAME_CHARS and _NAME.fullmatch(name)):
            raise ValueError("not a pywaggle publish name")
        if not isinstance(stamp, str):
            raise ValueError("no timestamp")
        ts_ns = parse_timestamp(stamp, self.tz)
        if isinstance(value, str):
            number = math.nan
        elif isinstance(value, (int, float)):  # bool included: True -> 1.0
            try:
                number = float(value)
            except OverflowError:
                number = math.nan
        else:
            raise ValueError("value is not an int, float, bool or str")
        if not math.isfinite(number):
            self._count("non_numeric")
            return None
        metric = METRIC_PREFIX + name
        if metric not in self._names:
            if len(self._names) >= self.max_names:
                raise ValueError("too many distinct names")
            self._names.add(metric)
        if ts_ns > self.clock_ns() + FUTURE_SLACK_NS:
            self._count("future")
        return Sample(ts_ns=ts_ns, source=PYWAGGLE_SOURCE, values={metric: number}, labels=self._labels(record))

    def _labels(self, record: Dict[str, Any]) -> Dict[str, str]:
        meta = record.get("meta")
        if not isinstance(meta, dict):
            return {}
        labels: Dict[str, str] = {}
        for key, value in meta.items():
            if len(labels) >= self.max_labels:
                break
            if isinstance(key, str) and isinstance(value, str) and len(key) <= 64:
                labels[key] = value[:256]
        return labels
