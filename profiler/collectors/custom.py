"""``custom``: the metrics the app reports itself (frames per second, inference time, ...), pushed as samples.

The collector hosts *sources*, each a feed of app-reported samples with its own thread. This version has one, the
metrics socket (``SocketSource``: ``profiler.channel.MetricsServer``, spoken to by ``profiler/plugin.py`` or any
client of docs/metrics-socket.md). The pywaggle data-file follower (``profiler/collectors/pywaggle.py``) is meant to
be the second: wrap it in a ``Source`` and add it in ``default_sources``.

Life cycle, driven by the runner: ``prepare`` before the app container is created (binds the socket and starts
serving at once, so that the app's first ``param(...).get()`` is answered; returns the mount and environment the
container needs), ``start`` once the app runs (samples received before are handed to the sink then, in order),
``stop`` after the app has exited (reads what the app sent until its exit, closes the socket, fills the status
counters for the manifest). ``stop`` is safe without ``start`` and more than once: call it also when the app never
started, or the socket thread and file stay until the runner exits.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path
from typing import Any, ClassVar, Deque, Dict, List, Mapping, Optional, Sequence

from ..channel import (
    ENV_SOCKET,
    PLUGIN_FILE,
    PYTHONPATH_IN_APP,
    SOCKET_DIR_IN_APP,
    SOCKET_DIR_NAME,
    SOCKET_PATH_IN_APP,
    MetricsServer,
    prepare_socket_dir,
)
from .base import AppAdditions, Collector, MetricInfo, RunContext, Sample, SampleSink, Unavailable
from .pywaggle import PywaggleFollower, prepare_pywaggle_dir, pywaggle_env

__all__ = ["CustomCollector", "SocketSource", "Source", "default_sources"]

# socket counters always in the manifest; the others (rejections by reason, evictions, ...) only when not zero
MANIFEST_COUNTERS = ("connections_accepted", "lines_accepted", "lines_rejected", "samples")
MAX_EARLY_SAMPLES = 100_000  # received between prepare and start; more are dropped (and counted)


class Source(ABC):
    """One feed of app-reported samples, hosted by ``CustomCollector``. ``prepare`` gets the sink to push to (from
    any thread) and returns what the app container needs; ``start`` follows once the app runs; ``stop`` must push
    everything still pending before it returns, and be safe to call more than once."""

    name: ClassVar[str]

    @abstractmethod
    def prepare(self, run_dir: Path, output_dir: Path, params: Mapping[str, Any], sink: SampleSink) -> AppAdditions:
        """Before the app container exists. Raise ``Unavailable`` (or anything) when this source cannot work."""

    def start(self, ctx: RunContext) -> None:
        """The app container runs."""
        return None

    @abstractmethod
    def stop(self) -> None:
        """The app has exited: deliver what is left, release threads and files."""

    @abstractmethod
    def counters(self) -> Dict[str, int]:
        """Tallies for the manifest (accepted and rejected input, ...); prefixed with the source's name there."""


class SocketSource(Source):
    """The per-run metrics socket: ``<run_dir>/sock/metrics.sock``, mounted read-only at ``/run/waap`` in the app
    container with the Python client beside it (``waap_plugin.py``)."""

    name = "socket"

    def __init__(self) -> None:
        self.server: Optional[MetricsServer] = None

    def prepare(self, run_dir: Path, output_dir: Path, params: Mapping[str, Any], sink: SampleSink) -> AppAdditions:
        sock_dir = prepare_socket_dir(run_dir / SOCKET_DIR_NAME)
        server = MetricsServer(sock_dir, sink=sink, params=params)
        server.start()
        self.server = server
        return AppAdditions(
            # PYTHONPATH: the runner prepends this to the app's own (image's or profile's) PYTHONPATH
            env={ENV_SOCKET: SOCKET_PATH_IN_APP, "PYTHONPATH": PYTHONPATH_IN_APP},
            mounts={sock_dir: (SOCKET_DIR_IN_APP, True)},  # read-only: connecting to a socket needs no write access
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            _remove_quietly(self.server.sock_dir)

    def counters(self) -> Dict[str, int]:
        """The server's counters that say something: the core four always, the others when not zero."""
        if self.server is None:
            return {}
        return {k: v for k, v in self.server.counters().items() if v or k in MANIFEST_COUNTERS}

    @property
    def error(self) -> Optional[str]:
        return self.server.error if self.server is not None else None


def _remove_quietly(sock_dir: Path) -> None:
    """The socket folder only served the run: leave no socket file or client copy in the run directory."""
    with contextlib.suppress(OSError):
        (sock_dir / PLUGIN_FILE).unlink()
    with contextlib.suppress(OSError):  # not empty (something unexpected in it): kept for a human to look at
        sock_dir.rmdir()


class PywaggleSource(Source):
    """Apps that publish with pywaggle need no change: ``PYWAGGLE_LOG_DIR`` makes pywaggle append every
    ``publish``/``timeit`` to ``data.ndjson`` in the output mount, which is followed during the run."""

    name = "pywaggle"

    def __init__(self) -> None:
        self.follower: Optional[PywaggleFollower] = None

    def prepare(self, run_dir: Path, output_dir: Path, params: Mapping[str, Any], sink: SampleSink) -> AppAdditions:
        self.follower = PywaggleFollower(prepare_pywaggle_dir(output_dir), sink)
        return AppAdditions(env=pywaggle_env())

    def start(self, ctx: RunContext) -> None:
        if self.follower is not None:
            self.follower.start()

    def stop(self) -> None:
        if self.follower is not None:
            self.follower.stop()  # a last read: nothing published before the exit is lost

    def counters(self) -> Dict[str, int]:
        return dict(self.follower.counters) if self.follower is not None else {}


def default_sources() -> List[Source]:
    """The sources a ``custom`` collector hosts: the metrics socket and pywaggle's data file."""
    return [SocketSource(), PywaggleSource()]


class CustomCollector(Collector):
    name = "custom"
    source_description = (
        "the app itself: profiler/plugin.py (or any client of docs/metrics-socket.md) over the per-run Unix socket "
        "WAAP_METRICS_SOCKET; counters are running totals, timers cumulative count and sum plus per-report min, "
        "max and mean"
    )
    catalog = (
        MetricInfo(
            "app.<name>.total",
            "count",
            "counter",
            "running total of a counter the app counts with plugin.metric(name).inc(), over all its processes; "
            "the summary's rate is per second, e.g. frames per second for a frame counter",
        ),
        MetricInfo("app.<name>", "as set", "gauge", "the value the app last set with plugin.gauge(name).set(value)"),
        MetricInfo("app.<name>.count_total", "count", "counter", "a timer's observations so far (plugin.timer(name))"),
        MetricInfo("app.<name>.seconds_total", "seconds", "counter", "a timer's seconds observed so far"),
        MetricInfo(
            "app.<name>.mean_seconds",
            "seconds",
            "gauge",
            "a timer's mean observation in one report (one flush interval of the Python client)",
        ),
        MetricInfo("app.<name>.min_seconds", "seconds", "gauge", "a timer's shortest observation in one report"),
        MetricInfo("app.<name>.max_seconds", "seconds", "gauge", "a timer's longest observation in one report"),
        MetricInfo(
            "app.<name>.events_total",
            "count",
            "counter",
            "events of that name so far (plugin.event(name, **attrs)); one sample per event, its attributes as labels",
        ),
    )

    def __init__(self, sources: Optional[Sequence[Source]] = None) -> None:
        super().__init__()
        # The hosted feeds: the metrics socket and the pywaggle data-file follower. Replaceable for tests.
        self.sources: List[Source] = list(sources) if sources is not None else default_sources()
        self._ready: List[Source] = []  # prepared without error
        self._problems: Dict[str, str] = {}  # source name -> why it does not work
        self._prepared = False
        self._stopped = False
        self._sink: Optional[SampleSink] = None
        self._early: Deque[Sample] = deque()
        self._early_dropped = 0
        self._lock = threading.Lock()

    # -- the runner's calls ------------------------------------------------------------------------------------------
    def prepare(self, run_dir: Path, output_dir: Path, params: Mapping[str, Any]) -> AppAdditions:
        additions = AppAdditions()
        if self._prepared:
            raise RuntimeError("a CustomCollector is prepared once")
        self._prepared = True
        for source in self.sources:
            try:
                additions.merge(source.prepare(run_dir, output_dir, params, self._deliver))
            except Exception as e:
                self._problems[source.name] = str(e) or type(e).__name__
                _stop_quietly(source)
            else:
                self._ready.append(source)
        if not self._ready:
            raise Unavailable("; ".join(f"{name}: {why}" for name, why in self._problems.items()) or "no source")
        self._note_problems()
        return additions

    def start(self, ctx: RunContext, sink: SampleSink) -> None:
        if not self._prepared:  # a runner that does not prepare: serve from now on (early knob requests missed)
            self.prepare(ctx.run_dir, ctx.output_dir, ctx.params)
        with self._lock:
            while self._early:
                sink(self._early.popleft())
            self._sink = sink
        for source in list(self._ready):
            try:
                source.start(ctx)
            except Exception as e:
                self._problems[source.name] = f"start failed: {e}"
                self._ready.remove(source)
                _stop_quietly(source)
        if not self._ready:
            self.stop()
            raise Unavailable("; ".join(f"{name}: {why}" for name, why in self._problems.items()))
        self._note_problems()

    def sample(self, ts_ns: int) -> Optional[Mapping[str, float]]:
        return None  # everything is pushed

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for source in self._ready:
            try:
                source.stop()
            except Exception as e:
                self._problems[source.name] = f"stop failed: {e}"
            error = getattr(source, "error", None)
            if error:
                self._problems.setdefault(source.name, f"failed while running: {error}")
        counters: Dict[str, int] = {}
        for source in self._ready:
            with contextlib.suppress(Exception):
                counters.update((f"{source.name}.{key}", int(value)) for key, value in source.counters().items())
        if self._early_dropped:
            counters["samples_dropped_before_start"] = self._early_dropped
        self.status.counters = counters
        self._note_problems()

    # -- internals ---------------------------------------------------------------------------------------------------
    def _deliver(self, sample: Sample) -> None:
        """The sources' sink: the runner's once ``start`` gave it, a bounded queue before."""
        sink = self._sink
        if sink is None:
            with self._lock:
                sink = self._sink
                if sink is None:
                    if len(self._early) < MAX_EARLY_SAMPLES:
                        self._early.append(sample)
                    else:
                        self._early_dropped += 1
                    return
        sink(sample)

    def _note_problems(self) -> None:
        if self._problems:
            self.status.reason = "; ".join(f"{name}: {why}" for name, why in self._problems.items())


def _stop_quietly(source: Source) -> None:
    with contextlib.suppress(Exception):
        source.stop()
