"""The in-app client (profiler/plugin.py) against the real server: no-op without a profiler, local aggregation,
timers, events, knobs, a server that goes away, Python 3.6, and an app in a container."""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from profiler import plugin
from profiler.channel import ENV_FLUSH_S, ENV_SOCKET
from profiler.collectors import Sample
from profiler.collectors.custom import CustomCollector
from tests.test_channel import Run, context, wait_for

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "profiler" / "plugin.py"


def _python36() -> Optional[str]:
    """A Python 3.6 to run the client with (WAAP_TEST_PYTHON36, a pyenv build, or python3.6 on PATH), or None."""
    candidates = [os.environ.get("WAAP_TEST_PYTHON36", "")]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.6*/bin/python3.6"))
    candidates.append(shutil.which("python3.6") or "")
    for candidate in filter(None, candidates):
        try:
            check = subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 6)"],
                                   capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        if check.returncode == 0:
            return candidate
    return None


PYTHON36 = _python36()


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run(tmp_path / "sock", params={"res": 320, "model": "tiny"})
    yield r
    r.server.stop()
    assert r.server.error is None


@pytest.fixture
def clients() -> Iterator[List[plugin.Client]]:
    made: List[plugin.Client] = []
    yield made
    for client in made:
        client.close(0.5)


def make_client(clients: List[plugin.Client], path: Path, **kwargs: Any) -> plugin.Client:
    kwargs.setdefault("flush_s", 3600.0)  # flushed by hand unless a test wants the thread
    client = plugin.Client(str(path), **kwargs)
    clients.append(client)
    return client


def run_app(code: str, env: Dict[str, str], python: str = sys.executable, timeout_s: float = 60) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WAAP_")}
    result = subprocess.run([python, "-c", textwrap.dedent(code)], env={**base, **env}, capture_output=True,
                            text=True, timeout=timeout_s)
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- not profiled -----------------------------------------------------------------------------------------------------
def test_without_a_socket_every_call_is_a_noop_and_no_thread_starts():
    out = run_app(
        """
        import threading
        from profiler import plugin
        fps = plugin.metric("fps")
        for _ in range(1000):
            fps.inc()
        plugin.gauge("q").set(3)
        with plugin.timer("t"):
            pass
        def work(x):
            return x * 2
        assert plugin.timer("w")(work) is work  # the decorator hands the function back untouched
        plugin.event("e", a=1)
        assert plugin.param("res", 640).get() == 640 and plugin.param("x").get() is None
        assert plugin.flush() is False and not plugin.enabled()
        assert threading.active_count() == 1
        print(type(fps).__name__)
        """,
        {"PYTHONPATH": str(REPO)},
    )
    assert out.strip() == "_Noop"


def test_an_unreachable_socket_costs_the_app_nothing_but_the_default(tmp_path, clients):
    client = make_client(clients, tmp_path / "nothing-here.sock")
    t0 = time.monotonic()
    assert client.param("res", 7).get() == 7
    assert time.monotonic() - t0 < 0.5
    client.metric("n").inc()
    assert client.flush() is False


# -- aggregation ------------------------------------------------------------------------------------------------------
def test_100k_increments_are_sent_as_one_total(run, clients):
    client = make_client(clients, run.server.path)
    fps = client.metric("fps")
    for _ in range(100_000):
        fps.inc()
    assert client.flush() is True
    run.processed(2)
    # one report of the total, after a zero stamped with the counter's creation: the rate counts from there
    assert run.values("app.fps.total") == [0, 100_000]
    assert run.counters["lines_accepted"] == 2 and run.counters["bytes_received"] < 300
    fps.inc(5)
    client.flush()
    client.flush()  # nothing changed: nothing sent
    run.processed(3)
    time.sleep(0.05)
    assert run.values("app.fps.total") == [0, 100_000, 100_005]
    assert fps.value == 100_005


def test_increments_from_many_threads_are_never_lost(run, clients):
    client = make_client(clients, run.server.path, flush_s=0.01)  # the flush thread reads while they count
    counter = client.metric("frames")

    def work() -> None:
        for _ in range(25_000):
            counter.inc()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.value == 200_000
    client.flush()
    wait_for(lambda: run.values("app.frames.total")[-1:] == [200_000])
    totals = run.values("app.frames.total")
    assert totals == sorted(totals)  # a running total never goes back


def test_the_same_name_is_the_same_metric_and_bad_names_are_fixed(run, clients):
    client = make_client(clients, run.server.path)
    assert client.metric("fps") is client.metric("FPS") is client.metric("fps")
    assert client.metric("Inference Time").name == "inference_time"
    assert client.metric("a..b.").name == "a._.b._"
    assert client.gauge(42).name == "42"
    assert client.timer("x" * 500).name == "x" * 128
    assert client.timer("x" * 126 + "..y").name == "x" * 126 + "._"  # fixed, then cut: still a valid name
    assert client.gauge("bytes_total").name == "bytes_total_gauge"  # "total" names are counters' names
    client.metric("Inference Time").inc()
    client.flush()
    run.processed(4)  # the three counters (0, 0 then 1, and 0); the gauge was never set, the timer never used
    assert run.rejected() == {}


def test_timer_as_context_manager_decorator_and_observe(run, clients):
    client = make_client(clients, run.server.path)
    infer = client.timer("infer")
    with infer:
        time.sleep(0.02)
    with pytest.raises(ZeroDivisionError), infer:  # timed also when the block raises, and the error goes on
        1 / 0  # noqa: B018

    @client.timer("step")
    def step(x: int) -> int:
        time.sleep(0.01)
        return x + 1

    assert step(1) == 2 and step.__name__ == "step"
    infer.observe(1.5)
    infer.observe(-1)  # ignored
    infer.observe(float("nan"))  # ignored
    client.flush()
    run.processed(4)  # each timer: a zero at its creation, then the report
    values = [s.values for s in run.samples if "app.infer.count_total" in s.values][-1]
    assert values["app.infer.count_total"] == 3
    assert values["app.infer.max_seconds"] == 1.5
    assert 0 <= values["app.infer.min_seconds"] < 0.01  # the raising block: no sleep in it
    assert 1.52 <= values["app.infer.seconds_total"] < 2.0
    assert math.isclose(values["app.infer.mean_seconds"], values["app.infer.seconds_total"] / 3)
    assert run.values("app.step.count_total") == [0, 1]
    # min and max are per report: the next report has only what came after
    infer.observe(0.5)
    client.flush()
    run.processed(5)
    last = [s.values for s in run.samples if "app.infer.count_total" in s.values][-1]
    assert [last[f"app.infer.{k}"] for k in ("count_total", "min_seconds", "max_seconds")] == [4, 0.5, 0.5]


def test_nested_and_concurrent_timing_of_one_timer(run, clients):
    client = make_client(clients, run.server.path)
    t = client.timer("t")

    def work() -> None:
        for _ in range(100):
            with t, t:
                pass

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    client.flush()
    run.processed(2)
    assert run.values("app.t.count_total") == [0, 800]


def test_gauges_send_the_last_value_set(run, clients):
    client = make_client(clients, run.server.path)
    q = client.gauge("queue")
    for v in (1, 5, 3):
        q.set(v)
    client.gauge("broken").set("not a number")  # left out, never raised
    client.flush()
    client.flush()  # not set again: not sent again
    run.processed(1)
    time.sleep(0.05)
    assert run.values("app.queue") == [3.0]
    assert run.values("app.broken") == []


def test_events_keep_their_time_and_attributes(run, clients):
    client = make_client(clients, run.server.path)
    before = time.time_ns()
    client.event("model_loaded", model="yolov5n", ms=412.5, gpu=True, none=None, obj=object(), long="x" * 1000)
    client.event("Frame Dropped")
    client.flush()
    run.processed(2)
    [loaded] = [s for s in run.samples if "app.model_loaded.events_total" in s.values]
    assert before <= loaded.ts_ns <= time.time_ns()
    assert loaded.labels["model"] == "yolov5n" and loaded.labels["ms"] == "412.5" and loaded.labels["gpu"] == "true"
    assert loaded.labels["none"] == "" and loaded.labels["obj"].startswith("<object")
    assert loaded.labels["long"] == "x" * 256
    assert run.values("app.frame_dropped.events_total") == [1]


def test_too_many_pending_events_are_dropped_and_counted(tmp_path, clients):
    client = make_client(clients, tmp_path / "nobody.sock")
    for _ in range(plugin.MAX_PENDING_EVENTS + 10):
        client.event("e")
    assert client.dropped_events == 10


# -- knobs ------------------------------------------------------------------------------------------------------------
def test_param_round_trip(run, clients):
    client = make_client(clients, run.server.path)
    res = client.param("res", 640)
    assert res.get() == 320
    assert client.param("model").get() == "tiny"
    assert client.param("missing", "dflt").get() == "dflt"
    assert client.param("missing").get() is None
    wait_for(lambda: run.counters["replies_sent"] == 3)
    assert res.get() == 320  # the second get() of a knob asks nothing
    time.sleep(0.05)
    assert run.counters["replies_sent"] == 3


def test_a_knob_answered_late_is_picked_up(tmp_path, clients):
    sock_dir = tmp_path / "sock"
    client = make_client(clients, sock_dir / "metrics.sock", flush_s=0.05)
    res = client.param("res", 640)
    assert res.get() == 640  # no runner yet
    late = Run(sock_dir, params={"res": 1080})
    try:
        wait_for(lambda: res.get() == 1080, what="the late answer")  # asked again by the flush thread
    finally:
        late.server.stop()


# -- faults -----------------------------------------------------------------------------------------------------------
def test_a_server_gone_mid_run_never_reaches_the_app_and_a_new_one_gets_the_totals(tmp_path, clients):
    sock_dir = tmp_path / "sock"
    first = Run(sock_dir)
    client = make_client(clients, first.server.path, flush_s=0.05)
    n = client.metric("n")
    n.inc(10)
    wait_for(lambda: first.values("app.n.total") == [0, 10])
    first.server.stop()
    for _ in range(1000):
        n.inc()
    client.event("while_gone")
    with client.timer("t"):
        pass
    client.gauge("g").set(1)
    assert client.param("late").get() is None
    assert client.flush() is False  # the app notices nothing; the report waits
    second = Run(sock_dir)
    try:
        wait_for(lambda: second.values("app.n.total")[-1:] == [1010], timeout_s=15, what="the totals")
        wait_for(lambda: second.values("app.while_gone.events_total") == [1], what="the pending event")
        wait_for(lambda: second.values("app.t.count_total") == [1], what="the timer")
    finally:
        second.server.stop()


def test_nothing_the_app_passes_raises(run, clients):
    client = make_client(clients, run.server.path)
    c = client.metric("c")
    for bad in ("x", None, -1, float("nan"), float("inf"), object(), [1]):
        c.inc(bad)  # type: ignore[arg-type]
    c.inc(2.5)
    client.gauge("g").set(object())  # type: ignore[arg-type]
    client.timer("t").observe("abc")  # type: ignore[arg-type]
    client.timer("t").__exit__(None, None, None)  # an exit without an enter
    client.metric(None)  # type: ignore[arg-type]
    client.param(object()).get()  # type: ignore[arg-type]
    client.event(object(), **{"bad key": object()})  # type: ignore[arg-type]
    client.flush()
    run.processed(5)  # c (its zero, its total), "none", the timer's first report, the event
    assert run.values("app.c.total") == [0, 2.5]
    assert run.rejected() == {}


def test_forked_children_report_as_processes_of_their_own(run, clients):
    client = make_client(clients, run.server.path)
    n = client.metric("n")
    n.inc(5)
    client.flush()

    def child() -> None:
        n.inc(10)  # counted in the child only (it starts from zero after the fork)
        client.flush()

    def quiet_child() -> None:
        n.inc(100)  # and exits at once: multiprocessing's exit skips atexit, the client's finalizer reports

    for target in (child, quiet_child):
        process = multiprocessing.get_context("fork").Process(target=target)
        process.start()
        process.join(30)
        assert process.exitcode == 0
    n.inc(1)
    client.flush()
    wait_for(lambda: run.values("app.n.total")[-1:] == [116])


def test_the_exit_flush_delivers_what_the_flush_thread_had_no_time_for(run):
    run_app(
        """
        from profiler import plugin
        plugin.metric("n").inc(3)
        plugin.event("bye")
        """,
        {"PYTHONPATH": str(REPO), ENV_SOCKET: str(run.server.path), ENV_FLUSH_S: "3600"},
    )
    run.processed(3)
    assert run.values("app.n.total") == [0, 3] and run.values("app.bye.events_total") == [1]


# -- Python 3.6 -------------------------------------------------------------------------------------------------------
def test_vermin_finds_nothing_newer_than_python_3_6():
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent)) or shutil.which("vermin")
    if vermin is None:
        pytest.skip("vermin is not installed")
    result = subprocess.run([vermin, "--target=3.6-", "--no-tips", "--violations", str(PLUGIN)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run([vermin, "--no-tips", str(PLUGIN)], capture_output=True, text=True)
    assert "Minimum required versions: 3.6" in result.stdout or "Minimum required versions: 3.5" in result.stdout


@pytest.mark.skipif(PYTHON36 is None, reason="no Python 3.6 interpreter here (set WAAP_TEST_PYTHON36)")
def test_the_mounted_copy_runs_on_python_3_6(tmp_path):
    collector = CustomCollector()
    additions = collector.prepare(tmp_path, tmp_path / "output", {"res": 320})
    got: List[Sample] = []
    collector.start(context(tmp_path), got.append)
    try:
        out = run_app(
            """
            import sys
            import waap_plugin as plugin
            fps = plugin.metric("fps")
            for _ in range(1000):
                fps.inc()
            with plugin.timer("t"):
                pass
            plugin.event("e", v=sys.version_info[1])
            print(plugin.param("res", 640).get())
            """,
            {"PYTHONPATH": str(tmp_path / "sock"), ENV_SOCKET: str(tmp_path / "sock" / "metrics.sock")},
            python=PYTHON36 or "",
        )
    finally:
        collector.stop()
    assert additions.env["PYTHONPATH"] == "/run/waap"
    assert out.strip() == "320"
    values = {k: v for s in got for k, v in s.values.items()}
    assert values["app.fps.total"] == 1000 and values["app.t.count_total"] == 1
    assert [s.labels for s in got if "app.e.events_total" in s.values] == [{"v": "6"}]


# -- in a container ---------------------------------------------------------------------------------------------------
APP = """
import os, time
import waap_plugin as plugin
assert plugin.enabled()
res = plugin.param("res", 640).get()
fps = plugin.metric("fps")
for _ in range(50):
    with plugin.timer("infer"):
        time.sleep(0.002)
    fps.inc()
plugin.gauge("res_used").set(res)
plugin.event("done", model=plugin.param("model").get(), frames=50)
time.sleep(0.3)  # at least one periodic flush, then the exit flush
print("res", res, "uid", os.getuid(), flush=True)
"""


@pytest.mark.docker
def test_an_app_in_a_container_reports_through_the_mounted_socket(docker_client, base_image, tmp_path):
    run_dir = tmp_path / ("deep" * 20) / "run"  # a run directory deeper than a socket path may be
    run_dir.mkdir(parents=True)
    collector = CustomCollector()
    additions = collector.prepare(run_dir, run_dir / "output", {"res": 320, "model": "tiny"})
    got: List[Sample] = []
    collector.start(context(run_dir), got.append)
    volumes = {str(local): {"bind": inside, "mode": "ro" if ro else "rw"}
               for local, (inside, ro) in additions.mounts.items()}
    container = docker_client.containers.run(
        base_image, ["python3", "-c", APP], environment={**additions.env, ENV_FLUSH_S: "0.1"}, volumes=volumes,
        user="65534:65534", detach=True,  # not root: the socket and the client copy are for any user
    )
    try:
        status = container.wait(timeout=120)
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
        collector.stop()
    assert status["StatusCode"] == 0, logs
    assert "res 320 uid 65534" in logs
    last: Dict[str, Any] = {}
    for sample in got:
        last.update(sample.values)
    assert last["app.fps.total"] == 50
    assert last["app.infer.count_total"] == 50 and last["app.infer.min_seconds"] >= 0.002
    assert last["app.res_used"] == 320
    [done] = [s for s in got if "app.done.events_total" in s.values]
    assert done.labels == {"model": "tiny", "frames": "50"}
    assert all(s.source == "custom" for s in got)
    counters = collector.status.counters
    assert counters["socket.lines_rejected"] == 0 and counters["socket.connections_accepted"] == 1
    assert not (run_dir / "sock").exists()
