"""The runner side of the metrics socket: a per-run Unix socket on which the app reports custom metrics.

One ``MetricsServer`` per run listens on ``<run_dir>/sock/metrics.sock``; the runner bind-mounts that folder at
``/run/waap`` in the app container and tells the app where the socket is in ``WAAP_METRICS_SOCKET``. The protocol
(newline-delimited JSON, one message per line) is documented in docs/metrics-socket.md; ``profiler/plugin.py`` is
the Python client.

The server is one thread with a ``selectors`` loop over non-blocking sockets. It trusts nothing it receives: every
line is capped (a longer one is skipped up to its newline without being buffered), decoded strictly, parsed without
NaN/Infinity, validated against the protocol and either turned into ``Sample``s or rejected and counted by reason.
Connections are capped, replies never block (a reply the client does not read is dropped), and a client cannot
speak for another run: a message belongs to the run whose socket it arrived on, whatever its payload says.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import selectors
import shutil
import socket
import stat
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from .collectors.base import Sample, SampleSink

__all__ = [
    "COUNTER_NAMES",
    "ENV_FLUSH_S",
    "ENV_SOCKET",
    "MAX_CONNECTIONS",
    "MAX_LINE_BYTES",
    "PLUGIN_FILE",
    "PROTOCOL_VERSION",
    "PYTHONPATH_IN_APP",
    "REJECT_REASONS",
    "SOCKET_DIR_IN_APP",
    "SOCKET_DIR_NAME",
    "SOCKET_NAME",
    "SOCKET_PATH_IN_APP",
    "SOURCE",
    "MetricsServer",
    "metric_keys",
    "prepare_socket_dir",
]

# -- where things are ------------------------------------------------------------------------------------------------
SOCKET_DIR_NAME = "sock"  # <run_dir>/sock/ on the runner's side
SOCKET_DIR_IN_APP = "/run/waap"  # where that folder is bind-mounted (read-only) in the app container
SOCKET_NAME = "metrics.sock"
SOCKET_PATH_IN_APP = f"{SOCKET_DIR_IN_APP}/{SOCKET_NAME}"
PLUGIN_FILE = "waap_plugin.py"  # a copy of profiler/plugin.py in the socket folder: `import waap_plugin`
PYTHONPATH_IN_APP = SOCKET_DIR_IN_APP  # prepended to the app's PYTHONPATH so that the copy is importable
ENV_SOCKET = "WAAP_METRICS_SOCKET"  # the socket's path in the app container
ENV_FLUSH_S = "WAAP_METRICS_FLUSH_S"  # the Python client's flush period (seconds, default 1)

PROTOCOL_VERSION = 1
SOURCE = "custom"  # the ``source`` of every sample made from the socket

# -- limits ----------------------------------------------------------------------------------------------------------
MAX_LINE_BYTES = 64 * 1024  # a longer line is rejected and skipped up to its newline, never buffered
MAX_CONNECTIONS = 64  # more are accepted and closed at once (or replace a connection idle for IDLE_EVICT_S)
IDLE_EVICT_S = 10.0
MAX_NAMES = 1000  # distinct (type, name) pairs per run
MAX_STREAMS = 64  # remembered ``src`` streams (least recently used forgotten first)
MAX_NAME_CHARS = 128
MAX_SRC_CHARS = 64
MAX_ATTRS = 16
MAX_ATTR_CHARS = 256
MAX_REPLY_BACKLOG = 64 * 1024  # replies waiting for a client that does not read; beyond, replies are dropped
TS_WINDOW_NS = 600 * 10**9  # a message's ts_ns is used only within ±10 min of its arrival
RECV_BYTES = 64 * 1024
DRAIN_LIMIT_BYTES = 16 * 1024 * 1024  # per connection, read after stop() before closing
LISTEN_BACKLOG = 128

_NAME = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
_PARAM_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_ATTR_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_MAX_ABS = 1e300  # numbers beyond this are not measurements; also keeps float() of huge integers finite

# Why a line was rejected: each is a counter ``rejected_<reason>``; ``lines_rejected`` is their sum.
REJECT_REASONS: Tuple[str, ...] = (
    "line_too_long",  # more than MAX_LINE_BYTES before the newline
    "incomplete_line",  # the connection ended (or was closed) in the middle of a line
    "invalid_utf8",
    "invalid_json",
    "not_finite",  # NaN, Infinity, -Infinity, or a number too large to be finite
    "too_deep",  # nesting deeper than the parser allows, or a nested value where the protocol has none
    "not_object",  # valid JSON, but not an object
    "unsupported_version",  # "v" other than 1
    "unknown_type",
    "invalid_name",
    "invalid_field",  # a field of the wrong type or range
    "name_conflict",  # the metric would write a key another metric of this run already writes
    "too_many_names",
)
COUNTER_NAMES: Tuple[str, ...] = (
    "connections_accepted",
    "connections_refused",  # over MAX_CONNECTIONS: accepted and closed at once
    "connections_evicted",  # idle connections closed to make room for a new one
    "connections_peak",
    "bytes_received",
    "lines_accepted",
    "lines_rejected",
    *(f"rejected_{r}" for r in REJECT_REASONS),
    "duplicates",  # accepted, already known (a client's resent report): no new sample
    "ts_replaced",  # ts_ns too far from the arrival time: the arrival time was used
    "samples",
    "replies_sent",
    "replies_dropped",
    "streams_forgotten",
    "line_buffer_peak_bytes",  # the largest partial line held for any connection
    "sink_errors",
    "internal_errors",
)

Number = Union[int, float]
# a timer's sample keys: running count and seconds (counters), then mean, min, max over one report (gauges)
TIMER_SUFFIXES = ("count_total", "seconds_total", "mean_seconds", "min_seconds", "max_seconds")


def metric_keys(kind: str, name: str) -> Tuple[str, ...]:
    """The sample value names a metric of this type and name writes (docs/metrics-socket.md, "Samples")."""
    base = f"app.{name}"
    if kind == "counter":
        return (f"{base}.total",)
    if kind == "gauge":
        return (base,)
    if kind == "timer":
        return tuple(f"{base}.{s}" for s in TIMER_SUFFIXES)
    if kind == "event":
        return (f"{base}.events_total",)
    raise ValueError(f"no metric type {kind!r}")


def prepare_socket_dir(sock_dir: Path) -> Path:
    """Create the socket folder (traversable by any user: the app may run as any user) and put the Python client
    in it as ``waap_plugin.py``, readable by all. Returns the folder. Safe to call again."""
    sock_dir.mkdir(parents=True, exist_ok=True)
    sock_dir.chmod(0o755)
    plugin = Path(__file__).resolve().with_name("plugin.py")
    target = sock_dir / PLUGIN_FILE
    tmp = sock_dir / f".{PLUGIN_FILE}.tmp"
    shutil.copyfile(plugin, tmp)
    tmp.chmod(0o644)
    os.replace(tmp, target)
    return sock_dir


class _Reject(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _NonFinite(ValueError):
    pass


def _refuse_constant(token: str) -> Any:
    raise _NonFinite(token)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 would be inf: refused anywhere in a message, like NaN and Infinity
        raise _NonFinite(text)
    return value


_decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_decode = _decoder.decode


def _number(value: Any) -> Number:
    kind = type(value)  # exact types: bool is an int subclass and is refused
    if kind is float:
        if not math.isfinite(value) or abs(value) > _MAX_ABS:  # json turns 1e999 into inf without asking
            raise _Reject("not_finite")
        return value  # type: ignore[no-any-return]
    if kind is int:
        if abs(value) > _MAX_ABS:
            raise _Reject("not_finite")
        return value  # type: ignore[no-any-return]
    if kind is dict or kind is list:
        raise _Reject("too_deep")
    raise _Reject("invalid_field")


def _nonneg(value: Any) -> Number:
    number = _number(value)
    if number < 0:
        raise _Reject("invalid_field")
    return number


class _Stream:
    """What one reporting process said last, so that resent running totals are not counted twice."""

    __slots__ = ("counters", "event_seq", "timers")

    def __init__(self) -> None:
        self.counters: Dict[str, Number] = {}
        self.timers: Dict[str, Tuple[int, Number]] = {}
        self.event_seq = -1


class _Conn:
    __slots__ = ("buf", "closed", "discarding", "last_active", "out", "sock", "stream")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()  # the partial line so far (≤ MAX_LINE_BYTES)
        self.discarding = False  # skipping the rest of a too-long line
        self.out = bytearray()  # replies not yet taken by the client
        self.last_active = time.monotonic()
        self.stream = _Stream()  # messages without "src"
        self.closed = False


_LISTENER = object()
_WAKE = object()


class MetricsServer:
    """The metrics socket of one run.

    ``sink`` receives every ``Sample`` (on the server's thread). ``params`` are the knobs the app may ask for
    (``{"type": "param", "name": ...}``); values must be JSON types. ``start`` creates ``sock_dir`` if needed, binds
    ``sock_dir/metrics.sock`` (any path length) and starts the thread; ``stop`` reads what clients already sent,
    closes every connection and removes the socket file. ``counters()`` may be called at any time.
    """

    def __init__(
        self,
        sock_dir: Path,
        *,
        sink: SampleSink,
        params: Optional[Mapping[str, Any]] = None,
        max_connections: int = MAX_CONNECTIONS,
        max_line_bytes: int = MAX_LINE_BYTES,
        idle_evict_s: float = IDLE_EVICT_S,
        max_names: int = MAX_NAMES,
        ts_window_ns: int = TS_WINDOW_NS,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.sock_dir = Path(sock_dir)
        self.path = self.sock_dir / SOCKET_NAME
        self._sink = sink
        self._params: Dict[str, str] = {}  # name -> value as JSON text
        for key, value in (params or {}).items():
            try:
                self._params[str(key)] = json.dumps(value, allow_nan=False, separators=(",", ":"))
            except (TypeError, ValueError):
                self._params[str(key)] = json.dumps(str(value))
        self.max_connections = max_connections
        self.max_line_bytes = max_line_bytes
        self.idle_evict_s = idle_evict_s
        self.max_names = max_names
        self.ts_window_ns = ts_window_ns
        self._clock_ns = clock_ns
        self._counts: Dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self._conns: Dict[int, _Conn] = {}
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        self._keys: Dict[Tuple[str, str], Tuple[str, ...]] = {}  # (type, name) -> its sample keys
        self._owners: Dict[str, Tuple[str, str]] = {}  # sample key -> (type, name)
        self._totals: Dict[str, Number] = {}  # counter name -> total over all streams
        self._timer_totals: Dict[str, List[Number]] = {}  # timer name -> [count, sum]
        self._event_counts: Dict[str, int] = {}
        self._handlers: Dict[str, Callable[[_Conn, Dict[str, Any], int], None]] = {
            "counter": self._on_counter,
            "gauge": self._on_gauge,
            "timer": self._on_timer,
            "event": self._on_event,
            "param": self._on_param,
        }
        self._sel: Optional[selectors.BaseSelector] = None
        self._listener: Optional[socket.socket] = None
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None
        self._dir_fd = -1
        self._inode: Optional[Tuple[int, int]] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._lock = threading.Lock()  # start/stop only
        self.error: Optional[str] = None  # set if the loop itself died (a bug); lines never kill it

    # -- life cycle ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Bind the socket and start serving. Raises OSError when the socket cannot be made."""
        with self._lock:
            if self._thread is not None:
                return
            self.sock_dir.mkdir(parents=True, exist_ok=True)
            self._bind()
            assert self._listener is not None
            self._sel = selectors.DefaultSelector()
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._sel.register(self._listener, selectors.EVENT_READ, _LISTENER)
            self._sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
            self._thread = threading.Thread(target=self._run, name=f"waap-metrics-socket:{self.sock_dir}", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Take in what clients have already sent, close every connection, remove the socket. Idempotent."""
        with self._lock:
            thread = self._thread
            self._stopping = True
            if thread is None:
                self._cleanup()
                return
            if self._wake_w is not None:
                with contextlib.suppress(OSError):
                    self._wake_w.send(b"x")
        thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def counters(self) -> Dict[str, int]:
        """A snapshot of the counters (COUNTER_NAMES), for the manifest."""
        return dict(self._counts)  # dict() of a dict is one step under the GIL: a consistent copy

    # -- binding ---------------------------------------------------------------------------------------------------
    def _bind(self) -> None:
        # sun_path holds 107 bytes and run directories can be deeper than that: bind through /proc/self/fd/<dirfd>,
        # a short name for the same folder. The socket is made in the folder itself, visible by its real path.
        flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_PATH", 0)
        dir_fd = os.open(self.sock_dir, flags)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._remove_stale(dir_fd)
            short = f"/proc/self/fd/{dir_fd}/{SOCKET_NAME}"
            if os.path.isdir(f"/proc/self/fd/{dir_fd}/"):
                listener.bind(short)
            elif len(os.fsencode(self.path)) < 108:  # no /proc: only a short path can be bound
                listener.bind(os.fspath(self.path))
            else:
                raise OSError(f"cannot bind {self.path}: the path is too long for a Unix socket and /proc is missing")
            os.chmod(SOCKET_NAME, 0o777, dir_fd=dir_fd)  # the app may run as any user
            st = os.stat(SOCKET_NAME, dir_fd=dir_fd, follow_symlinks=False)
            self._inode = (st.st_dev, st.st_ino)
            listener.listen(LISTEN_BACKLOG)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            os.close(dir_fd)
            raise
        self._listener = listener
        self._dir_fd = dir_fd

    @staticmethod
    def _remove_stale(dir_fd: int) -> None:
        try:
            st = os.stat(SOCKET_NAME, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(f"{SOCKET_NAME} exists in the socket folder and is not a socket")
        os.unlink(SOCKET_NAME, dir_fd=dir_fd)  # left by an earlier server of this folder

    def _cleanup(self) -> None:
        for conn in list(self._conns.values()):
            self._close(conn)
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._listener = self._wake_r = self._wake_w = None
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        if self._dir_fd >= 0:
            try:  # remove the socket only if it is still ours
                st = os.stat(SOCKET_NAME, dir_fd=self._dir_fd, follow_symlinks=False)
                if (st.st_dev, st.st_ino) == self._inode:
                    os.unlink(SOCKET_NAME, dir_fd=self._dir_fd)
            except OSError:
                pass
            os.close(self._dir_fd)
            self._dir_fd = -1

    # -- the loop --------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        sel = self._sel
        assert sel is not None
        try:
            while not self._stopping:
                for key, mask in sel.select(timeout=1.0):
                    try:
                        data = key.data
                        if data is _LISTENER:
                            self._accept()
                        elif data is _WAKE:
                            self._drain_wake()
                        elif not data.closed:
                            if mask & selectors.EVENT_WRITE:
                                self._send_out(data)
                            if mask & selectors.EVENT_READ and not data.closed:
                                self._read(data)
                    except Exception:  # a bug must not stop the run's measurements
                        self._counts["internal_errors"] += 1
            self._drain_all()
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            self._counts["internal_errors"] += 1
        finally:
            self._cleanup()

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        with contextlib.suppress(OSError):
            self._wake_r.recv(4096)

    def _accept(self) -> None:
        assert self._listener is not None and self._sel is not None
        for _ in range(256):  # a bounded batch, then the other connections get their turn
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors, say: back off a moment instead of spinning
                self._counts["internal_errors"] += 1
                time.sleep(0.05)
                return
            if len(self._conns) >= self.max_connections and not self._evict_idle():
                sock.close()
                self._counts["connections_refused"] += 1
                continue
            sock.setblocking(False)
            conn = _Conn(sock)
            self._conns[sock.fileno()] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)
            self._counts["connections_accepted"] += 1
            if len(self._conns) > self._counts["connections_peak"]:
                self._counts["connections_peak"] = len(self._conns)

    def _evict_idle(self) -> bool:
        if not self._conns:
            return False
        victim = min(self._conns.values(), key=lambda c: c.last_active)
        if time.monotonic() - victim.last_active < self.idle_evict_s:
            return False
        self._close(victim)
        self._counts["connections_evicted"] += 1
        return True

    def _close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        if conn.buf and not conn.discarding:
            self._reject("incomplete_line")
        conn.buf = bytearray()
        fd = conn.sock.fileno()
        if self._sel is not None and fd >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
        self._conns.pop(fd, None)
        conn.sock.close()

    def _read(self, conn: _Conn) -> bool:
        """One recv; False once the connection is closed."""
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self._close(conn)
            return False
        if not data:
            self._close(conn)
            return False
        conn.last_active = time.monotonic()
        self._counts["bytes_received"] += len(data)
        self._feed(conn, data, self._clock_ns())
        return True

    def _drain_all(self) -> None:
        """After stop(): what clients sent before the app ended is still in the socket buffers; take it in."""
        for conn in list(self._conns.values()):
            if conn.closed:
                continue
            taken = 0
            try:
                conn.sock.setblocking(False)
                while taken < DRAIN_LIMIT_BYTES:
                    try:
                        data = conn.sock.recv(RECV_BYTES)
                    except (BlockingIOError, InterruptedError):
                        break
                    if not data:
                        break
                    taken += len(data)
                    self._counts["bytes_received"] += len(data)
                    self._feed(conn, data, self._clock_ns())
            except OSError:
                pass
            self._close(conn)

    # -- framing ---------------------------------------------------------------------------------------------------
    def _feed(self, conn: _Conn, data: bytes, recv_ns: int) -> None:
        limit = self.max_line_bytes
        if conn.discarding:  # the rest of a too-long line: skip to its newline
            nl = data.find(b"\n")
            if nl < 0:
                return
            conn.discarding = False
            data = data[nl + 1 :]
        if conn.buf:
            nl = data.find(b"\n")
            if nl < 0:
                if len(conn.buf) + len(data) > limit:
                    self._too_long(conn)
                else:
                    conn.buf += data
                    self._note_buffer(conn)
                return
            head = data[:nl]
            if len(conn.buf) + len(head) > limit:
                conn.buf = bytearray()
                self._reject("line_too_long")
            else:
                line = bytes(conn.buf) + head
                conn.buf = bytearray()
                if not line.isspace():
                    self._line(conn, line, recv_ns)
            data = data[nl + 1 :]
        lines = data.split(b"\n")
        tail = lines.pop()
        for line in lines:
            if len(line) > limit:
                self._reject("line_too_long")
            elif line and not line.isspace():
                self._line(conn, line, recv_ns)
        if tail:
            if len(tail) > limit:
                self._too_long(conn)
            else:
                conn.buf += tail
                self._note_buffer(conn)

    def _too_long(self, conn: _Conn) -> None:
        conn.buf = bytearray()
        conn.discarding = True
        self._reject("line_too_long")

    def _note_buffer(self, conn: _Conn) -> None:
        if len(conn.buf) > self._counts["line_buffer_peak_bytes"]:
            self._counts["line_buffer_peak_bytes"] = len(conn.buf)

    def _reject(self, reason: str) -> None:
        self._counts["rejected_" + reason] += 1
        self._counts["lines_rejected"] += 1

    # -- messages --------------------------------------------------------------------------------------------------
    def _line(self, conn: _Conn, raw: bytes, recv_ns: int) -> None:
        try:
            try:
                text = raw.decode("utf-8")  # strict: json.loads(bytes) would also guess UTF-16/32
            except UnicodeDecodeError:
                raise _Reject("invalid_utf8") from None
            try:
                message = _decode(text)
            except _NonFinite:
                raise _Reject("not_finite") from None
            except RecursionError:
                raise _Reject("too_deep") from None
            except ValueError:  # syntax, or an integer with too many digits
                raise _Reject("invalid_json") from None
            if type(message) is not dict:
                raise _Reject("not_object")
            kind = message.get("type")
            handler = self._handlers.get(kind) if type(kind) is str else None
            if handler is None:
                raise _Reject("unknown_type")
            version = message.get("v")
            if version is not None and (type(version) is not int or version != PROTOCOL_VERSION):
                raise _Reject("unsupported_version")
            handler(conn, message, recv_ns)
            self._counts["lines_accepted"] += 1
        except _Reject as r:
            self._reject(r.reason)
        except Exception:
            self._counts["internal_errors"] += 1

    def _ts(self, message: Dict[str, Any], recv_ns: int) -> int:
        ts = message.get("ts_ns")
        if ts is None:
            return recv_ns
        if type(ts) is not int:
            raise _Reject("invalid_field")
        if abs(ts - recv_ns) > self.ts_window_ns:
            self._counts["ts_replaced"] += 1
            return recv_ns
        return ts

    def _metric(self, kind: str, message: Dict[str, Any]) -> Tuple[str, Tuple[str, ...]]:
        """The metric's name and sample keys; registers a new name (checked for form, conflicts and the cap)."""
        name = message.get("name")
        if type(name) is not str:
            raise _Reject("invalid_name")
        keys = self._keys.get((kind, name))
        if keys is not None:
            return name, keys
        if len(name) > MAX_NAME_CHARS or not _NAME.fullmatch(name):
            raise _Reject("invalid_name")
        if kind == "gauge" and name.endswith("total"):  # app.x.total, app.x_total: the catalog's counters
            raise _Reject("invalid_name")
        if len(self._keys) >= self.max_names:
            raise _Reject("too_many_names")
        keys = metric_keys(kind, name)
        for key in keys:
            owner = self._owners.get(key)
            if owner is not None and owner != (kind, name):
                raise _Reject("name_conflict")
        self._keys[(kind, name)] = keys
        for key in keys:
            self._owners[key] = (kind, name)
        return name, keys

    def _stream(self, conn: _Conn, message: Dict[str, Any]) -> _Stream:
        src = message.get("src")
        if src is None:
            return conn.stream
        if type(src) is not str or not 0 < len(src) <= MAX_SRC_CHARS:
            raise _Reject("invalid_field")
        stream = self._streams.get(src)
        if stream is None:
            if len(self._streams) >= MAX_STREAMS:
                self._streams.popitem(last=False)
                self._counts["streams_forgotten"] += 1
            stream = self._streams[src] = _Stream()
        else:
            self._streams.move_to_end(src)
        return stream

    def _emit(self, ts_ns: int, values: Dict[str, Number], labels: Optional[Dict[str, str]] = None) -> None:
        try:
            self._sink(Sample(ts_ns, SOURCE, values, labels if labels is not None else {}))
            self._counts["samples"] += 1
        except Exception:
            self._counts["sink_errors"] += 1

    def _on_counter(self, conn: _Conn, message: Dict[str, Any], recv_ns: int) -> None:
        raw_total, raw_inc = message.get("total"), message.get("inc")
        if (raw_total is None) == (raw_inc is None):
            raise _Reject("invalid_field")
        amount = _nonneg(raw_total if raw_inc is None else raw_inc)
        ts = self._ts(message, recv_ns)
        stream = self._stream(conn, message)
        name, (key,) = self._metric("counter", message)
        if raw_inc is None:
            # a running total: count what is new; a smaller total means the client restarted from zero
            previous = stream.counters.get(name)
            stream.counters[name] = amount
            if previous is not None and amount >= previous:
                amount = amount - previous
        value = self._totals[name] = self._totals.get(name, 0) + amount
        self._emit(ts, {key: value})

    def _on_gauge(self, conn: _Conn, message: Dict[str, Any], recv_ns: int) -> None:
        value = _number(message.get("value"))
        ts = self._ts(message, recv_ns)
        _, (key,) = self._metric("gauge", message)
        self._emit(ts, {key: value})

    def _on_timer(self, conn: _Conn, message: Dict[str, Any], recv_ns: int) -> None:
        low: Optional[Number]
        high: Optional[Number]
        stream: Optional[_Stream] = None
        if message.get("value") is not None:  # one observation
            low = high = seconds = _nonneg(message["value"])
            count = 1
        else:  # running count and sum, min and max of the observations since the last report
            raw_count = message.get("count")
            if type(raw_count) is not int or raw_count < 0:
                raise _Reject("invalid_field")
            count, seconds = int(raw_count), _nonneg(message.get("sum"))
            low = None if message.get("min") is None else _nonneg(message["min"])
            high = None if message.get("max") is None else _nonneg(message["max"])
            if low is not None and high is not None and low > high:
                raise _Reject("invalid_field")
            stream = self._stream(conn, message)
        ts = self._ts(message, recv_ns)
        name, keys = self._metric("timer", message)
        first = False
        if stream is not None:
            previous = stream.timers.get(name)
            stream.timers[name] = (count, seconds)
            first = previous is None
            if previous is not None and count >= previous[0]:
                count, seconds = count - previous[0], max(0, seconds - previous[1])
            if count == 0 and not first:  # nothing new: a report sent again
                self._counts["duplicates"] += 1
                return
        totals = self._timer_totals.get(name)
        if totals is None:
            totals = self._timer_totals[name] = [0, 0.0]
        totals[0] += count
        totals[1] += seconds
        k_count, k_sum, k_mean, k_min, k_max = keys
        values: Dict[str, Number] = {k_count: totals[0], k_sum: totals[1]}
        if count:  # (a first report of zero observations is the timer's starting point: totals only)
            values[k_mean] = seconds / count
            if low is not None:
                values[k_min] = low
            if high is not None:
                values[k_max] = high
        self._emit(ts, values)

    def _on_event(self, conn: _Conn, message: Dict[str, Any], recv_ns: int) -> None:
        labels: Dict[str, str] = {}
        attrs = message.get("attrs")
        if attrs is not None:
            if type(attrs) is not dict or len(attrs) > MAX_ATTRS:
                raise _Reject("too_deep" if type(attrs) is list else "invalid_field")
            for key, value in attrs.items():
                if not _ATTR_KEY.fullmatch(key):
                    raise _Reject("invalid_field")
                labels[key] = _label(value)
        seq = message.get("seq")
        if seq is not None and (type(seq) is not int or seq < 0):
            raise _Reject("invalid_field")
        ts = self._ts(message, recv_ns)
        stream = self._stream(conn, message)
        name, (key,) = self._metric("event", message)
        if seq is not None:
            if seq <= stream.event_seq:
                self._counts["duplicates"] += 1
                return
            stream.event_seq = seq
        count = self._event_counts[name] = self._event_counts.get(name, 0) + 1
        self._emit(ts, {key: count}, labels)

    def _on_param(self, conn: _Conn, message: Dict[str, Any], recv_ns: int) -> None:
        name = message.get("name")
        if type(name) is not str or not _PARAM_NAME.fullmatch(name):
            raise _Reject("invalid_name")
        request_id = message.get("id")
        if request_id is not None and not (
            (type(request_id) is int and abs(request_id) < 2**63)
            or (type(request_id) is str and len(request_id) <= MAX_SRC_CHARS)
        ):
            raise _Reject("invalid_field")
        value = self._params.get(name)
        reply = (
            f'{{"type":"param","name":{json.dumps(name)},"found":{"true" if value is not None else "false"},'
            f'"value":{value if value is not None else "null"},"id":{json.dumps(request_id)}}}\n'
        )
        self._reply(conn, reply.encode("utf-8"))

    # -- replies ---------------------------------------------------------------------------------------------------
    def _reply(self, conn: _Conn, data: bytes) -> None:
        """Send without ever blocking: a client that does not read gets its replies queued up to a cap, then
        dropped (whole replies only, so the stream stays line-framed)."""
        if conn.out:
            if len(conn.out) + len(data) > MAX_REPLY_BACKLOG:
                self._counts["replies_dropped"] += 1
            else:
                conn.out += data
                self._counts["replies_sent"] += 1
            return
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._counts["replies_dropped"] += 1
            return
        self._counts["replies_sent"] += 1
        if sent < len(data):
            conn.out += data[sent:]
            assert self._sel is not None
            self._sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def _send_out(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        del conn.out[:sent]
        if not conn.out:
            assert self._sel is not None
            self._sel.modify(conn.sock, selectors.EVENT_READ, conn)


def _label(value: Any) -> str:
    kind = type(value)
    if kind is str:
        if len(value) > MAX_ATTR_CHARS:
            raise _Reject("invalid_field")
        try:
            value.encode("utf-8")  # lone surrogates (from \\ud800 escapes) are not text
        except UnicodeEncodeError:
            raise _Reject("invalid_field") from None
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return ""
    return repr(_number(value))
