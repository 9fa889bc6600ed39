"""The sampler: runs a run's collectors from the app's start to its exit and streams their samples to ``samples.jsonl``.

Polled collectors are asked at every tick of a fixed schedule (tick k is due at ``t0 + k * interval``, so the time a
tick takes is subtracted from the wait and drift never accumulates; a tick more than one interval late is skipped
and counted). Pushing collectors hand samples to ``Sampler.sink`` from their own threads. Every sample written goes
to the listeners too (the live endpoint, a streaming summary).

Timestamps are integer Unix nanoseconds: the wall clock read once at ``start``, advanced by the monotonic clock,
so they always increase and rates stay right when the wall clock is stepped mid-run (a Jetson without an RTC
setting its clock from NTP after boot). ``Sampler.now_ns`` gives the same clock to pushing collectors.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any, Callable, Collection, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from .collectors.base import Collector, CollectorStatus, RunContext, Sample, Unavailable
from .errors import RunDirError, WaapError
from .rundir import JsonlWriter

__all__ = ["CollectorError", "Listener", "Sampler"]

Listener = Callable[[Sample], None]
EventSink = Callable[..., None]


class CollectorError(WaapError):
    """A collector the profile marks as required could not start (unavailable or failed); the message says why."""


def _no_event(kind: str, **fields: Any) -> None:
    return None


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


class Sampler:
    """Drives a run's collectors. ``start`` once the app runs, ``stop`` once it has exited; then read the counters
    (``samples_written``, ``missed_ticks``, …, all of them in ``counters()``) and ``statuses`` for the manifest.

    Events sent through ``on_event(kind, **fields)``: ``collector_failed`` (``collector``, ``phase`` start, sample
    or stop, ``reason``) and ``warning`` (``message``: samples could not be written, a listener failed, a tick
    stuck at stop). Each kind of warning is sent once; the counters say how often it happened.
    """

    def __init__(
        self,
        collectors: Sequence[Collector],
        *,
        interval_s: float,
        samples_path: Path,
        required: Collection[str] = (),
        on_event: EventSink = _no_event,
        listeners: Sequence[Listener] = (),
        clock_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (isinstance(interval_s, (int, float)) and math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"the sampling interval must be a positive number of seconds, not {interval_s!r}")
        self.collectors = list(collectors)
        self.interval_s = float(interval_s)
        self.samples_path = samples_path
        self.required = frozenset(required)
        self.on_event = on_event
        self.listeners = list(listeners)
        self._clock_ns = clock_ns
        self._monotonic = monotonic

        self.statuses: List[CollectorStatus] = [c.status for c in self.collectors]
        self.ticks = 0  # ticks taken, the first and the last included
        self.missed_ticks = 0
        self.samples_written = 0
        self.samples_rejected = 0  # pushed samples that were not samples (bad timestamp, no numeric value)
        self.values_rejected = 0  # single values dropped: not a finite number
        self.samples_late = 0  # pushed after stop, or written by a tick that was stuck at stop
        self.write_errors = 0
        self.listener_errors = 0
        self.first_sample_ns: Optional[int] = None
        self.last_sample_ns: Optional[int] = None

        self._writer = JsonlWriter(samples_path)
        self._started: List[Collector] = []  # started without error: stop() is called on them
        self._polled: List[Collector] = []  # asked at every tick until they fail
        # samples.jsonl and the listeners see one sample at a time; reentrant so that a listener may push a sample
        self._write_lock = threading.RLock()
        self._tick_lock = threading.Lock()  # one tick at a time (the loop's and stop's last one)
        self._stop_event = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._state = "new"  # new -> running -> stopped
        self._accepting = False
        self._warned: Set[str] = set()
        self._wall0 = 0
        self._mono0 = 0.0
        self._t0 = 0.0  # monotonic time of the first tick: the schedule's origin
        self._last_tick_ns = 0

    # -- public ------------------------------------------------------------------------------------------------

    def now_ns(self) -> int:
        """The sampler's clock: integer Unix nanoseconds that never go back during the run."""
        if self._state == "new":
            return self._clock_ns()
        return self._wall0 + int((self._monotonic() - self._mono0) * 1e9)

    def start(self, ctx: RunContext) -> None:
        """Start every collector, take the first sample at once, then tick on a daemon thread.

        Raises ``CollectorError`` (after stopping what it started) when a required collector is not ok."""
        if self._state != "new":
            raise RuntimeError("a Sampler can be started only once")
        self._state = "running"
        self._wall0 = self._clock_ns()
        self._mono0 = self._monotonic()
        self._accepting = True  # pushing collectors may send from inside their start()
        for collector in self.collectors:
            try:
                collector.start(ctx, self.sink)
            except Unavailable as e:
                collector.status.status = "unavailable"
                collector.status.reason = str(e) or "unavailable here"
            except Exception as e:  # a collector's bug must not take the run down with it
                reason = f"start failed: {_why(e)}"
                collector.status.status = "failed"
                collector.status.reason = reason
                self.on_event("collector_failed", collector=collector.name, phase="start", reason=reason)
            else:
                collector.status.status = "ok"
                self._started.append(collector)
                self._polled.append(collector)

        problems = self._required_problems()
        if problems:
            self._shutdown()
            raise CollectorError("; ".join(problems))

        self._t0 = self._monotonic()
        self._tick()
        self._thread = threading.Thread(target=self._loop, name="waap-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking, take a last sample, stop every collector and close ``samples.jsonl``. Safe to call twice,
        and without ``start``."""
        if self._state != "running":
            self._state = "stopped"
            return
        self._stop_event.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=max(5.0, 3 * self.interval_s))
        if thread is not None and thread.is_alive():
            # a collector's sample() hangs: asking it again would hang here too
            self._warn("stuck", "a tick was still running at stop (a collector's sample hangs); no last sample")
        else:
            self._tick()
        self._shutdown()

    def sink(self, sample: Sample) -> None:
        """Where pushing collectors send samples; safe from any thread. Bad samples are counted, never raised."""
        if self._check(sample) is not None:
            with self._write_lock:
                self.samples_rejected += 1
            return
        values = self._clean(sample.values)
        if not values:
            with self._write_lock:
                self.samples_rejected += 1
            return
        if values != sample.values:
            sample = Sample(sample.ts_ns, sample.source, values, sample.labels)
        self._write(sample)

    def counters(self) -> Dict[str, Any]:
        """How sampling went, for the manifest's ``sampling`` object."""
        return {
            "interval_s": self.interval_s,
            "samples": self.samples_written,
            "missed_ticks": self.missed_ticks,
            "ticks": self.ticks,
            "samples_rejected": self.samples_rejected,
            "values_rejected": self.values_rejected,
            "samples_late": self.samples_late,
            "write_errors": self.write_errors,
            "listener_errors": self.listener_errors,
        }

    # -- the loop ----------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        interval = self.interval_s
        k = 0
        while not self._stop_event.is_set():
            k += 1
            now = self._monotonic()
            if now - (self._t0 + k * interval) > interval:
                # more than one interval late (a slow collector, a stalled machine): skip to the next tick ahead
                ahead = math.floor((now - self._t0) / interval) + 1
                self.missed_ticks += ahead - k
                k = ahead
            wait = self._t0 + k * interval - self._monotonic()
            if wait > 0 and self._stop_event.wait(wait):
                return
            if self._stop_event.is_set():
                return
            self._tick()

    def _tick(self) -> None:
        with self._tick_lock:
            ts = max(self.now_ns(), self._last_tick_ns + 1)
            self._last_tick_ns = ts
            self.ticks += 1
            for collector in list(self._polled):
                try:
                    raw = collector.sample(ts)
                except Exception as e:  # record it, stop asking this one, the others go on
                    self._polled.remove(collector)
                    reason = f"sample failed: {_why(e)}"
                    collector.status.status = "failed"
                    collector.status.reason = reason
                    self.on_event("collector_failed", collector=collector.name, phase="sample", reason=reason)
                    continue
                if not raw:
                    continue
                values = self._clean(raw)
                if values:
                    self._write(Sample(ts, collector.name, values))

    # -- helpers -----------------------------------------------------------------------------------------------

    def _write(self, sample: Sample) -> None:
        warnings: List[Tuple[str, str]] = []
        with self._write_lock:
            if not self._accepting:
                self.samples_late += 1
                return
            try:
                self._writer.write(sample.to_json())
            except (RunDirError, TypeError, ValueError) as e:
                self.write_errors += 1
                warnings.append(("write", f"cannot write samples to {self.samples_path}: {e}"))
            else:
                self.samples_written += 1
                if self.first_sample_ns is None:
                    self.first_sample_ns = sample.ts_ns
                self.last_sample_ns = sample.ts_ns
            for listener in self.listeners:
                try:
                    listener(sample)
                except Exception as e:  # a broken listener costs its own view, never the samples
                    self.listener_errors += 1
                    warnings.append((f"listener:{id(listener)}", f"sample listener {listener!r} failed: {_why(e)}"))
        for key, message in warnings:  # outside the lock: the event sink may take its own
            self._warn(key, message)

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.on_event("warning", message=message)

    def _clean(self, values: Mapping[str, Any]) -> Dict[str, float]:
        """Finite numbers under string names; anything else is dropped and counted, never written as a zero."""
        clean: Dict[str, float] = {}
        dropped = 0
        for name, value in values.items():
            if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, (int, float)):
                dropped += 1
                continue
            number = float(value)
            if math.isfinite(number):
                clean[name] = number
            else:
                dropped += 1
        if dropped:
            with self._write_lock:
                self.values_rejected += dropped
        return clean

    @staticmethod
    def _check(sample: Any) -> Optional[str]:
        if not isinstance(sample, Sample):
            return "not a Sample"
        if type(sample.ts_ns) is not int or sample.ts_ns <= 0:
            return "ts_ns is not a positive integer"
        if not isinstance(sample.source, str) or not sample.source:
            return "no source"
        if not isinstance(sample.values, Mapping):
            return "values is not a mapping"
        labels = sample.labels
        if not isinstance(labels, Mapping):
            return "labels is not a mapping"
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            return "labels are not strings"
        return None

    def _required_problems(self) -> List[str]:
        by_name = {c.name: c for c in self.collectors}
        problems = []
        for name in sorted(self.required):
            collector = by_name.get(name)
            if collector is None:
                problems.append(f"required collector {name} is not running")
            elif collector.status.status != "ok":
                problems.append(f"required collector {name} is {collector.status.status}: {collector.status.reason}")
        return problems

    def _shutdown(self) -> None:
        """Stop every started collector (a pushing one may still send its last samples), then close the file."""
        for collector in self._started:
            try:
                collector.stop()
            except Exception as e:
                reason = f"stop failed: {_why(e)}"
                if collector.status.status == "ok":
                    collector.status.status = "failed"
                    collector.status.reason = reason
                self.on_event("collector_failed", collector=collector.name, phase="stop", reason=reason)
        self._started = []
        with self._write_lock:
            self._accepting = False
            self._writer.close()
        self._state = "stopped"
