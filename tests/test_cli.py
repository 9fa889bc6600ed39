"""``waap`` as a user runs it: a subprocess on the real engine, with its exit codes, messages and faults."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import docker
import pytest

from profiler import __version__
from profiler.identity import LABEL, LABEL_RUN_DIR
from profiler.rundir import read_jsonl, read_manifest

from .conftest import REPO_ROOT

WAAP = [sys.executable, "-m", "profiler.cli"]


def waap(*args: str, timeout: float = 120, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run([*WAAP, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def run_dirs(results: Path) -> List[Path]:
    return sorted(p.parent for p in results.glob("*/*/manifest.json"))


def wait_for(predicate, timeout: float = 30, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_version_and_help():
    assert waap("--version").stdout.strip() == f"waap {__version__}"
    out = waap("--help").stdout
    assert "run" in out and "doctor" in out
    assert "--timeout" in waap("run", "--help").stdout


def test_docker_unreachable_is_one_clear_line(tmp_path):
    p = waap("--docker-host", f"unix://{tmp_path}/none.sock", "run", "--image", "x", "--args", "y")
    assert p.returncode == 3
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert "cannot reach the Docker engine" in p.stderr and "start it" in p.stderr


def test_bad_profile_is_rejected_before_docker_is_touched(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("image: x\ntargets:\n  - {args: 'a', timeout: abc}\n")
    p = waap("--docker-host", f"unix://{tmp_path}/none.sock", "run", "--profile", str(bad))
    assert p.returncode == 2
    assert f"{bad}:3" in p.stderr and "timeout" in p.stderr and "Traceback" not in p.stderr
    p = waap("run", "--image", "x", "--args", "--name 'unbalanced")
    assert p.returncode == 2 and "unbalanced quotes" in p.stderr


@pytest.mark.docker
def test_nonexistent_image_fails_clearly(docker_client, results, local_registry):
    p = waap("run", "--image", f"{local_registry}/waap-test/no-such-image:1", "--args", "x", "-o", str(results))
    assert p.returncode == 1
    assert "no-such-image" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    [session] = [json.loads(f.read_text()) for f in results.glob("*/session.json")]
    assert session["finished"] is True and session["runs"] == [] and "no-such-image" in session["error"]


@pytest.mark.docker
def test_run_from_command_line_prints_a_summary(base_image, results):
    p = waap("run", "--image", base_image, "--args", "python3 -c 'print(42)'", "--timeout", "30", "-o", str(results))
    assert p.returncode == 0, p.stderr
    [run] = run_dirs(results)
    assert (run / "app.log").read_text() == "42\n"
    assert "complete" in p.stdout and "exited" in p.stdout
    assert f"Results: {run.parent}" in p.stdout


@pytest.mark.docker
def test_failing_app_is_not_a_failing_profile(base_image, results):
    p = waap("run", "--image", base_image, "--args", "sh -c 'exit 5'", "-o", str(results))
    assert p.returncode == 0, p.stderr
    [run] = run_dirs(results)
    assert read_manifest(run)["exit_code"] == 5


@pytest.mark.docker
def test_runner_killed_mid_run_leaves_a_partial_run_that_the_next_reaper_closes(docker_client, base_image, results):
    proc = subprocess.Popen([*WAAP, "run", "--image", base_image, "--args", "sleep 300", "-o", str(results)],
                            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run = wait_for(lambda: next(iter(run_dirs(results)), None), what="the run directory")
        wait_for(lambda: "started" in [e["event"] for e in read_jsonl(run / "events.jsonl")], what="app start")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    m = read_manifest(run)  # still readable, and honest about not being finished
    assert (m["status"], m["finished"]) == ("partial", False)
    [leftover] = [c for c in docker_client.containers.list(all=True, filters={"label": LABEL})
                  if c.labels.get(LABEL_RUN_DIR) == str(run.resolve())]
    assert leftover.status == "running"

    p = waap("run", "--image", base_image, "--args", "true", "-o", str(results))
    assert p.returncode == 0, p.stderr
    assert f"cleaned up container {leftover.name}" in p.stdout
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(leftover.id)
    m = read_manifest(run)
    assert (m["status"], m["finished"], m["stop_reason"]) == ("partial", True, "killed")
    assert read_jsonl(run / "events.jsonl")[-1]["event"] == "reaped"


@pytest.mark.docker
def test_ctrl_c_stops_the_app_and_marks_the_run_partial(base_image, results):
    code = (
        "import time\ntry:\n    print(\"ready\", flush=True)\n    time.sleep(300)\n"
        "except KeyboardInterrupt:\n    print(\"app got SIGINT\", flush=True)"
    )
    proc = subprocess.Popen([*WAAP, "run", "--image", base_image, "--args", f"python3 -c '{code}'", "-o", str(results)],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = wait_for(lambda: next(iter(run_dirs(results)), None), what="the run directory")
    wait_for(lambda: (run / "app.log").exists() and "ready" in (run / "app.log").read_text(), what="app ready")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    m = read_manifest(run)
    assert (m["status"], m["stop_reason"], m["finished"]) == ("partial", "interrupted", True)
    assert "app got SIGINT" in (run / "app.log").read_text()
    assert "stopping the app" in out


@pytest.mark.docker
@pytest.mark.parametrize("inside", ["same-path", "other-path"])
def test_runner_inside_a_container_with_the_docker_socket(docker_client, profiler_image, base_image, tmp_path, inside):
    """The sibling-container path: the runner's folders must be translated to the host's for the app's mounts."""
    results = tmp_path / "results"
    results.mkdir()
    mount_at = str(results) if inside == "same-path" else "/work/results"
    code = "open('/app/profiling_output/hello.txt', 'w').write('from the app')"
    logs = docker_client.containers.run(
        profiler_image,
        ["run", "--image", base_image, "--args", f"python3 -c \"{code}\"", "--timeout", "60", "-o", mount_at],
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock"}, str(results): {"bind": mount_at}},
        remove=True, stdout=True, stderr=True,
    ).decode()
    [run] = run_dirs(results)
    assert (run / "output" / "hello.txt").read_text() == "from the app", logs
    m = read_manifest(run)
    assert (m["status"], m["stop_reason"], m["runner"]["in_container"]) == ("complete", "exited", True)


@pytest.mark.docker
def test_doctor_reports_docker_and_hints(docker_client):
    p = waap("doctor")
    assert p.returncode == 0
    assert "[ok ] docker" in p.stdout
    assert "tegrastats" in p.stdout and "fix:" in p.stdout
    names = {m.group(1) for m in re.finditer(r"^\[(?:ok |ERR| - )\] (\S+)", p.stdout, re.M)}
    assert names == {"docker", "cgroups", "tegrastats", "nvml", "tau", "nvprof", "nsys"}


def test_doctor_without_docker_fails(tmp_path):
    p = waap("--docker-host", f"unix://{tmp_path}/none.sock", "doctor")
    assert p.returncode == 1
    assert "[ERR] docker" in p.stdout
