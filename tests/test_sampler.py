"""The sampler with fake collectors at a 0.05 s interval. Assertions are on behaviour with generous slack for
timing: the test machine is shared."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import pytest

from profiler.collectors.base import Collector, RunContext, Sample, SampleSink, Unavailable
from profiler.errors import WaapError
from profiler.rundir import read_jsonl
from profiler.sampler import CollectorError, Sampler

INTERVAL = 0.05


class Polled(Collector):
    name = "polled"

    def __init__(self, name: str = "polled") -> None:
        self.name = name  # type: ignore[misc]
        super().__init__()
        self.calls = 0
        self.stopped = False

    def sample(self, ts_ns: int) -> Optional[Mapping[str, float]]:
        self.calls += 1
        return {f"{self.name}.calls_total": float(self.calls), f"{self.name}.value": 42.0}

    def stop(self) -> None:
        self.stopped = True


class FailsOnThird(Polled):
    def sample(self, ts_ns: int) -> Optional[Mapping[str, float]]:
        if self.calls == 2:
            self.calls += 1
            raise OSError("the device went away")
        return super().sample(ts_ns)


class Missing(Polled):
    def start(self, ctx: RunContext, sink: SampleSink) -> None:
        raise Unavailable("no such hardware here")

    def sample(self, ts_ns: int) -> Optional[Mapping[str, float]]:
        raise AssertionError("an unavailable collector must never be asked")


class Broken(Polled):
    def start(self, ctx: RunContext, sink: SampleSink) -> None:
        raise RuntimeError("bug in start")


class Slow(Polled):
    """Takes two intervals per sample."""

    def sample(self, ts_ns: int) -> Optional[Mapping[str, float]]:
        time.sleep(2 * INTERVAL)
        return super().sample(ts_ns)


class Pushing(Collector):
    """Sends samples from its own thread every 10 ms, and a last one from stop()."""

    name = "push"

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._sink: Optional[SampleSink] = None

    def start(self, ctx: RunContext, sink: SampleSink) -> None:
        self._sink = sink
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._sink is not None
        while not self._done.wait(0.01):
            self.sent += 1
            self._sink(Sample(time.time_ns(), self.name, {"app.frames.total": float(self.sent)}, {"stage": "a"}))

    def sample(self, ts_ns: int) -> Optional[Mapping[str, float]]:
        return None

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        assert self._sink is not None
        self.sent += 1
        self._sink(Sample(time.time_ns(), self.name, {"app.frames.total": float(self.sent)}, {"stage": "a"}))


def ctx(tmp_path: Path) -> RunContext:
    return RunContext("run-1", "cid", 0, tmp_path, tmp_path / "output", INTERVAL)


class Events:
    def __init__(self) -> None:
        self.seen: List[Tuple[str, Dict[str, Any]]] = []

    def __call__(self, kind: str, **fields: Any) -> None:
        self.seen.append((kind, fields))

    def kinds(self) -> List[str]:
        return [k for k, _ in self.seen]


def make(tmp_path: Path, collectors: List[Collector], **kwargs: Any) -> Sampler:
    kwargs.setdefault("interval_s", INTERVAL)
    return Sampler(collectors, samples_path=tmp_path / "samples.jsonl", **kwargs)


def polled_ts(path: Path, source: str = "polled") -> List[int]:
    return [r["ts_ns"] for r in read_jsonl(path) if r["source"] == source]


def test_first_sample_at_once_last_at_stop(tmp_path: Path) -> None:
    sampler = make(tmp_path, [Polled()])
    before = time.time_ns()
    sampler.start(ctx(tmp_path))
    started = polled_ts(tmp_path / "samples.jsonl")  # written by start() itself, before any tick
    assert len(started) == 1
    assert started[0] - before < 100_000_000
    time.sleep(0.3)
    stop_called = time.time_ns()
    sampler.stop()
    ts = polled_ts(tmp_path / "samples.jsonl")
    assert ts[-1] >= stop_called  # the last one was taken at stop
    assert all(type(t) is int for t in ts)
    assert all(b > a for a, b in zip(ts, ts[1:]))
    assert len(ts) == sampler.samples_written
    assert 3 <= len(ts) <= 12  # 0.3 s at 0.05 s: about 7, plus the first and the last
    assert sampler.statuses[0].status == "ok"


def test_samples_are_flushed_while_running(tmp_path: Path) -> None:
    sampler = make(tmp_path, [Polled()])
    sampler.start(ctx(tmp_path))
    try:
        deadline = time.monotonic() + 5
        while len(read_jsonl(tmp_path / "samples.jsonl")) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        records = read_jsonl(tmp_path / "samples.jsonl")  # another reader, while the sampler still writes
    finally:
        sampler.stop()
    assert len(records) >= 4
    assert records[0]["values"] == {"polled.calls_total": 1.0, "polled.value": 42.0}


def test_schedule_does_not_drift(tmp_path: Path) -> None:
    sampler = make(tmp_path, [Polled()])
    sampler.start(ctx(tmp_path))
    time.sleep(1.0)
    sampler.stop()
    # 1 s at 0.05 s: ticks 0..20 and the last; a drifting loop (sleeping a full interval after each tick's work)
    # would fall short; a badly loaded machine may miss a few
    assert 15 <= sampler.ticks + sampler.missed_ticks <= 24
    ts = polled_ts(tmp_path / "samples.jsonl")
    gaps = [(b - a) / 1e9 for a, b in zip(ts, ts[1:-1])]
    assert statistics_median(gaps) == pytest.approx(INTERVAL, abs=0.02)


def statistics_median(values: List[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def test_a_collector_failing_mid_run_is_recorded_and_dropped(tmp_path: Path) -> None:
    events = Events()
    good, bad = Polled("good"), FailsOnThird("bad")
    sampler = make(tmp_path, [good, bad], on_event=events)
    sampler.start(ctx(tmp_path))
    time.sleep(0.4)
    sampler.stop()
    assert bad.calls == 3  # never asked again after the failure
    assert sampler.statuses[1].status == "failed"
    assert "OSError: the device went away" in sampler.statuses[1].reason
    assert ("collector_failed", {"collector": "bad", "phase": "sample", "reason": sampler.statuses[1].reason}) in (
        events.seen
    )
    assert bad.stopped and good.stopped  # stop() is still called on it
    assert len(polled_ts(tmp_path / "samples.jsonl", "bad")) == 2
    assert len(polled_ts(tmp_path / "samples.jsonl", "good")) >= 4
    assert sampler.statuses[0].status == "ok"


def test_unavailable_and_broken_collectors_at_start(tmp_path: Path) -> None:
    events = Events()
    missing, broken = Missing("gpu"), Broken("broken")
    sampler = make(tmp_path, [missing, Polled(), broken], on_event=events)
    sampler.start(ctx(tmp_path))
    time.sleep(0.1)
    sampler.stop()
    by_name = {s.name: s for s in sampler.statuses}
    assert by_name["gpu"].to_json() == {"name": "gpu", "status": "unavailable", "reason": "no such hardware here"}
    assert by_name["broken"].status == "failed"
    assert by_name["broken"].reason == "start failed: RuntimeError: bug in start"
    assert events.kinds() == ["collector_failed"]
    assert not missing.stopped and not broken.stopped  # never started, never stopped
    assert {r["source"] for r in read_jsonl(tmp_path / "samples.jsonl")} == {"polled"}


def test_a_required_collector_that_is_unavailable_stops_everything(tmp_path: Path) -> None:
    other = Polled()
    sampler = make(tmp_path, [other, Missing("gpu")], required=["gpu"])
    with pytest.raises(CollectorError, match="required collector gpu is unavailable: no such hardware here"):
        sampler.start(ctx(tmp_path))
    assert isinstance(CollectorError("x"), WaapError)
    assert other.stopped  # what had started was stopped again
    assert other.calls == 0
    assert not (tmp_path / "samples.jsonl").exists()
    assert not [t for t in threading.enumerate() if t.name == "waap-sampler"]
    sampler.stop()  # the runner still calls stop(): harmless


def test_a_required_collector_that_is_not_there(tmp_path: Path) -> None:
    sampler = make(tmp_path, [Polled()], required=["system"])
    with pytest.raises(CollectorError, match="required collector system is not running"):
        sampler.start(ctx(tmp_path))


def test_required_and_ok_runs(tmp_path: Path) -> None:
    sampler = make(tmp_path, [Polled()], required=["polled"])
    sampler.start(ctx(tmp_path))
    sampler.stop()
    assert sampler.samples_written == 2


def test_missed_ticks_are_counted_when_a_collector_is_slow(tmp_path: Path) -> None:
    sampler = make(tmp_path, [Slow("slow")])
    sampler.start(ctx(tmp_path))
    time.sleep(1.0)
    sampler.stop()
    # every tick takes two intervals: the next is then more than one interval late and skipped
    assert sampler.missed_ticks >= 3
    assert sampler.ticks <= 12
    assert sampler.counters()["missed_ticks"] == sampler.missed_ticks
    ts = polled_ts(tmp_path / "samples.jsonl", "slow")
    assert all(b > a for a, b in zip(ts, ts[1:]))


def test_pushing_collector_and_listeners(tmp_path: Path) -> None:
    pushing = Pushing()
    seen: List[Sample] = []
    sampler = make(tmp_path, [Polled(), pushing], listeners=[seen.append])
    sampler.start(ctx(tmp_path))
    time.sleep(0.3)
    sampler.stop()
    records = read_jsonl(tmp_path / "samples.jsonl")
    pushed = [r for r in records if r["source"] == "push"]
    assert len(pushed) == pushing.sent  # the last one, sent from stop(), included
    assert pushed[-1]["values"] == {"app.frames.total": float(pushing.sent)}
    assert pushed[0]["labels"] == {"stage": "a"}
    assert len(seen) == len(records) == sampler.samples_written
    assert [s.to_json() for s in seen] == records
    after = Sample(time.time_ns(), "push", {"x": 1.0})
    sampler.sink(after)  # after stop: counted, not written
    assert sampler.samples_late == 1
    assert len(read_jsonl(tmp_path / "samples.jsonl")) == len(records)


def test_sink_rejects_what_is_not_a_sample(tmp_path: Path) -> None:
    sampler = make(tmp_path, [])
    sampler.start(ctx(tmp_path))
    now = time.time_ns()
    sampler.sink(Sample(now, "push", {"ok": 1.0, "nan": math.nan, "inf": math.inf, "text": "3"}))  # type: ignore[dict-item]
    sampler.sink(Sample(float(now), "push", {"a": 1.0}))  # type: ignore[arg-type]
    sampler.sink(Sample(now, "", {"a": 1.0}))
    sampler.sink(Sample(now, "push", {"nan": math.nan}))
    sampler.sink(Sample(now, "push", {"a": 1.0}, {"k": 1}))  # type: ignore[dict-item]
    sampler.sink("not a sample")  # type: ignore[arg-type]
    sampler.stop()
    records = read_jsonl(tmp_path / "samples.jsonl")
    assert records == [{"ts_ns": now, "source": "push", "values": {"ok": 1.0}}]
    assert sampler.samples_rejected == 5
    assert sampler.values_rejected == 4


def test_bad_values_from_a_polled_collector_are_dropped(tmp_path: Path) -> None:
    class Odd(Polled):
        def sample(self, ts_ns: int) -> Optional[Mapping[str, float]]:
            return {"odd.ok": 1, "odd.nan": math.nan, "odd.none": None}  # type: ignore[dict-item]

    sampler = make(tmp_path, [Odd("odd")])
    sampler.start(ctx(tmp_path))
    sampler.stop()
    assert [r["values"] for r in read_jsonl(tmp_path / "samples.jsonl")] == [{"odd.ok": 1.0}] * 2
    assert sampler.values_rejected == 4


def test_a_failing_listener_costs_only_itself(tmp_path: Path) -> None:
    events = Events()
    seen: List[Sample] = []

    def broken(sample: Sample) -> None:
        raise ValueError("listener bug")

    sampler = make(tmp_path, [Polled()], on_event=events, listeners=[broken, seen.append])
    sampler.start(ctx(tmp_path))
    time.sleep(0.15)
    sampler.stop()
    assert sampler.samples_written == len(seen) >= 3
    assert sampler.listener_errors == len(seen)
    assert events.kinds() == ["warning"]  # once, however often it failed
    assert "listener bug" in events.seen[0][1]["message"]


def test_timestamps_follow_the_monotonic_clock_when_the_wall_clock_steps(tmp_path: Path) -> None:
    wall = [1_700_000_000 * 10**9]
    sampler = make(tmp_path, [Polled()], clock_ns=lambda: wall[0])
    sampler.start(ctx(tmp_path))
    wall[0] -= 3600 * 10**9  # the clock is stepped back an hour mid-run
    time.sleep(0.2)
    sampler.stop()
    ts = polled_ts(tmp_path / "samples.jsonl")
    assert ts[0] - 1_700_000_000 * 10**9 < 100_000_000
    assert all(b > a for a, b in zip(ts, ts[1:]))
    assert (ts[-1] - ts[0]) / 1e9 == pytest.approx(0.2, abs=0.15)


def test_stop_without_start_and_twice(tmp_path: Path) -> None:
    sampler = make(tmp_path, [Polled()])
    sampler.stop()
    sampler.stop()
    assert not (tmp_path / "samples.jsonl").exists()
    started = make(tmp_path, [Polled()])
    started.start(ctx(tmp_path))
    started.stop()
    started.stop()
    assert started.samples_written == 2
    with pytest.raises(RuntimeError):
        started.start(ctx(tmp_path))


@pytest.mark.parametrize("interval", [0, -1, math.nan, math.inf])
def test_bad_interval(tmp_path: Path, interval: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        make(tmp_path, [], interval_s=interval)
