"""The metrics socket's server (profiler.channel) and the ``custom`` collector, against real Unix sockets and threads:
the protocol, and every fault a client can throw at it."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from profiler.channel import (
    COUNTER_NAMES,
    ENV_SOCKET,
    MAX_LINE_BYTES,
    PLUGIN_FILE,
    REJECT_REASONS,
    SOCKET_DIR_IN_APP,
    SOCKET_NAME,
    SOCKET_PATH_IN_APP,
    MetricsServer,
)
from profiler.collectors import Sample, Unavailable, collector_class
from profiler.collectors.base import AppAdditions, RunContext
from profiler.collectors.custom import CustomCollector, SocketSource, Source
from profiler.collectors.pywaggle import pywaggle_env

TIMEOUT_S = 10.0


# -- helpers ----------------------------------------------------------------------------------------------------------
def wait_for(predicate: Callable[[], Any], timeout_s: float = TIMEOUT_S, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def connect(path: Path, timeout_s: float = 5.0) -> socket.socket:
    """A client socket; long paths (pytest's tmp_path can exceed sun_path) through the folder's descriptor."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                sock.connect(f"/proc/self/fd/{fd}/{path.name}")
                return sock
            except BlockingIOError:  # the listen backlog is full (Unix sockets say so at once): the server is busy
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.001)
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(fd)


def line(**message: Any) -> bytes:
    return json.dumps(message).encode() + b"\n"


def read_line(sock: socket.socket, timeout_s: float = 5.0) -> Dict[str, Any]:
    sock.settimeout(timeout_s)
    data = b""
    while not data.endswith(b"\n"):  # a byte at a time: never a byte of the next line
        chunk = sock.recv(1)
        assert chunk, "the server closed the connection"
        data += chunk
    return json.loads(data)  # type: ignore[no-any-return]


class Run:
    """A server as the runner would have it, with its samples."""

    def __init__(self, sock_dir: Path, **kwargs: Any) -> None:
        self.samples: List[Sample] = []
        self.server = MetricsServer(sock_dir, sink=self.samples.append, **kwargs)
        self.server.start()

    @property
    def counters(self) -> Dict[str, int]:
        return self.server.counters()

    def processed(self, n: int) -> None:
        """Wait until n lines were accepted or rejected."""
        wait_for(lambda: self.counters["lines_accepted"] + self.counters["lines_rejected"] >= n, what=f"{n} lines")

    def values(self, key: str) -> List[Any]:
        return [s.values[key] for s in self.samples if key in s.values]

    def rejected(self) -> Dict[str, int]:
        return {r: n for r in REJECT_REASONS if (n := self.counters[f"rejected_{r}"])}

    def send(self, *data: bytes) -> None:
        with connect(self.server.path) as sock:
            for chunk in data:
                sock.sendall(chunk)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run(tmp_path / "sock", params={"res": 640, "model": "yolov5n", "gpu": True, "scale": 0.5})
    yield r
    r.server.stop()
    assert r.server.error is None
    assert r.counters["internal_errors"] == 0


# -- binding ----------------------------------------------------------------------------------------------------------
def test_socket_binds_in_a_folder_deeper_than_sun_path_allows_and_is_removed_at_stop(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "sock"
    assert len(str(deep / SOCKET_NAME)) > 120
    r = Run(deep)
    try:
        mode = os.stat(r.server.path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o777  # any user in the app container may connect
        r.send(line(type="gauge", name="x", value=1))
        r.processed(1)
        assert r.values("app.x") == [1]
    finally:
        r.server.stop()
    assert not r.server.path.exists()
    assert not r.server.running


def test_a_stale_socket_is_replaced_but_a_regular_file_is_not(tmp_path):
    sock_dir = tmp_path / "sock"
    first = Run(sock_dir)
    first.server.stop()
    stale = socket.socket(socket.AF_UNIX)
    fd = os.open(sock_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        stale.bind(f"/proc/self/fd/{fd}/{SOCKET_NAME}")  # a socket file nobody listens on
    finally:
        stale.close()
        os.close(fd)
    assert stat.S_ISSOCK(os.stat(sock_dir / SOCKET_NAME).st_mode)
    second = Run(sock_dir)
    second.server.stop()
    (sock_dir / SOCKET_NAME).write_text("not a socket")
    with pytest.raises(FileExistsError):
        MetricsServer(sock_dir, sink=lambda s: None).start()


# -- the protocol -----------------------------------------------------------------------------------------------------
def test_counters_gauges_timers_events_become_samples(run):
    now = time.time_ns()
    run.send(
        line(type="counter", name="frames", total=10, src="p1"),
        line(type="counter", name="frames", total=25, src="p1"),
        line(type="counter", name="frames", inc=5),
        line(type="gauge", name="queue.len", value=3, ts_ns=now - 5_000_000),
        line(type="timer", name="infer", value=0.25),
        line(type="timer", name="infer", count=4, sum=1.0, min=0.1, max=0.4, src="p1"),
        line(type="event", name="model_loaded", attrs={"model": "yolo", "ms": 412, "gpu": True, "x": None}),
        line(type="gauge", name="g", value=1.5, extra=[1], run_id="whatever"),
    )
    run.processed(8)
    assert run.rejected() == {}
    assert run.values("app.frames.total") == [10, 25, 30]
    queue = [s for s in run.samples if "app.queue.len" in s.values]
    assert queue[0].values == {"app.queue.len": 3} and queue[0].ts_ns == now - 5_000_000
    timers = [s.values for s in run.samples if "app.infer.count_total" in s.values]
    assert timers[0] == {"app.infer.count_total": 1, "app.infer.seconds_total": 0.25, "app.infer.mean_seconds": 0.25,
                         "app.infer.min_seconds": 0.25, "app.infer.max_seconds": 0.25}
    assert timers[1] == {"app.infer.count_total": 5, "app.infer.seconds_total": 1.25, "app.infer.mean_seconds": 0.25,
                         "app.infer.min_seconds": 0.1, "app.infer.max_seconds": 0.4}
    [event] = [s for s in run.samples if "app.model_loaded.events_total" in s.values]
    assert event.values == {"app.model_loaded.events_total": 1}
    assert event.labels == {"model": "yolo", "ms": "412", "gpu": "true", "x": ""}
    assert all(s.source == "custom" for s in run.samples)
    assert run.values("app.g") == [1.5]  # unknown fields are ignored
    assert run.counters["samples"] == len(run.samples) == 8


def test_running_totals_are_counted_once_per_stream_and_summed_over_streams(run):
    run.send(
        line(type="counter", name="n", total=100, src="a"),
        line(type="counter", name="n", total=100, src="a"),  # resent after a failed flush: nothing new
        line(type="counter", name="n", total=50, src="b"),  # another process
        line(type="counter", name="n", total=120, src="a"),
        line(type="counter", name="n", total=7, src="a"),  # a smaller total: that process restarted from zero
    )
    # the same src on a new connection continues its stream (a client that reconnected)
    run.send(line(type="counter", name="n", total=10, src="a"))
    run.processed(6)
    assert run.values("app.n.total") == [100, 100, 150, 170, 177, 180]


def test_timer_reports_and_events_resent_by_a_client_are_not_counted_twice(run):
    run.send(
        line(type="timer", name="t", count=2, sum=0.5, src="a"),
        line(type="timer", name="t", count=2, sum=0.5, src="a"),
        line(type="event", name="e", seq=0, src="a"),
        line(type="event", name="e", seq=1, src="a"),
        line(type="event", name="e", seq=1, src="a"),
        line(type="event", name="e", seq=0, src="b"),
    )
    run.processed(6)
    assert run.values("app.t.count_total") == [2]
    assert run.values("app.e.events_total") == [1, 2, 3]
    assert run.counters["duplicates"] == 2
    assert run.counters["lines_accepted"] == 6


def test_a_first_timer_report_without_observations_is_the_timers_starting_point(run):
    run.send(
        line(type="timer", name="t", count=0, sum=0, src="a", ts_ns=time.time_ns() - 10**9),
        line(type="timer", name="t", count=0, sum=0, src="a"),
        line(type="timer", name="t", count=3, sum=0.3, min=0.1, max=0.1, src="a"),
    )
    run.processed(3)
    samples = [s.values for s in run.samples]
    assert samples[0] == {"app.t.count_total": 0, "app.t.seconds_total": 0}  # totals only: no mean of nothing
    assert len(samples) == 2 and samples[1]["app.t.count_total"] == 3
    assert run.counters["duplicates"] == 1


def test_param_requests_are_answered_from_the_profile(run):
    with connect(run.server.path) as sock:
        sock.sendall(line(type="param", name="res", id=7))
        assert read_line(sock) == {"type": "param", "name": "res", "found": True, "value": 640, "id": 7}
        sock.sendall(line(type="param", name="model") + line(type="param", name="gpu") + line(type="param", name="no"))
        assert read_line(sock)["value"] == "yolov5n"
        assert read_line(sock)["value"] is True
        assert read_line(sock) == {"type": "param", "name": "no", "found": False, "value": None, "id": None}
    wait_for(lambda: run.counters["replies_sent"] == 4)


def test_timestamps_outside_the_window_are_replaced_by_the_arrival_time(run):
    before = time.time_ns()
    run.send(
        line(type="gauge", name="a", value=1, ts_ns=1),
        line(type="gauge", name="b", value=1, ts_ns=before + 3600 * 10**9),
        line(type="gauge", name="c", value=1, ts_ns="now"),
    )
    run.processed(3)
    after = time.time_ns()
    assert all(before <= s.ts_ns <= after for s in run.samples)
    assert run.counters["ts_replaced"] == 2
    assert run.rejected() == {"invalid_field": 1}


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"type": "gauge", "name": "Bad Name", "value": 1}, "invalid_name"),
        ({"type": "gauge", "name": "a..b", "value": 1}, "invalid_name"),
        ({"type": "gauge", "name": "x" * 129, "value": 1}, "invalid_name"),
        ({"type": "gauge", "name": 5, "value": 1}, "invalid_name"),
        ({"type": "gauge", "name": "bytes_total", "value": 1}, "invalid_name"),  # a counter's name
        ({"type": "gauge", "name": "x.total", "value": 1}, "invalid_name"),
        ({"type": "gauge", "name": "x", "value": "1"}, "invalid_field"),
        ({"type": "gauge", "name": "x", "value": True}, "invalid_field"),
        ({"type": "gauge", "name": "x"}, "invalid_field"),
        ({"type": "gauge", "name": "x", "value": {"a": 1}}, "too_deep"),
        ({"type": "counter", "name": "x", "total": -1}, "invalid_field"),
        ({"type": "counter", "name": "x", "total": 1, "inc": 1}, "invalid_field"),
        ({"type": "counter", "name": "x", "inc": 1, "src": ""}, "invalid_field"),
        ({"type": "timer", "name": "x", "count": 1.5, "sum": 1}, "invalid_field"),
        ({"type": "timer", "name": "x", "count": 2, "sum": 1, "min": 2, "max": 1}, "invalid_field"),
        ({"type": "timer", "name": "x", "value": -0.1}, "invalid_field"),
        ({"type": "event", "name": "x", "attrs": {"k": "v" * 300}}, "invalid_field"),
        ({"type": "event", "name": "x", "attrs": {"bad key": 1}}, "invalid_field"),
        ({"type": "event", "name": "x", "attrs": {f"k{i}": i for i in range(17)}}, "invalid_field"),
        ({"type": "event", "name": "x", "attrs": {"k": {"deeper": 1}}}, "too_deep"),
        ({"type": "event", "name": "x", "attrs": {"k": "\ud800"}}, "invalid_field"),
        ({"type": "event", "name": "x", "seq": -1}, "invalid_field"),
        ({"type": "param", "name": "bad name"}, "invalid_name"),
        ({"type": "param", "name": "res", "id": [1]}, "invalid_field"),
        ({"type": "histogram", "name": "x"}, "unknown_type"),
        ({"name": "x"}, "unknown_type"),
        ({"type": ["gauge"], "name": "x"}, "unknown_type"),
        ({"type": "gauge", "name": "x", "value": 1, "v": 2}, "unsupported_version"),
        ({"type": "gauge", "name": "x", "value": 1e301}, "not_finite"),
        ({"type": "gauge", "name": "x", "value": 10**400}, "not_finite"),
    ],
)
def test_invalid_messages_are_rejected_by_reason(run, message, reason):
    run.send(line(**message), line(type="gauge", name="ok", value=1))
    run.processed(2)
    assert run.rejected() == {reason: 1}
    assert run.values("app.ok") == [1]
    assert run.counters["lines_rejected"] == 1


def test_names_are_capped_and_may_not_collide(tmp_path):
    r = Run(tmp_path / "sock", max_names=4)
    try:
        r.send(
            line(type="counter", name="fps", inc=1),
            line(type="timer", name="fps", value=0.1),  # app.fps.count_total, app.fps.mean_seconds, ...: no clash
            line(type="gauge", name="fps.mean_seconds", value=1),  # would write the timer's app.fps.mean_seconds
            line(type="gauge", name="fps", value=30),  # app.fps: no clash
            line(type="event", name="extra"),  # the fourth name
            line(type="event", name="extra2"),  # a fifth
            line(type="counter", name="fps", inc=1),  # known names still work
        )
        r.processed(7)
        assert r.rejected() == {"name_conflict": 1, "too_many_names": 1}
        assert r.values("app.fps.total") == [1, 2]
    finally:
        r.server.stop()


# -- faults -----------------------------------------------------------------------------------------------------------
def test_garbage_lines_are_rejected_and_the_valid_ones_around_them_kept(run):
    garbage = [b"hello", b"{", b"}{", b"[1,2,3]", b"\x00\x01\x02", b'{"type":', b"null", b"42", b'"str"', b"{'a': 1}"]
    data = b""
    for i, g in enumerate(garbage):
        data += g + b"\n" + line(type="counter", name="ok", inc=1)
        if i % 3 == 0:
            data += b"\r\n   \n"  # blank lines are skipped, not counted
    run.send(data)
    run.processed(2 * len(garbage))
    assert run.counters["lines_accepted"] == len(garbage)
    assert run.values("app.ok.total")[-1] == len(garbage)
    assert run.rejected() == {"invalid_json": 6, "not_object": 4}


def test_invalid_utf8_is_rejected(run):
    run.send(b'{"type":"event","name":"x","attrs":{"k":"\xff\xfe"}}\n', "é".encode("latin-1") + b"\n",
             '{"type":"event","name":"x","attrs":{"k":"é"}}\n'.encode())
    run.processed(3)
    assert run.rejected() == {"invalid_utf8": 2}
    assert [s.labels for s in run.samples] == [{"k": "é"}]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_nan_and_infinity_are_rejected(run, constant):
    run.send(f'{{"type":"gauge","name":"x","value":{constant}}}\n'.encode(),
             f'{{"type":"counter","name":"x","inc":1,"junk":{constant}}}\n'.encode())
    run.processed(2)
    assert run.rejected() == {"not_finite": 2}
    assert run.samples == []


def test_deep_nesting_is_rejected_without_harm(run):
    deep = b"[" * 30_000 + b"]" * 30_000  # under the line cap, far beyond the parser's recursion limit
    deep_object = b'{"type":"gauge","name":"x","value":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001
    assert len(deep) < MAX_LINE_BYTES and len(deep_object) < MAX_LINE_BYTES
    run.send(deep + b"\n", deep_object + b"\n", line(type="gauge", name="ok", value=1))
    run.processed(3)
    assert run.rejected() == {"too_deep": 2}
    assert run.values("app.ok") == [1]


def test_a_10mb_line_without_newline_is_skipped_without_being_buffered(run):
    with connect(run.server.path) as sock:
        sock.sendall(line(type="gauge", name="before", value=1))
        blob = b"x" * (1 << 20)
        for _ in range(10):  # 10 MiB, no newline
            sock.sendall(blob)
        sock.sendall(b"still the same line\n" + line(type="gauge", name="after", value=2))
        run.processed(3)
        # and a 10 MiB line that never ends: the connection goes away in the middle of it
        for _ in range(10):
            sock.sendall(blob)
    wait_for(lambda: run.counters["rejected_line_too_long"] == 2, what="the second long line")
    assert run.values("app.before") == [1] and run.values("app.after") == [2]
    assert run.counters["line_buffer_peak_bytes"] <= MAX_LINE_BYTES  # never more than one capped line held
    wait_for(lambda: run.counters["connections_peak"] == 1 and not run.server._conns, what="the close")
    assert run.counters["bytes_received"] >= 20 << 20
    assert run.rejected() == {"line_too_long": 2}  # the unfinished one is not counted twice


def test_a_disconnect_mid_line_drops_the_partial_line_and_counts_it(run):
    run.send(line(type="gauge", name="kept", value=1) + b'{"type":"gauge","name":"lost","va')
    wait_for(lambda: run.counters["rejected_incomplete_line"] == 1, what="the partial line")
    assert run.values("app.kept") == [1]
    assert run.values("app.lost") == []
    assert run.counters["lines_accepted"] == 1


def test_a_slow_client_does_not_hold_up_the_others(run):
    message = line(type="counter", name="slow", inc=1)
    latencies: List[float] = []

    def slow() -> None:
        with connect(run.server.path) as sock:
            for _ in range(3):
                for byte in message:
                    sock.sendall(bytes([byte]))
                    time.sleep(0.001)

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        with connect(run.server.path) as fast:
            while thread.is_alive():
                t0 = time.perf_counter()
                fast.sendall(line(type="param", name="res"))
                assert read_line(fast)["value"] == 640
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.01)
    finally:
        thread.join()
    run.processed(3 + len(latencies))
    assert run.values("app.slow.total") == [1, 2, 3]
    assert len(latencies) >= 5 and max(latencies) < 1.0


def test_1000_connections_most_refused_and_a_well_behaved_client_still_served(tmp_path):
    r = Run(tmp_path / "sock", idle_evict_s=1.0)
    flood: List[socket.socket] = []
    try:
        for _ in range(1000):
            flood.append(connect(r.server.path))
        wait_for(lambda: r.counters["connections_accepted"] + r.counters["connections_refused"] == 1000,
                 what="every connection handled")
        c = r.counters
        assert c["connections_peak"] == 64  # never more at once
        assert c["connections_refused"] >= 1000 - 64 - c["connections_evicted"] >= 900
        time.sleep(1.1)  # the flood's connections are idle now: a new one may take the place of the oldest
        with connect(r.server.path) as good:
            good.sendall(line(type="param", name="res") + line(type="gauge", name="ok", value=1))
            assert read_line(good)["found"] is False  # this server has no params; what matters: it answered
        r.processed(2)
        assert r.values("app.ok") == [1]
        assert r.counters["connections_evicted"] >= 1
    finally:
        for sock in flood:
            sock.close()
        r.server.stop()
    assert r.server.error is None


def test_1000_connections_then_gone_leave_a_working_server(run):
    flood = [connect(run.server.path) for _ in range(1000)]
    for sock in flood:
        sock.close()
    wait_for(lambda: not run.server._conns and run.counters["connections_accepted"]
             + run.counters["connections_refused"] == 1000, what="the flood to be gone")
    with connect(run.server.path) as good:
        good.sendall(line(type="param", name="res"))
        assert read_line(good)["value"] == 640


def test_a_client_that_never_reads_its_replies_cannot_block_the_server(run):
    greedy = connect(run.server.path)
    try:
        requests = line(type="param", name="model", id=1) * 20_000  # ~1 MB of replies it will never read
        greedy.sendall(requests)
        run.processed(20_000)
        assert run.counters["replies_dropped"] > 0
        with connect(run.server.path) as polite:
            polite.sendall(line(type="param", name="res"))
            assert read_line(polite)["value"] == 640
        # what the greedy client does receive is whole lines
        greedy.settimeout(1.0)
        received = b""
        try:
            while chunk := greedy.recv(1 << 16):
                received += chunk
                if len(received) > 4 << 20:
                    break
        except socket.timeout:
            pass
        assert received.endswith(b"\n") and all(json.loads(x)["id"] == 1 for x in received.splitlines())
    finally:
        greedy.close()


def test_a_sink_that_fails_is_counted_and_the_server_goes_on(tmp_path):
    calls = []

    def sink(sample: Sample) -> None:
        calls.append(sample)
        if len(calls) == 1:
            raise RuntimeError("disk full")

    server = MetricsServer(tmp_path / "sock", sink=sink)
    server.start()
    try:
        with connect(server.path) as sock:
            sock.sendall(line(type="gauge", name="a", value=1) + line(type="gauge", name="b", value=2))
        wait_for(lambda: len(calls) == 2)
        assert server.counters()["sink_errors"] == 1 and server.counters()["samples"] == 1
    finally:
        server.stop()


def test_stop_takes_in_what_clients_sent_before_it(tmp_path):
    r = Run(tmp_path / "sock")
    sock = connect(r.server.path)
    try:
        # enough that the server cannot have read it all when stop() comes right after
        sock.sendall(b"".join(line(type="counter", name="n", inc=1) for _ in range(2000)))
        r.server.stop()
        assert r.values("app.n.total")[-1] == 2000
    finally:
        sock.close()
    assert r.counters["lines_accepted"] == 2000


# -- identity ---------------------------------------------------------------------------------------------------------
def test_a_message_claiming_another_run_lands_in_the_run_of_its_socket(tmp_path):
    a = Run(tmp_path / "a" / "sock", params={"res": 1})
    b = Run(tmp_path / "b" / "sock", params={"res": 2})
    try:
        with connect(a.server.path) as sock:
            claim = {"run_id": "run-b", "run": "run-b", "session_id": "other", "container_id": "b" * 64}
            sock.sendall(line(type="counter", name="frames", inc=5, **claim))
            sock.sendall(line(type="param", name="res", **claim))
            assert read_line(sock)["value"] == 1  # this run's knobs, whatever the payload says
        a.processed(2)
        time.sleep(0.05)
        assert a.values("app.frames.total") == [5]
        assert all(not s.labels for s in a.samples)  # the payload's identity is not carried along
        assert b.samples == [] and b.counters["lines_accepted"] == 0
    finally:
        a.server.stop()
        b.server.stop()


# -- counters for the manifest ----------------------------------------------------------------------------------------
def test_counters_are_non_negative_integers_with_stable_names(run):
    run.send(b"junk\n")
    run.processed(1)
    counters = run.counters
    assert tuple(counters) == COUNTER_NAMES
    assert all(isinstance(v, int) and v >= 0 for v in counters.values())
    assert counters["lines_rejected"] == sum(counters[f"rejected_{r}"] for r in REJECT_REASONS)


# -- the collector ----------------------------------------------------------------------------------------------------
def context(run_dir: Path, params: Optional[Dict[str, Any]] = None) -> RunContext:
    return RunContext(run_id="s.t-r1", container_id="c" * 64, container_pid=0, run_dir=run_dir,
                      output_dir=run_dir / "output", interval_s=1.0, params=params or {})


def test_the_registry_names_the_custom_collector_and_its_catalog():
    assert collector_class("custom") is CustomCollector
    names = {m.name for m in CustomCollector.catalog}
    assert {"app.<name>.total", "app.<name>", "app.<name>.mean_seconds", "app.<name>.events_total"} <= names
    assert {m.kind for m in CustomCollector.catalog} == {"counter", "gauge"}


def test_collector_serves_from_prepare_and_hands_early_samples_over_at_start(tmp_path):
    run_dir = tmp_path / ("r" * 100) / "run"
    (run_dir / "output").mkdir(parents=True)
    collector = CustomCollector()
    additions = collector.prepare(run_dir, run_dir / "output", {"res": 320})
    sock_dir = run_dir / "sock"
    # the socket's variables, and pywaggle's (its data file is followed by the same collector)
    assert additions.env == {ENV_SOCKET: SOCKET_PATH_IN_APP, "PYTHONPATH": SOCKET_DIR_IN_APP, **pywaggle_env()}
    assert (run_dir / "output" / "pywaggle").is_dir()
    assert additions.mounts == {sock_dir: (SOCKET_DIR_IN_APP, True)}
    plugin_py = Path(__file__).parent.parent / "profiler" / "plugin.py"
    assert (sock_dir / PLUGIN_FILE).read_bytes() == plugin_py.read_bytes()
    server = collector.sources[0].server
    with connect(sock_dir / SOCKET_NAME) as sock:
        sock.sendall(line(type="param", name="res"))  # the app's first instruction: the runner already answers
        assert read_line(sock)["value"] == 320
        sock.sendall(line(type="counter", name="early", inc=1))
        wait_for(lambda: server.counters()["samples"] == 1)
        got: List[Sample] = []
        collector.start(context(run_dir), got.append)
        assert [s.values for s in got] == [{"app.early.total": 1}]
        sock.sendall(line(type="counter", name="early", inc=1) + b"garbage\n")
    collector.stop()
    assert [s.values for s in got] == [{"app.early.total": 1}, {"app.early.total": 2}]
    assert collector.status.status == "ok" and collector.status.reason == ""
    c = collector.status.counters
    assert c["socket.lines_accepted"] == 3 and c["socket.rejected_invalid_json"] == 1
    assert all(k.startswith(("socket.", "pywaggle.")) for k in c)
    assert c["socket.lines_rejected"] == 1 and "socket.rejected_too_deep" not in c  # zeros left out but the core
    assert not sock_dir.exists()  # no socket or client copy left in the run directory
    collector.stop()  # idempotent


def test_collector_without_prepare_prepares_at_start(tmp_path):
    collector = CustomCollector()
    got: List[Sample] = []
    collector.start(context(tmp_path), got.append)
    try:
        with connect(tmp_path / "sock" / SOCKET_NAME) as sock:
            sock.sendall(line(type="gauge", name="x", value=1))
        wait_for(lambda: got)
    finally:
        collector.stop()


def test_collector_stop_without_start_releases_the_socket(tmp_path):
    collector = CustomCollector()
    collector.prepare(tmp_path, tmp_path / "output", {})
    assert (tmp_path / "sock" / SOCKET_NAME).exists()
    collector.stop()
    assert not (tmp_path / "sock").exists()


class _Broken(Source):
    name = "broken"

    def prepare(self, run_dir: Path, output_dir: Path, params: Any, sink: Any) -> AppAdditions:
        raise OSError("no such thing")

    def stop(self) -> None:
        pass

    def counters(self) -> Dict[str, int]:
        return {}


def test_collector_is_unavailable_when_no_source_works_and_says_why_when_one_fails(tmp_path):
    (tmp_path / "sock").write_text("a file where the socket folder should be")
    with pytest.raises(Unavailable, match=r"socket: .*broken: no such thing"):
        CustomCollector([SocketSource(), _Broken()]).prepare(tmp_path, tmp_path / "output", {})
    other = tmp_path / "other"
    other.mkdir()
    collector = CustomCollector([SocketSource(), _Broken()])
    collector.prepare(other, other / "output", {})
    collector.start(context(other), lambda s: None)
    collector.stop()
    assert collector.status.reason == "broken: no such thing"
