"""WaAP's in-app client: an app reports its own metrics (frames per second, inference time, ...) to the profiler and
asks it for knobs, over the run's metrics socket (docs/metrics-socket.md).

One file, standard library only, Python 3.6 or newer (JetPack 4 plugin images). Get it with ``pip install waap``
(``from profiler import plugin``) or, in any app that WaAP profiles, from the copy the runner mounts in
(``import waap_plugin as plugin``; ``/run/waap`` is on ``PYTHONPATH``). Or copy this file into the app::

    fps = plugin.metric("fps")             # a counter: the profile shows its rate, frames per second
    res = plugin.param("res", default=640)  # a knob: the profile's value, else the default
    while True:
        size = res.get()
        with plugin.timer("inference"):      # also @plugin.timer("inference") on a function
            ...
        plugin.gauge("queue").set(len(queue))
        fps.inc()
    plugin.event("model_loaded", model="yolov5n")

Without a profiler (``WAAP_METRICS_SOCKET`` unset) every call is a no-op costing a method call, and ``get()``
returns the default. With one, values are aggregated in the process and a daemon thread sends what changed every
``WAAP_METRICS_FLUSH_S`` seconds (default 1) and once at exit. Nothing here raises into the app or blocks it: a
send that cannot go through is retried later (running totals make that safe), a dead socket is reconnected with
back-off. The one wait is the first ``get()`` of a knob, at most ``WAAP_PARAM_TIMEOUT_S`` (default 0.5 s) once.
"""

import atexit
import collections
import contextlib
import functools
import json
import math
import os
import socket
import sys
import threading
import time
import weakref
from threading import get_ident
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, TypeVar

if TYPE_CHECKING:  # typing.Deque is not in Python 3.6.0
    from typing import Deque

__all__ = [
    "Client",
    "Counter",
    "Gauge",
    "Param",
    "Timer",
    "counter",
    "enabled",
    "event",
    "flush",
    "gauge",
    "metric",
    "param",
    "timer",
]

PROTOCOL_VERSION = 1
ENV_SOCKET = "WAAP_METRICS_SOCKET"
ENV_FLUSH_S = "WAAP_METRICS_FLUSH_S"
ENV_PARAM_TIMEOUT_S = "WAAP_PARAM_TIMEOUT_S"

DEFAULT_FLUSH_S = 1.0
DEFAULT_PARAM_TIMEOUT_S = 0.5
CONNECT_TIMEOUT_S = 0.2
SEND_TIMEOUT_S = 0.5
EXIT_TIMEOUT_S = 1.0
MAX_NAMES = 1000  # metrics per process; further names get a no-op object
MAX_PENDING_EVENTS = 1000  # events waiting to be sent; further events are dropped (and counted)
MAX_ATTRS = 16
MAX_ATTR_CHARS = 256
MAX_NAME_CHARS = 128
MAX_REPLY_BUFFER = 1 << 20
_BIG = 1e300  # larger numbers are not measurements (and must stay finite when summed)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.")
_ATTR_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)  # a closed socket must not SIGPIPE an app that restored SIG_DFL

F = TypeVar("F", bound=Callable[..., Any])


def _clean_name(name: Any) -> str:
    """A metric name the protocol accepts: lower case, [a-z0-9_] segments joined by dots, at most 128 characters.
    Other characters become "_" (so "Inference Time" is "inference_time"): a bad name is fixed, never an error."""
    try:
        text = str(name).lower()
    except Exception:
        return "_"
    text = "".join(c if c in _NAME_CHARS else "_" for c in text)
    text = ".".join(part or "_" for part in text.split("."))[:MAX_NAME_CHARS]
    return text[:-1] + "_" if text.endswith(".") else text


def _now_ns() -> int:
    return int(time.time() * 1e9)  # time.time_ns is Python 3.7+


# -- the metric objects --------------------------------------------------------------------------------------------
class Counter(object):
    """A running total that only goes up: ``inc(n=1)``. The profile reports it as ``app.<name>.total`` and its rate."""

    __slots__ = ("_cells", "_created_ns", "_sent", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._cells: Dict[int, List[float]] = {}  # thread id -> [that thread's share of the total]
        self._sent: Optional[float] = None  # the total last sent (flush thread only)
        self._created_ns: Optional[int] = _now_ns()  # reported once as a zero point (None once it was)

    def inc(self, n: float = 1) -> None:
        # No lock, and still no lost increment: each thread adds to a cell of its own, so the read-add-store of
        # `cell[0] += n` (atomic per bytecode under the GIL, not as a whole) never races with another writer of that
        # cell. The flush thread only reads cells (a reference read, atomic) and sums them. A thread id is reused
        # only after its thread has ended, so a cell still has one writer at a time. About 70 ns; a lock costs twice
        # that, prometheus_client's Counter.inc three times. Negative, NaN, infinite and non-numbers are ignored.
        try:
            if 0 <= n < 1e300:
                self._cells[get_ident()][0] += n
        except KeyError:
            self._cells[get_ident()] = [n]  # this thread's first inc: a dict store is atomic under the GIL
        except Exception:
            pass

    @property
    def value(self) -> float:
        """The total so far, in this process."""
        return sum(cell[0] for cell in list(self._cells.values()))

    def _reset(self) -> None:
        self._cells = {}
        self._sent = None
        self._created_ns = _now_ns()


class Gauge(object):
    """A level that goes up and down: ``set(value)``. Reported as ``app.<name>`` when it was set since the last
    report (the last value wins)."""

    __slots__ = ("_dirty", "_value", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._value: Any = None
        self._dirty = False

    def set(self, value: float) -> None:
        self._value = value  # two plain stores: the flush thread clears _dirty before it reads _value
        self._dirty = True

    @property
    def value(self) -> Any:
        return self._value

    def _reset(self) -> None:
        self._dirty = False


class Timer(object):
    """Durations in seconds: ``with timer:``, ``@timer`` on a function, or ``observe(seconds)``. Reported as
    ``app.<name>.count_total``, ``.seconds_total``, ``.mean_seconds``, ``.min_seconds``, ``.max_seconds``. The block
    is timed also when it raises. Safe from any number of threads at once (and nested), with ``time.perf_counter``."""

    __slots__ = ("__weakref__", "_count", "_created_ns", "_lock", "_max", "_min", "_sent", "_starts", "_sum", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._count = 0
        self._sum = 0.0
        self._min = math.inf  # since the last report
        self._max = -math.inf
        self._starts: Dict[int, List[float]] = {}  # thread id -> start times of its open blocks
        self._sent: Optional[int] = None  # the count last sent
        self._created_ns: Optional[int] = _now_ns()

    def observe(self, seconds: float) -> None:
        try:
            s = float(seconds)
            if not 0.0 <= s < _BIG:
                return
            with self._lock:
                self._count += 1
                self._sum += s
                if s < self._min:
                    self._min = s
                if s > self._max:
                    self._max = s
        except Exception:
            pass

    def __enter__(self) -> "Timer":
        try:  # noqa: SIM105 - contextlib.suppress would cost more than the rest of this method
            self._starts.setdefault(get_ident(), []).append(time.perf_counter())
        except Exception:
            pass
        return self

    def __exit__(self, *exc_info: Any) -> None:
        end = time.perf_counter()
        try:
            start = self._starts[get_ident()].pop()
        except Exception:
            return
        self.observe(end - start)

    def __call__(self, func: F) -> F:
        """As a decorator: time every call of ``func``."""

        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return timed  # type: ignore[return-value]

    def _take(self) -> Tuple[int, float, float, float]:
        with self._lock:
            taken = (self._count, self._sum, self._min, self._max)
            self._min, self._max = math.inf, -math.inf
        return taken

    def _give_back(self, low: float, high: float) -> None:
        with self._lock:
            self._min = min(self._min, low)
            self._max = max(self._max, high)

    def _reset(self) -> None:
        self._lock = threading.Lock()  # a fork may have copied it held
        self._count, self._sum, self._min, self._max, self._sent = 0, 0.0, math.inf, -math.inf, None
        self._created_ns = _now_ns()
        self._starts = {}


class _Knob(object):
    """What the runner said about one knob: NEW (not asked yet), ASKED (no answer yet), FOUND or MISSING."""

    __slots__ = ("name", "state", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = "new"
        self.value: Any = None


class Param(object):
    """A knob the runner sets from the profile: ``get()`` is its value, or the default when the profile has none
    (or no profiler answers). The first ``get()`` asks and waits for the answer (bounded); later ones cost an
    attribute read. If the answer comes late, later ``get()`` calls return it."""

    __slots__ = ("_client", "_knob", "default", "name")

    def __init__(self, knob: "_Knob", default: Any, client: "Optional[Client]") -> None:
        self.name = knob.name
        self.default = default
        self._knob = knob
        self._client = client

    def get(self) -> Any:
        knob = self._knob
        if knob.state == "found":
            return knob.value
        if knob.state == "new" and self._client is not None:
            self._client._ask_now(knob)
            if knob.state == "found":
                return knob.value
        return self.default


class _Noop(object):
    """Every metric when no profiler is there: each method does nothing."""

    __slots__ = ()
    name = ""
    value = None

    def inc(self, n: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, seconds: float) -> None:
        pass

    def __enter__(self) -> "_Noop":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        pass

    def __call__(self, func: F) -> F:
        return func


_NOOP = _Noop()


# -- the client ----------------------------------------------------------------------------------------------------
class Client(object):
    """One connection to the metrics socket at ``socket_path``, with its metrics. The module-level functions use
    one made from the environment; make your own only to talk to another socket (tests, tools)."""

    def __init__(
        self, socket_path: str, flush_s: float = DEFAULT_FLUSH_S, param_timeout_s: float = DEFAULT_PARAM_TIMEOUT_S
    ) -> None:
        self.socket_path = socket_path
        self.flush_s = max(0.01, float(flush_s))
        self.param_timeout_s = max(0.0, float(param_timeout_s))
        self.dropped_events = 0
        self.send_failures = 0
        self._registry_lock = threading.Lock()
        self._io = threading.Lock()  # the socket: one sender or reader at a time
        self._flushing = threading.Lock()  # one report at a time (the thread, flush(), the exit)
        self._counters: "Dict[str, Counter]" = {}
        self._gauges: "Dict[str, Gauge]" = {}
        self._timers: "Dict[str, Timer]" = {}
        self._knobs: "Dict[str, _Knob]" = {}
        self._names = 0
        self._events: "Deque[Tuple[str, int, Dict[str, Any]]]" = collections.deque()
        self._unsent: List[Dict[str, Any]] = []  # taken from _events, numbered, not yet delivered
        self._seq = 0
        self._sock: Optional[socket.socket] = None
        self._rbuf = b""
        self._retry_at = 0.0
        self._backoff = self.flush_s
        self._closed = False
        self._shut = False
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._new_process()
        _clients.add(self)
        atexit.register(self._at_exit)
        self._mp_hooked = False
        self._hook_multiprocessing()

    # -- API -------------------------------------------------------------------------------------------------------
    def metric(self, name: str) -> "Counter":
        counter = self._counters.get(name)
        if counter is None:
            counter = self._register(name, self._counters, Counter)
        return counter

    counter = metric

    def gauge(self, name: str) -> "Gauge":
        gauge = self._gauges.get(name)
        if gauge is None:
            gauge = self._register(name, self._gauges, Gauge)
        return gauge

    def timer(self, name: str) -> "Timer":
        timer = self._timers.get(name)
        if timer is None:
            timer = self._register(name, self._timers, Timer)
        return timer

    def event(self, name: str, **attrs: Any) -> None:
        """Something that happened, with up to 16 attributes (strings, numbers, booleans, None)."""
        try:
            self._check_process()
            if len(self._events) >= MAX_PENDING_EVENTS:
                self.dropped_events += 1
                return
            self._events.append((_clean_name(name), _now_ns(), _clean_attrs(attrs)))
        except Exception:
            pass

    def param(self, name: str, default: Any = None) -> "Param":
        try:
            self._check_process()
            key = str(name)
            knob = self._knobs.get(key)
            if knob is None:
                if not 0 < len(key) <= MAX_NAME_CHARS or not set(key) <= _ATTR_CHARS:
                    knob = _Knob(key)  # no profile can name it: the default, without asking
                    knob.state = "missing"
                    return Param(knob, default, None)
                with self._registry_lock:
                    knob = self._knobs.setdefault(key, _Knob(key))
            return Param(knob, default, self)
        except Exception:
            return Param(_Knob(""), default, None)

    def flush(self, timeout_s: float = SEND_TIMEOUT_S) -> bool:
        """Send what changed now (the flush thread does it every ``flush_s``). True when it was delivered."""
        try:
            if self._pid != os.getpid():
                self._after_fork()
            if not self._flushing.acquire(timeout=max(0.0, timeout_s)):
                return False
            try:
                return self._flush(timeout_s)
            finally:
                self._flushing.release()
        except Exception:
            return False

    def close(self, timeout_s: float = EXIT_TIMEOUT_S) -> None:
        """A last flush, then stop the thread and close the socket. Metrics keep working as no-ops."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self.flush(timeout_s)
        if self._io.acquire(timeout=timeout_s):
            try:
                self._shut = True  # a flush still under way in the thread must not connect again
                self._disconnect()
            finally:
                self._io.release()
        else:
            self._shut = True
        with contextlib.suppress(Exception):
            atexit.unregister(self._at_exit)

    # -- registry --------------------------------------------------------------------------------------------------
    def _register(self, name: Any, table: Dict[str, Any], cls: Any) -> Any:
        try:
            self._check_process()
            with self._registry_lock:
                key = name if isinstance(name, str) else str(name)
                found = table.get(key)
                if found is not None:
                    return found
                clean = _clean_name(key)
                if cls is Gauge and clean.endswith("total"):
                    clean += "_gauge"  # names ending in "total" are counters' (the profile would take its rate)
                found = table.get(clean)  # "FPS" and "fps" are the same metric
                if found is None:
                    if self._names >= MAX_NAMES:
                        return _NOOP
                    self._names += 1
                    found = table[clean] = cls(clean)
                table[key] = found
                return found
        except Exception:
            return _NOOP

    # -- process and thread ----------------------------------------------------------------------------------------
    def _new_process(self) -> None:
        self._pid = os.getpid()
        # which process reports: a reconnecting client continues its running totals instead of counting them again
        self._src = "%d-%s" % (self._pid, os.urandom(4).hex())
        self._thread = None

    def _hook_multiprocessing(self) -> None:
        """multiprocessing ends its children with os._exit, which skips atexit: its own finalizers report last.
        Its fork children clear the finalizers inherited, so they register again after the fork."""
        if self._mp_hooked:
            return
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is None:
            return
        self._mp_hooked = True
        with contextlib.suppress(Exception):
            mp_util.Finalize(None, self._at_exit, exitpriority=10)

    def _check_process(self) -> None:
        if self._pid != os.getpid():
            self._after_fork()
        if not self._mp_hooked:
            self._hook_multiprocessing()
        if self._thread is None and not self._closed:
            with self._registry_lock:
                if self._thread is None:
                    thread = threading.Thread(target=self._loop, name="waap-plugin-flush")
                    thread.daemon = True
                    thread.start()
                    self._thread = thread

    def _after_fork(self) -> None:
        """In a forked child: start over as a new reporting process (the parent reports what it counted)."""
        if self._pid == os.getpid():
            return
        self._registry_lock = threading.Lock()  # a fork may have copied these held by another thread
        self._io = threading.Lock()
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        if self._sock is not None:
            with contextlib.suppress(Exception):
                self._sock.close()  # our copy only; the parent's connection stays open
            self._sock = None
        self._rbuf = b""
        for counter in set(self._counters.values()):
            counter._reset()
        for gauge in set(self._gauges.values()):
            gauge._reset()
        for timer in set(self._timers.values()):
            timer._reset()
        self._events.clear()
        self._unsent = []
        self._new_process()
        self._mp_hooked = False
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:  # a multiprocessing child: hook its exit once its bootstrap cleared the parent's
            with contextlib.suppress(Exception):
                mp_util.register_after_fork(self, _mp_child_after_fork)

    def _loop(self) -> None:
        stop = self._stop
        while not stop.wait(self.flush_s):
            self.flush(SEND_TIMEOUT_S)

    def _at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.close(EXIT_TIMEOUT_S)

    # -- sending ---------------------------------------------------------------------------------------------------
    def _flush(self, timeout_s: float) -> bool:
        ts = _now_ns()
        src = self._src
        lines: List[bytes] = []
        sent_counters: "List[Tuple[Counter, float]]" = []
        for counter in set(self._counters.values()):
            total = _plain(counter.value)
            if counter._created_ns is not None:
                # a zero at the counter's creation: its rate counts from then, not from the first report. Sent
                # once, delivered or not: resent after a half-delivered report it would count the total twice
                if total:
                    _add(lines, {"type": "counter", "name": counter.name, "total": 0, "src": src,
                                 "ts_ns": counter._created_ns})
                counter._created_ns = None
            if total != counter._sent:
                _add(lines, {"type": "counter", "name": counter.name, "total": total, "src": src, "ts_ns": ts})
                sent_counters.append((counter, total))
        sent_gauges: "List[Gauge]" = []
        for gauge in set(self._gauges.values()):
            if gauge._dirty:
                gauge._dirty = False
                value = _finite(gauge._value)
                if value is not None:
                    _add(lines, {"type": "gauge", "name": gauge.name, "value": value, "ts_ns": ts})
                    sent_gauges.append(gauge)
        taken_timers: "List[Tuple[Timer, int, float, float]]" = []
        for timer in set(self._timers.values()):
            count, total_s, low, high = timer._take()
            if timer._created_ns is not None:
                if count:
                    _add(lines, {"type": "timer", "name": timer.name, "count": 0, "sum": 0.0, "src": src,
                                 "ts_ns": timer._created_ns})
                timer._created_ns = None
            if count != timer._sent:
                message = {"type": "timer", "name": timer.name, "count": count, "sum": total_s, "src": src, "ts_ns": ts}
                if low <= high:
                    message["min"], message["max"] = low, high
                _add(lines, message)
            taken_timers.append((timer, count, low, high))
        while self._events and len(self._unsent) < MAX_PENDING_EVENTS:
            name, event_ts, attrs = self._events.popleft()
            message = {"type": "event", "name": name, "seq": self._seq, "src": src, "ts_ns": event_ts}
            if attrs:
                message["attrs"] = attrs
            self._seq += 1
            self._unsent.append(message)
        unsent = list(self._unsent)
        for message in unsent:
            _add(lines, message)
        for knob in list(self._knobs.values()):
            if knob.state in ("new", "asked"):  # not answered yet (or asked before the runner listened)
                _add(lines, {"type": "param", "name": knob.name})

        delivered = True
        if lines:
            delivered = False
            if self._io.acquire(timeout=max(0.0, timeout_s)):
                try:
                    delivered = self._send(b"".join(lines), timeout_s)
                    if delivered:
                        self._pump(0.0)  # the answers to knobs asked above, if already there
                finally:
                    self._io.release()
        if delivered:
            for counter, total in sent_counters:
                counter._sent = total
            for timer, count, _, _ in taken_timers:
                timer._sent = count
            del self._unsent[: len(unsent)]
        else:
            self.send_failures += 1
            for gauge in sent_gauges:
                gauge._dirty = True  # send it again (unless the app set a newer value: that one goes)
            for timer, _, low, high in taken_timers:
                if low <= high:
                    timer._give_back(low, high)
        return delivered

    def _connect(self, timeout_s: float) -> bool:
        if self._sock is not None:
            return True
        if self._shut:
            return False
        now = time.monotonic()
        if now < self._retry_at:
            return False
        sock = None
        dir_fd = -1
        try:
            path = self.socket_path
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(min(CONNECT_TIMEOUT_S, max(timeout_s, 0.001)))
            if len(os.fsencode(path)) > 107:  # too long for sun_path: reach it through its folder's descriptor
                dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
                path = "/proc/self/fd/%d/%s" % (dir_fd, os.path.basename(path))
            sock.connect(path)
        except Exception:
            if sock is not None:
                sock.close()
            self._retry_at = now + self._backoff  # no profiler (yet): try again later, less and less often
            self._backoff = min(self._backoff * 2, 30.0)
            return False
        finally:
            if dir_fd >= 0:
                with contextlib.suppress(Exception):
                    os.close(dir_fd)
        self._sock = sock
        self._rbuf = b""
        self._backoff = self.flush_s
        return True

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(Exception):
                sock.close()

    def _send(self, data: bytes, timeout_s: float) -> bool:
        if not self._connect(timeout_s):
            return False
        sock = self._sock
        assert sock is not None
        try:
            sock.settimeout(max(timeout_s, 0.001))
            sock.sendall(data, _NOSIGNAL)
            return True
        except Exception:
            # maybe half a line went out: closing makes the server drop it; the next flush sends everything again
            self._disconnect()
            return False

    def _pump(self, timeout_s: float) -> None:
        """Read replies: wait up to ``timeout_s`` for the first bytes, then take what is there without waiting."""
        sock = self._sock
        if sock is None:
            return
        try:
            sock.settimeout(timeout_s if timeout_s > 0 else 0.0)
            while True:
                try:
                    data = sock.recv(65536)
                except (socket.timeout, BlockingIOError, InterruptedError):
                    return
                if not data:
                    self._disconnect()
                    return
                self._take_replies(data)
                sock.settimeout(0.0)
        except Exception:
            self._disconnect()

    def _take_replies(self, data: bytes) -> None:
        buf = self._rbuf + data
        lines = buf.split(b"\n")
        rest = lines.pop()
        self._rbuf = rest if len(rest) <= MAX_REPLY_BUFFER else b""
        for line in lines:
            try:
                reply = json.loads(line.decode("utf-8"))
                if isinstance(reply, dict) and reply.get("type") == "param":
                    knob = self._knobs.get(str(reply.get("name")))
                    if knob is not None:
                        if reply.get("found") is True:
                            knob.value = reply.get("value")
                            knob.state = "found"
                        else:
                            knob.state = "missing"
            except Exception:
                pass

    def _ask_now(self, knob: "_Knob") -> None:
        """The first get() of a knob: ask, and wait for the answer at most param_timeout_s."""
        try:
            self._check_process()
            deadline = time.monotonic() + self.param_timeout_s
            if not self._io.acquire(timeout=self.param_timeout_s):
                return
            try:
                if knob.state != "new":
                    return
                knob.state = "asked"
                request = json.dumps({"type": "param", "name": knob.name}).encode("utf-8") + b"\n"
                if not self._send(request, self.param_timeout_s):
                    return
                while knob.state == "asked" and self._sock is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self._pump(left)
            finally:
                self._io.release()
        except Exception:
            pass


def _add(lines: List[bytes], message: Dict[str, Any]) -> None:
    with contextlib.suppress(Exception):  # a value JSON cannot carry: that one message is left out
        lines.append(json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n")


def _plain(value: Any) -> float:
    """An int stays an int (exact totals); anything else numeric (numpy scalars, say) becomes a float."""
    return value if type(value) is int else float(value)


def _finite(value: Any) -> Optional[float]:
    try:
        number = float(value)
    except Exception:
        return None
    return number if -_BIG < number < _BIG else None


def _clean_attrs(attrs: Dict[str, Any]) -> Dict[str, Any]:
    clean: Dict[str, Any] = {}
    for key, value in list(attrs.items())[:MAX_ATTRS]:
        key = "".join(c if c in _ATTR_CHARS else "_" for c in str(key))[:64] or "_"
        if value is None or isinstance(value, bool) or (isinstance(value, (int, float)) and -_BIG < value < _BIG):
            clean[key] = value
        else:
            text = str(value)[:MAX_ATTR_CHARS]
            clean[key] = text.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates on the wire
    return clean


# -- the module-level client -----------------------------------------------------------------------------------------
class _NoopClient(object):
    """Not profiled: hand out no-op objects."""

    def metric(self, name: str) -> Any:
        return _NOOP

    counter = metric
    gauge = metric
    timer = metric

    def event(self, name: str, **attrs: Any) -> None:
        pass

    def param(self, name: str, default: Any = None) -> "Param":
        return Param(_Knob(str(name)), default, None)

    def flush(self, timeout_s: float = SEND_TIMEOUT_S) -> bool:
        return False

    def close(self, timeout_s: float = EXIT_TIMEOUT_S) -> None:
        pass


_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()
_default: "Any" = None
_default_lock = threading.Lock()


def _env_float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, ""))
        return value if 0 < value < 3600 else default
    except ValueError:
        return default


def _client() -> Any:
    global _default
    client = _default
    if client is None:
        with _default_lock:
            if _default is None:
                path = os.environ.get(ENV_SOCKET, "")
                try:
                    _default = (
                        Client(path, _env_float(ENV_FLUSH_S, DEFAULT_FLUSH_S),
                               _env_float(ENV_PARAM_TIMEOUT_S, DEFAULT_PARAM_TIMEOUT_S))
                        if path
                        else _NoopClient()
                    )
                except Exception:
                    _default = _NoopClient()
            client = _default
    return client


def enabled() -> bool:
    """Whether a profiler asked for metrics (``WAAP_METRICS_SOCKET`` is set); nothing else depends on it."""
    return bool(os.environ.get(ENV_SOCKET))


def metric(name: str) -> "Counter":
    """The counter ``name`` (the same object for the same name): ``metric("fps").inc()``."""
    return _client().metric(name)  # type: ignore[no-any-return]


counter = metric


def gauge(name: str) -> "Gauge":
    """The gauge ``name``: ``gauge("queue").set(3)``."""
    return _client().gauge(name)  # type: ignore[no-any-return]


def timer(name: str) -> "Timer":
    """The timer ``name``: ``with timer("inference"): ...`` or ``@timer("inference")``."""
    return _client().timer(name)  # type: ignore[no-any-return]


def event(name: str, **attrs: Any) -> None:
    """Record that something happened: ``event("model_loaded", model="yolov5n", ms=412)``."""
    _client().event(name, **attrs)


def param(name: str, default: Any = None) -> "Param":
    """The knob ``name``: ``param("res", 640).get()`` is the profile's value, else 640."""
    return _client().param(name, default)  # type: ignore[no-any-return]


def flush(timeout_s: float = SEND_TIMEOUT_S) -> bool:
    """Send now what changed (normally left to the flush thread and the exit). False when nothing was delivered."""
    return _client().flush(timeout_s)  # type: ignore[no-any-return]


def _mp_child_after_fork(client: Client) -> None:
    with contextlib.suppress(Exception):
        client._after_fork()
        client._hook_multiprocessing()


def _after_fork_in_child() -> None:
    for client in list(_clients):
        with contextlib.suppress(Exception):
            client._after_fork()


_register_at_fork = getattr(os, "register_at_fork", None)  # Python 3.7+; on 3.6 the next call notices the fork
if _register_at_fork is not None:
    _register_at_fork(after_in_child=_after_fork_in_child)
