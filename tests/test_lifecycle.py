"""The app container's lifecycle on the real Docker engine: exit, timeout escalation, OOM, logs, output, faults."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, List

import docker
import pytest

from profiler.engine import connect
from profiler.images import PullProgress
from profiler.profile import Limits, Profile, Target
from profiler.rundir import read_jsonl, read_manifest
from profiler.runner import Observer, Runner, SessionResult

pytestmark = pytest.mark.docker


def py(code: str, *extra: str) -> tuple:
    """argv for a Python one-liner in the base image."""
    return ("python3", "-c", code, *extra)


def session(results: Path, image: str, *targets: Target, observer: Any = None, **profile: Any) -> SessionResult:
    runner = Runner(connect(), output_root=results, observer=observer, log_limit=profile.pop("log_limit", 64 << 20))
    return runner.run_session(Profile(image=image, targets=targets, **profile))


def events(run_path: Path) -> List[str]:
    return [e["event"] for e in read_jsonl(run_path / "events.jsonl")]


def test_app_that_exits_leaves_a_complete_run_directory(docker_client, base_image, results):
    # the app lives long enough (0.5 s) for its container to be measured: an app that ends at once is not
    code = "import sys, time; time.sleep(0.5); print('hello', sys.argv[1:])"
    s = session(results, base_image, Target(args=py(code, "a b", "$(id)"), name="hello", env={"GREETING": "hi"}))
    [run] = s.runs
    m = read_manifest(run.info.path)
    assert (m["status"], m["finished"], m["stop_reason"], m["exit_code"]) == ("complete", True, "exited", 0)
    assert m["app"]["args"] == ["python3", "-c", code, "a b", "$(id)"]
    assert m["app"]["image_id"].startswith("sha256:")
    # args are an argv list: the shell metacharacters reach the app literally
    assert (run.info.path / "app.log").read_text() == "hello ['a b', '$(id)']\n"
    assert events(run.info.path) == ["run_started", "container_created", "started", "exited", "container_removed",
                                     "summary_written", "run_finished"]
    # the default collectors sampled the run: a first sample at the start, a last one at the exit
    assert [(c["name"], c["status"]) for c in m["collectors"]] == [("system", "ok"), ("container", "ok"),
                                                                    ("custom", "ok")]
    assert m["sampling"]["samples"] >= 2
    samples = read_jsonl(run.info.path / "samples.jsonl")
    assert all(isinstance(s["ts_ns"], int) for s in samples)
    assert {s["source"] for s in samples} >= {"system", "container"}
    assert samples[0]["ts_ns"] - m["start_ns"] < 100_000_000
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(f"waap-{s.session_id}-hello-r1")


def test_app_exit_code_is_recorded_not_confused_with_profiling(base_image, results):
    s = session(results, base_image, Target(args=py("import sys; print('bad', file=sys.stderr); sys.exit(3)")))
    [run] = s.runs
    assert (run.status, run.stop_reason, run.exit_code) == ("complete", "exited", 3)
    assert s.ok
    assert "bad" in (run.info.path / "app.log").read_text()


def test_environment_labels_and_output_folder(docker_client, base_image, results):
    code = (
        "import os, json\n"
        "d = '/app/profiling_output'\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith(('WAAP_', 'MODE'))}\n"
        "json.dump(env, open(d + '/env.json', 'w'))\n"
        "open('/app/not-output.txt', 'w').write('stays in the container')\n"
        "os.symlink('/etc/shadow', d + '/shadow')\n"
        "os.mkfifo(d + '/fifo')\n"
    )
    # system only: the custom collector would add its socket's variables to the environment
    s = session(results, base_image, Target(args=py(code), env={"MODE": "target"}), env={"MODE": "profile"},
                metrics=("system",))
    [run] = s.runs
    env = json.loads((run.info.path / "output" / "env.json").read_text())
    assert env == {"MODE": "target", "WAAP_RUN_ID": run.info.run_id, "WAAP_OUTPUT_DIR": "/app/profiling_output"}
    # only the output folder comes back, and nothing in it that is not a plain file or folder
    assert sorted(p.name for p in (run.info.path / "output").iterdir()) == ["env.json"]
    assert not list(run.info.path.rglob("not-output.txt"))
    sanitized = [e for e in read_jsonl(run.info.path / "events.jsonl") if e["event"] == "output_sanitized"]
    assert sorted(sanitized[0]["removed"]) == ["fifo", "shadow"]


def test_sigint_stops_a_well_behaved_app_at_its_timeout(base_image, results):
    code = "import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('bye', flush=True)"
    s = session(results, base_image, Target(args=py(code), timeout_s=1), grace_s=10)
    [run] = s.runs
    assert (run.stop_reason, run.exit_code) == ("timeout", 0)
    m = read_manifest(run.info.path)
    assert m["signals_sent"] == ["SIGINT"]
    assert "bye" in (run.info.path / "app.log").read_text()
    assert run.duration_s < 5


def test_app_ignoring_sigint_and_sigterm_is_killed_within_timeout_plus_grace(base_image, results):
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "while True: time.sleep(0.1)\n"
    )
    t0 = time.monotonic()
    s = session(results, base_image, Target(args=py(code), timeout_s=1), grace_s=1)
    elapsed = time.monotonic() - t0
    [run] = s.runs
    m = read_manifest(run.info.path)
    assert (run.stop_reason, m["signals_sent"]) == ("timeout", ["SIGINT", "SIGTERM", "SIGKILL"])
    assert run.exit_code == 137
    # timeout 1 + grace 1 + SIGTERM grace 3 + a few seconds of engine work
    assert elapsed < 1 + 1 + 3 + 6


def test_app_that_forks_children_is_stopped_with_all_of_them(docker_client, base_image, results):
    code = (
        "import os, signal, time\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"
        "        signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "        while True: time.sleep(0.1)\n"
        "print('forked', flush=True)\n"
        "time.sleep(60)\n"
    )
    s = session(results, base_image, Target(args=py(code), timeout_s=1, name="forker"), grace_s=1)
    [run] = s.runs
    assert run.stop_reason == "timeout"
    assert "forked" in (run.info.path / "app.log").read_text()
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(f"waap-{s.session_id}-forker-r1")


def test_app_over_its_memory_limit_stops_with_reason_oom(base_image, results):
    code = "x = []\nwhile True: x.append(bytearray(1 << 20))"
    s = session(results, base_image, Target(args=py(code), timeout_s=60), limits=Limits(memory_bytes=32 << 20))
    [run] = s.runs
    m = read_manifest(run.info.path)
    assert (run.stop_reason, m["oom_killed"], m["limits"]["memory_bytes"]) == ("oom", True, 32 << 20)
    assert m["signals_sent"] == []


def test_app_that_exits_at_once_keeps_its_output(base_image, results):
    s = session(results, base_image, Target(args=("sh", "-c", "echo early; exit 7")))
    [run] = s.runs
    assert (run.exit_code, (run.info.path / "app.log").read_text()) == (7, "early\n")


@pytest.mark.slow
def test_100_mb_of_logs_are_capped_without_losing_the_run(base_image, results):
    code = "import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(100 * 1024): sys.stdout.write(line)"
    s = session(results, base_image, Target(args=py(code), timeout_s=120), log_limit=8 << 20)
    [run] = s.runs
    m = read_manifest(run.info.path)
    assert (run.status, run.stop_reason, run.exit_code) == ("complete", "exited", 0)
    assert m["log"]["bytes"] == 8 << 20
    assert m["log"]["bytes"] + m["log"]["bytes_dropped"] == 100 << 20
    assert m["log"]["truncated"] is True
    log = run.info.path / "app.log"
    assert log.stat().st_size < (8 << 20) + 200
    assert "bytes dropped" in log.read_text()[-200:]


def test_targets_and_repeat_give_one_run_directory_each_under_a_session(base_image, results):
    s = session(results, base_image, Target(args=py("print(1)"), name="one"), Target(args=py("print(2)"), name="two"),
                repeat=2)
    names = [r.info.path.name for r in s.runs]
    assert names == ["one-r1", "one-r2", "two-r1", "two-r2"]
    assert all(r.info.path.parent == s.path for r in s.runs)
    session_file = json.loads((s.path / "session.json").read_text())
    assert session_file["finished"] is True
    assert [r["dir"] for r in session_file["runs"]] == names
    assert len({read_manifest(r.info.path)["run_id"] for r in s.runs}) == 4


def test_request_stop_interrupts_the_app_and_marks_the_run_partial(base_image, results):
    class StopAfterStart(Observer):
        def __init__(self) -> None:
            self.runner: Any = None

        def tick(self, run, elapsed_s):
            if elapsed_s > 0.5:
                self.runner.request_stop()

    observer = StopAfterStart()
    runner = Runner(connect(), output_root=results, observer=observer)
    observer.runner = runner
    s = runner.run_session(Profile(image=base_image, targets=(Target(args=py("import time; time.sleep(60)")),
                                                              Target(args=py("print('never')"))), grace_s=1))
    [run] = s.runs  # the second target never started
    assert (run.status, run.stop_reason) == ("partial", "interrupted")
    assert read_manifest(run.info.path)["status"] == "partial"
    assert not s.ok


def test_pull_progress_from_a_local_registry(docker_client, base_image, results, local_registry):
    ref = f"{local_registry}/waap-test/pulled:1"
    docker_client.images.get(base_image).tag(ref)
    for line in docker_client.images.push(ref, stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(ref)

    seen: List[PullProgress] = []

    class Watch(Observer):
        def pull_progress(self, progress):
            seen.append(progress)

    s = session(results, ref, Target(args=py("print('pulled')")), observer=Watch())
    [run] = s.runs
    m = read_manifest(run.info.path)
    assert s.image is not None and s.image.pulled
    assert m["app"]["image"] == ref and m["app"]["digest"].startswith(f"{local_registry}/waap-test/pulled@sha256:")
    assert seen and seen[-1].status.startswith("Status: Downloaded newer image")
    assert (run.info.path / "app.log").read_text() == "pulled\n"
    docker_client.images.remove(ref, force=True)


def test_each_run_gets_a_network_of_its_own_that_goes_with_it(docker_client, base_image, results):
    code = "import socket; print(socket.gethostbyname(socket.gethostname()))"
    s = session(results, base_image, Target(args=py(code), name="net"))
    [run] = s.runs
    name = f"waap-{s.session_id}-net-r1"
    assert (run.info.path / "app.log").read_text().strip()  # it had an address on its network
    assert not docker_client.networks.list(names=[name])  # removed with the container


def test_network_none_leaves_only_loopback(base_image, results):
    from profiler.profile import DockerOptions

    code = "import os; print(sorted(os.listdir('/sys/class/net')))"
    s = session(results, base_image, Target(args=py(code)), docker=DockerOptions(network="none"))
    [run] = s.runs
    assert (run.info.path / "app.log").read_text().strip() == "['lo']"
