"""``waap-submit`` end to end: ``python -m profiler.submit_cli`` as a subprocess against the fake Jenkins, with a
stand-in for the agent half that archives minimal run directories. Exit codes, output, and what reached Jenkins."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from profiler.pipeline.params import PARAMETERS
from profiler.store import ResultStore
from profiler.submit_cli import EXIT_CODES

from .conftest import REPO_ROOT
from .jenkins_fake import FIXTURE_CONFIG, BuildContext, FakeJenkins, config_xml, run_directory_executor

JOB = "nvidia-nx-profiling-pipeline"
IMAGE = "waggle/plugin-objectcounter:0.0.0"
ARGS = "-stream top_live -object car; $(id) '`x`'"
SUMMARY = {"metrics": {
    "system.cpu.percent": {"count": 3, "mean": 12.0, "p50": 11.0, "p95": 20.0, "max": 21.0, "last": 10.0,
                           "unit": "percent", "kind": "gauge"},
    "app.frames.total": {"count": 3, "last": 90, "rate_per_s": 30.0, "unit": "", "kind": "counter"},
}}


@pytest.fixture
def fake() -> Iterator[FakeJenkins]:
    with FakeJenkins(executor=run_directory_executor(summary=SUMMARY)) as server:
        server.add_job(JOB, config_xml((p.name, p.kind, p.default) for p in PARAMETERS))
        yield server


def env_for(fake: Optional[FakeJenkins], home: Path, *, token: Optional[str] = None) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JENKINS_", "WAAP_"))}
    env.update(HOME=str(home), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1", PYTHONPATH=str(REPO_ROOT))
    if fake is not None:
        env.update(JENKINS_URL=fake.url, JENKINS_USER="admin", JENKINS_TOKEN=token or fake.token())
    return env


def submit(fake: Optional[FakeJenkins], cwd: Path, *args: str, token: Optional[str] = None,
           timeout: float = 60) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run(
        [sys.executable, "-m", "profiler.submit_cli", "--poll", "0.2", *args], cwd=cwd,
        env=env_for(fake, cwd, token=token), capture_output=True, text=True, timeout=timeout,
    )


def received(fake: FakeJenkins) -> Dict[str, str]:
    (post,) = fake.requests_to("buildWithParameters", "POST")
    from urllib.parse import parse_qs

    return {k: v[-1] for k, v in parse_qs(post.body.decode(), keep_blank_values=True).items()}


def test_a_successful_profile(fake: FakeJenkins, tmp_path: Path) -> None:
    r = submit(fake, tmp_path, "--app-name", IMAGE, f"--app-args={ARGS}", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    assert f"Build #1 of {JOB}: SUCCESS" in r.stdout
    assert "20260101T000000Z-000001/default-r1  complete  exited       0" in r.stdout
    assert "system.cpu.percent" in r.stdout and "30/s" in r.stdout  # the key metrics, from summary.json
    dest = tmp_path / "results" / f"jenkins-{JOB}-1"
    assert (dest / "20260101T000000Z-000001" / "default-r1" / "manifest.json").is_file()
    assert f"Artifacts: 3 file(s) in results/jenkins-{JOB}-1" in r.stdout
    assert "build #1 started" in r.stderr and "build #1 ended: SUCCESS" in r.stderr
    # only what was given, in the body; Jenkins fills in the job's own defaults
    assert received(fake) == {"app_name": IMAGE, "app_args": ARGS, "timeout": "60"}
    assert fake.builds(JOB)[0].params["app_args"] == ARGS
    assert fake.builds(JOB)[0].params["metrics"] == next(p.default for p in PARAMETERS if p.name == "metrics")


def test_store_records_the_downloaded_runs(fake: FakeJenkins, tmp_path: Path) -> None:
    store = tmp_path / "results" / "waap.db"
    r = submit(fake, tmp_path, "--app-name", IMAGE, "--timeout", "60", "--store", str(store))
    assert r.returncode == 0, r.stderr
    assert f"Stored 1 run(s) in {store}" in r.stdout
    with ResultStore(store) as s:
        [run] = s.runs()
    assert (run["run_id"], run["image"], run["status"], run["stop_reason"]) == (
        "20260101T000000Z-000001-r1", IMAGE, "complete", "exited")
    # a store that cannot be written does not change the build's outcome
    (tmp_path / "blocker").write_text("a file where the store's folder would be")
    r = submit(fake, tmp_path, "--app-name", IMAGE, "--timeout", "60", "--output", str(tmp_path / "second"),
               "--store", str(tmp_path / "blocker" / "waap.db"))
    assert r.returncode == 0, r.stderr
    assert "waap-submit: not stored: cannot open the store" in r.stderr


@pytest.mark.parametrize(
    ("result", "status", "stop_reason", "exit_code", "code"),
    [("UNSTABLE", "complete", "timeout", None, 4), ("FAILURE", "failed", "error", None, 1),
     ("ABORTED", "partial", "killed", 137, 1)],
)
def test_exit_codes_follow_the_build_result(fake: FakeJenkins, tmp_path: Path, result: str, status: str,
                                            stop_reason: str, exit_code: Optional[int], code: int) -> None:
    fake.executor = run_directory_executor(result=result, status=status, stop_reason=stop_reason,
                                           exit_code=exit_code)
    r = submit(fake, tmp_path, "--app-name", IMAGE, "--output", str(tmp_path / "out"))
    assert r.returncode == code == EXIT_CODES[result], r.stderr
    assert f"Build #1 of {JOB}: {result}" in r.stdout
    assert f"default-r1  {status}" in r.stdout and stop_reason in r.stdout
    assert (tmp_path / "out" / "20260101T000000Z-000001" / "default-r1" / "app.log").is_file()


def test_a_cancelled_queue_item(fake: FakeJenkins, tmp_path: Path) -> None:
    fake.queue_states, fake.queue_outcome = ["buildable"], "cancel"
    r = submit(fake, tmp_path, "--app-name", IMAGE)
    assert r.returncode == 5, r.stderr
    assert "was cancelled before it started" in r.stderr
    assert "queued (buildable: Waiting for next available executor on ‘nx’)" in r.stderr


def test_no_wait_prints_the_queue_item(fake: FakeJenkins, tmp_path: Path) -> None:
    fake.queue_states = ["buildable"]
    r = submit(fake, tmp_path, "--app-name", IMAGE, "--no-wait")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{fake.url}queue/item/25/\n"
    assert fake.requests_to("/queue/item/") == []


def test_follow_streams_the_console(fake: FakeJenkins, tmp_path: Path) -> None:
    r = submit(fake, tmp_path, "--app-name", IMAGE, "--follow")
    assert r.returncode == 0, r.stderr
    assert "Started by user Lab Administrator\n[Pipeline] Start of Pipeline\n" in r.stdout
    assert f"+ waap agent  # {IMAGE}\n" in r.stdout and "Finished: SUCCESS\n" in r.stdout
    assert "\x1b" not in r.stdout and "\x1b" not in r.stderr


def test_a_64_kib_profile(fake: FakeJenkins, tmp_path: Path) -> None:
    text = "# a large profile\n" + ("# " + "padding " * 9 + "\n") * 880 + (
        f"image: {IMAGE}\ntargets:\n  - args: \"-interval 1 --label 'two words'\"\n    timeout: 30\n")
    assert len(text.encode()) > 64 * 1024
    (tmp_path / "profile.yaml").write_text(text)
    r = submit(fake, tmp_path, "--profile", "profile.yaml")
    assert r.returncode == 0, r.stderr
    assert fake.builds(JOB)[0].params["profile"] == text
    (post,) = fake.requests_to("buildWithParameters", "POST")
    assert len(post.path) < 100


def test_a_bad_token(fake: FakeJenkins, tmp_path: Path) -> None:
    token = "11badbadbadbadbadbadbadbadbadbad0"
    r = submit(fake, tmp_path, "--app-name", IMAGE, token=token)
    assert r.returncode == 3
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "refused the credentials of user 'admin' (HTTP 401)" in r.stderr
    assert token not in r.stdout and token not in r.stderr
    assert fake.requests_to("buildWithParameters") == []


def test_a_missing_job(fake: FakeJenkins, tmp_path: Path) -> None:
    r = submit(fake, tmp_path, "--app-name", IMAGE, "--job", "not-applied-yet")
    assert r.returncode == 3
    assert "`waap jenkins apply`" in r.stderr and "'not-applied-yet'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_job_from_an_older_template(fake: FakeJenkins, tmp_path: Path) -> None:
    fake.add_job("old", FIXTURE_CONFIG)  # only app_name, app_args, app_docker_args, profile
    r = submit(fake, tmp_path, "--app-name", IMAGE, "--metrics", "system", "--job", "old")
    assert r.returncode == 3
    assert "does not define the parameter(s) metrics" in r.stderr and "`waap jenkins apply`" in r.stderr
    assert fake.requests_to("buildWithParameters") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "foo=1"], "foo: unknown parameter (Jenkins would silently drop it)"),
        (["--param", "app_nme=x"], "did you mean 'app_name'?"),
        (["--param", "app_name"], "expected NAME=VALUE"),
        (["--timeout", "soon"], "timeout"),
        (["--interval", "-1"], "interval"),
        (["--app-args", "a\nb"], "single line"),
        (["--param", "app_name=other"], "given twice"),
        (["--store", "postgresql://db"], "--store: unsupported store postgresql://"),
        (["--profile", "missing.yaml"], "cannot read the profile"),
    ],
)
def test_invalid_input_is_refused_before_jenkins_is_contacted(fake: FakeJenkins, tmp_path: Path,
                                                              args: List[str], message: str) -> None:
    r = submit(fake, tmp_path, "--app-name", IMAGE, *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert fake.requests == []


def test_nothing_to_profile(fake: FakeJenkins, tmp_path: Path) -> None:
    r = submit(fake, tmp_path)
    assert r.returncode == 2 and "give --app-name IMG or --profile FILE" in r.stderr
    assert fake.requests == []


def test_an_output_folder_that_is_not_empty(fake: FakeJenkins, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("x")
    r = submit(fake, tmp_path, "--app-name", IMAGE, "--output", "out")
    assert r.returncode == 2 and "not an empty folder" in r.stderr
    assert fake.requests == []


def test_docker_args_are_checked_locally(fake: FakeJenkins, tmp_path: Path) -> None:
    pytest.importorskip("profiler.dockerargs")
    for refused in ("--privileged", "-v /srv/waap-data:/data:ro --privileged", "--device /dev/video0 --pid host"):
        r = submit(fake, tmp_path, "--app-name", IMAGE, f"--app-docker-args={refused}")
        assert r.returncode == 2 and refused.split()[-2 if "pid" in refused else -1] in r.stderr, r.stderr
    assert fake.requests == []
    r = submit(fake, tmp_path, "--app-name", IMAGE, "--app-docker-args=-e MODE=fast --memory 1g",
               "--output", "a")
    assert r.returncode == 0, r.stderr
    assert fake.builds(JOB)[0].params["app_docker_args"] == "-e MODE=fast --memory 1g"
    # a mount depends on the device's data roots: only a warning here, the device decides
    r = submit(fake, tmp_path, "--app-name", IMAGE, "--app-docker-args=-v /srv/waap-data:/data:ro", "--output", "b")
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "-v" in r.stderr
    assert fake.builds(JOB)[1].params["app_docker_args"] == "-v /srv/waap-data:/data:ro"


def test_no_settings(tmp_path: Path) -> None:
    r = submit(None, tmp_path, "--app-name", IMAGE)
    assert r.returncode == 3 and "no Jenkins settings" in r.stderr


def test_settings_from_a_private_file(fake: FakeJenkins, tmp_path: Path) -> None:
    config = tmp_path / "jenkins.ini"
    config.write_text(f"[jenkins]\nurl = {fake.url}\nuser = admin\ntoken = {fake.token()}\n")
    config.chmod(0o600)
    env = env_for(None, tmp_path)
    r = subprocess.run([sys.executable, "-m", "profiler.submit_cli", "--config", str(config), "--app-name", IMAGE,
                        "--poll", "0.2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert fake.token() not in r.stdout + r.stderr


def test_an_unreachable_jenkins(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = env_for(None, tmp_path)
    env.update(JENKINS_URL=f"http://127.0.0.1:{port}/", JENKINS_USER="admin", JENKINS_TOKEN="t0ken-unreachable")
    r = subprocess.run([sys.executable, "-m", "profiler.submit_cli", "--app-name", IMAGE], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3
    assert "cannot reach Jenkins" in r.stderr and "connection refused" in r.stderr
    assert "t0ken-unreachable" not in r.stderr


def test_wait_timeout(fake: FakeJenkins, tmp_path: Path) -> None:
    fake.executor = lambda ctx: "SUCCESS" if ctx.sleep(30) else "ABORTED"
    r = submit(fake, tmp_path, "--app-name", IMAGE, "--wait-timeout", "1")
    assert r.returncode == 5
    assert "gave up waiting" in r.stderr and f"{fake.url}job/{JOB}/1/" in r.stderr
    assert fake.builds(JOB)[0].building  # it goes on


def _wait_for(predicate: Any, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("abort", [False, True])
def test_ctrl_c_while_waiting(fake: FakeJenkins, tmp_path: Path, abort: bool) -> None:
    def execute(ctx: BuildContext) -> str:
        return "SUCCESS" if ctx.sleep(30) else "ABORTED"

    fake.executor = execute
    args = [sys.executable, "-m", "profiler.submit_cli", "--app-name", IMAGE, "--poll", "0.2"]
    if abort:
        args.append("--abort-on-interrupt")
    proc = subprocess.Popen(args, cwd=tmp_path, env=env_for(fake, tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: fake.builds(JOB) and fake.requests_to(f"/job/{JOB}/1/api/json"))
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    build = fake.builds(JOB)[0]
    if abort:
        assert "build #1 aborted" in err
        build.done.wait(10)
        assert build.result == "ABORTED" and build.stopped_by == "admin"
    else:
        assert f"the build goes on: {fake.url}job/{JOB}/1/" in err
        assert build.building and not build.stopped.is_set()
    assert "Traceback" not in err
