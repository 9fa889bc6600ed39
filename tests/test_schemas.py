"""The run directory's JSON Schemas: valid schemas that accept what the real code writes and reject what it
must not write. Manifests are built through the runner's own methods without a Docker engine; one test marked
``docker`` checks a real session end to end."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests
from jsonschema import Draft202012Validator

import profiler
from profiler.app import STOP_REASONS, AppContainer, AppOutcome, AppSettings
from profiler.device import engine_facts, host_facts
from profiler.hostpath import PathMapper
from profiler.identity import LABEL, LABEL_RUN_DIR, RunnerIdentity
from profiler.images import ImageInfo
from profiler.measurement import RunMeasurement
from profiler.profile import Limits, Profile, Target
from profiler.reaper import _mark_run_dir
from profiler.rundir import EVENTS, MANIFEST, SCHEMA_VERSION, RunDir, read_jsonl, read_manifest
from profiler.runner import SESSION_FILE, RunInfo, Runner, RunResult, SessionResult

SCHEMA_DIR = Path(profiler.__file__).parent / "schemas"
SCHEMA_NAMES = ("manifest", "event", "session")
SESSION_ID = "20240501T120000Z-a1b2c3"
DROP = object()  # in a change to a document: remove that field


def _schema(name: str) -> Dict[str, Any]:
    with open(SCHEMA_DIR / f"{name}.schema.json", encoding="utf-8") as fh:
        data: Dict[str, Any] = json.load(fh)
    return data


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(_schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER)


def _errors(name: str, instance: Any) -> List[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in _validator(name).iter_errors(instance)
    ]


def _assert_valid(name: str, instance: Any) -> None:
    errors = _errors(name, instance)
    assert not errors, f"{name} schema rejects {instance!r}: {errors}"


def _assert_invalid(name: str, instance: Any) -> None:
    assert _errors(name, instance), f"{name} schema accepts {instance!r}"


def _changed(document: Dict[str, Any], change: Dict[str, Any]) -> Dict[str, Any]:
    changed = dict(document)
    for key, value in change.items():
        if value is DROP:
            del changed[key]
        else:
            changed[key] = value
    return changed


# -- building run directories through the real code, without Docker ------------------------------------------


class _FakeEngine:
    """Just enough of a DockerClient for ``engine_facts``."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def info(self) -> Dict[str, Any]:
        if self.fail:
            raise requests.exceptions.ConnectionError("engine gone")
        return {
            "CgroupVersion": "2",
            "CgroupDriver": "systemd",
            "Runtimes": {"runc": {}, "nvidia": {}},
            "DefaultRuntime": "runc",
        }

    def version(self) -> Dict[str, Any]:
        return {"Version": "24.0.7", "ApiVersion": "1.43"}


def _measurement(run_dir: RunDir, info: RunInfo) -> RunMeasurement:
    """The measurement of a run whose app never started sampling: its collectors are reported unavailable."""
    return RunMeasurement(("system",), run_id=info.run_id, run_dir=run_dir.path, output_dir=run_dir.output,
                          interval_s=1.0, params={}, on_event=run_dir.event)


def _runner() -> Runner:
    # Runner.__init__ only stores its arguments; the manifest and session writers need no engine
    runner: Runner = object.__new__(Runner)
    runner.path_mapper = PathMapper()
    runner.identity = RunnerIdentity.current()
    runner._stop_reason = None
    runner._lock = threading.Lock()
    return runner


def _profile(**overrides: Any) -> Profile:
    fields: Dict[str, Any] = {
        "image": "waggle/plugin-test:1.0.0",
        "targets": (
            Target(args=("-interval", "1", "--use-gpu"), timeout_s=120, name="gpu"),
            Target(args=("--use-cpu",), env={"MODE": "cpu"}),
        ),
        "metrics": ("system", "gpu-summary"),
        "repeat": 2,
        "env": {"COMMON": "1"},
        "limits": Limits(memory_bytes=512 * 1024 * 1024, cpus=1.5, pids=256),
        "source": "/profiles/sage.yaml",
    }
    fields.update(overrides)
    return Profile(**fields)


def _info(session_path: Path, profile: Profile, t_index: int = 1, rep: int = 1, name: str = "gpu-r1") -> RunInfo:
    return RunInfo(
        run_id=f"{SESSION_ID}.{name}",
        path=session_path / name,
        target=profile.targets[t_index - 1],
        target_index=t_index,
        repeat_index=rep,
        runs_total=len(profile.targets) * profile.repeat,
        run_number=(t_index - 1) * profile.repeat + rep,
    )


def _image(digest: Optional[str] = "waggle/plugin-test@sha256:" + "ab" * 32) -> ImageInfo:
    return ImageInfo(ref="waggle/plugin-test:1.0.0", id="sha256:" + "cd" * 32, digest=digest, pulled=False)


def _started(
    runner: Runner,
    profile: Profile,
    info: RunInfo,
    *,
    device: Optional[Dict[str, Any]] = None,
    image: Optional[ImageInfo] = None,
) -> RunDir:
    """A run directory started exactly as ``Runner._run_one`` starts it."""
    run_dir = RunDir(info.path)
    env = profile.target_env(info.target)
    env.update(WAAP_RUN_ID=info.run_id, WAAP_OUTPUT_DIR="/app/profiling_output")
    if device is None:
        device = {**host_facts(), "docker": engine_facts(_FakeEngine())}
    run_dir.start(runner._manifest(profile, info, image or _image(), device, env))
    run_dir.event("run_started", run_id=info.run_id)
    return run_dir


def _close(run_dir: RunDir) -> None:
    """Leave a run directory unfinished, as a runner that died would, without leaking its open event log."""
    run_dir._events.close()


def _outcome(
    reason: str = "exited", code: Optional[int] = 0, *, signals: Optional[List[str]] = None, dropped: int = 0
) -> AppOutcome:
    start = 1_714_564_800_123_456_789
    return AppOutcome(
        stop_reason=reason,
        exit_code=code,
        oom_killed=reason == "oom",
        signals_sent=signals or [],
        started_ns=start,
        ended_ns=start + 2_500_000_000,
        log_bytes=42,
        log_bytes_dropped=dropped,
    )


@pytest.fixture
def session_path(tmp_path: Path) -> Path:
    path = tmp_path / SESSION_ID
    path.mkdir()
    return path


# -- the schemas themselves ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schemas_are_valid_draft_2020_12(name: str) -> None:
    schema = _schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_schema_version_and_stop_reasons_follow_the_code() -> None:
    manifest = _schema("manifest")
    assert manifest["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert _schema("session")["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert manifest["properties"]["stop_reason"]["enum"] == [*STOP_REASONS, None]
    assert _schema("session")["properties"]["runs"]["items"]["properties"]["stop_reason"]["enum"] == list(STOP_REASONS)


def test_schemas_ship_as_package_data() -> None:
    setup_cfg = (Path(__file__).resolve().parents[1] / "setup.cfg").read_text(encoding="utf-8")
    assert "schemas/*.json" in setup_cfg
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(f"{n}.schema.json" for n in SCHEMA_NAMES)


# -- manifests as the runner writes them ---------------------------------------------------------------------


def test_initial_manifest_validates(session_path: Path) -> None:
    profile = _profile()
    info = _info(session_path, profile)
    _close(_started(_runner(), profile, info))
    manifest = read_manifest(info.path)
    assert manifest["finished"] is False
    assert manifest["status"] == "partial"
    assert manifest["stop_reason"] is None
    assert manifest["schema_version"] == SCHEMA_VERSION
    _assert_valid("manifest", manifest)


def test_initial_manifest_variants_validate(session_path: Path) -> None:
    """An unnamed target, no limits, no registry digest, engine facts that could not be read."""
    profile = _profile(limits=Limits(), repeat=1, env={})
    info = _info(session_path, profile, t_index=2, name="target2-r1")
    device = {**host_facts(), "docker": engine_facts(_FakeEngine(fail=True))}
    _close(_started(_runner(), profile, info, device=device, image=_image(digest=None)))
    manifest = read_manifest(info.path)
    assert manifest["target"]["name"] == ""
    assert "error" in manifest["device"]["docker"]
    _assert_valid("manifest", manifest)


@pytest.mark.parametrize(
    ("outcome", "error", "status", "reason"),
    [
        (_outcome(), None, "complete", "exited"),
        (_outcome("exited", 3), None, "complete", "exited"),
        (_outcome("timeout", 130, signals=["SIGINT"]), None, "complete", "timeout"),
        (_outcome("oom", 137), None, "complete", "oom"),
        (_outcome("killed", 137, dropped=10), None, "complete", "killed"),
        (_outcome("interrupted", 143, signals=["SIGINT", "SIGTERM"]), None, "partial", "interrupted"),
        (None, "cannot create the app container from 'x': no such image", "failed", "error"),
    ],
)
def test_final_manifest_validates(
    session_path: Path, outcome: Optional[AppOutcome], error: Optional[str], status: str, reason: str
) -> None:
    profile = _profile()
    info = _info(session_path, profile)
    runner = _runner()
    run_dir = _started(runner, profile, info)
    if error:
        run_dir.event("error", message=error)
    result = runner._finish(run_dir, info, outcome, error, _measurement(run_dir, info))
    assert (result.status, result.stop_reason) == (status, reason)
    manifest = read_manifest(info.path)
    assert manifest["finished"] is True
    assert (manifest["status"], manifest["stop_reason"]) == (status, reason)
    _assert_valid("manifest", manifest)
    if outcome is not None:
        assert manifest["log"]["truncated"] is (outcome.log_bytes_dropped > 0)
        assert manifest["started_at"].endswith("Z")


def test_abandoned_run_validates(session_path: Path) -> None:
    """A second Ctrl-C: the runner abandons the run, which ends partial / interrupted."""
    profile = _profile()
    info = _info(session_path, profile)
    runner = _runner()
    run_dir = _started(runner, profile, info)
    never_created = AppSettings(image="x", name="waap-test")
    app = AppContainer(None, never_created, on_event=run_dir.event)
    runner._abandon(app, run_dir, _measurement(run_dir, info))
    manifest = read_manifest(info.path)
    assert (manifest["status"], manifest["stop_reason"], manifest["finished"]) == (
        "partial",
        "interrupted",
        True,
    )
    _assert_valid("manifest", manifest)
    for line in read_jsonl(info.path / EVENTS):
        _assert_valid("event", line)


def test_reaped_run_validates(session_path: Path) -> None:
    """The runner died mid-run: its manifest says partial / unfinished until a later reaper closes it."""
    profile = _profile()
    info = _info(session_path, profile)
    run_dir = _started(_runner(), profile, info)
    run_dir.event("started", container_id="f" * 64)
    _close(run_dir)
    _assert_valid("manifest", read_manifest(info.path))

    _mark_run_dir(str(info.path), "its runner (pid 4242) is gone")
    manifest = read_manifest(info.path)
    assert (manifest["status"], manifest["stop_reason"], manifest["finished"]) == ("partial", "killed", True)
    assert isinstance(manifest["reaped_ns"], int)
    _assert_valid("manifest", manifest)
    events = read_jsonl(info.path / EVENTS)
    assert events[-1]["event"] == "reaped"
    for line in events:
        _assert_valid("event", line)


def test_reaped_event_survives_a_torn_last_line(session_path: Path) -> None:
    profile = _profile()
    info = _info(session_path, profile)
    _close(_started(_runner(), profile, info))
    with open(info.path / EVENTS, "a", encoding="utf-8") as fh:
        fh.write('{"ts_ns": 17145648')  # the runner was killed mid-write
    _mark_run_dir(str(info.path), "its runner (pid 4242) is gone")
    assert read_manifest(info.path)["stop_reason"] == "killed"
    assert read_jsonl(info.path / EVENTS)[-1]["event"] == "reaped"


# -- events --------------------------------------------------------------------------------------------------


def test_events_written_by_the_code_validate(session_path: Path) -> None:
    profile = _profile()
    info = _info(session_path, profile)
    runner = _runner()
    run_dir = _started(runner, profile, info)
    # the events AppContainer emits, with the fields it gives them
    run_dir.event("container_created", container_id="f" * 64, name=f"waap-{SESSION_ID}-gpu-r1")
    run_dir.event("started", container_id="f" * 64)
    run_dir.event("signal_sent", signal="SIGINT", reason="timeout")
    run_dir.event("warning", message="app log incomplete: connection reset")
    run_dir.event("exited", exit_code=None, oom_killed=False, stop_reason="timeout")
    run_dir.event("container_removed", container_id="f" * 64)
    run_dir.event("some_future_event", detail={"anything": [1, 2]})
    # the app tries to point later readers at the device's files
    os.symlink("/etc/passwd", run_dir.output / "planted")
    runner._finish(run_dir, info, _outcome("timeout", None, signals=["SIGINT"]), None, _measurement(run_dir, info))

    events = read_jsonl(info.path / EVENTS)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started"
    assert {"output_sanitized", "run_finished", "exited"} <= set(kinds)
    for line in events:
        _assert_valid("event", line)
    # and every raw line, not only those read_jsonl keeps
    raw = (info.path / EVENTS).read_text(encoding="utf-8").splitlines()
    assert len(raw) == len(events)


# -- session.json --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interrupted", [False, True])
def test_session_file_validates(session_path: Path, interrupted: bool) -> None:
    profile = _profile()
    runner = _runner()
    result = SessionResult(session_id=SESSION_ID, path=session_path, image=_image())
    runner._write_session(result, profile, finished=False)
    _assert_valid("session", json.loads((session_path / SESSION_FILE).read_text(encoding="utf-8")))

    info = _info(session_path, profile)
    run_dir = _started(runner, profile, info)
    result.runs.append(runner._finish(run_dir, info, _outcome(), None, _measurement(run_dir, info)))
    result.runs.append(
        RunResult(
            info=_info(session_path, profile, rep=2, name="gpu-r2"),
            status="failed",
            stop_reason="error",
            exit_code=None,
            duration_s=0.0,
            error="boom",
        )
    )
    if interrupted:
        runner.request_stop()
    runner._write_session(result, profile, finished=True)
    session = json.loads((session_path / SESSION_FILE).read_text(encoding="utf-8"))
    assert session["interrupted"] is interrupted
    assert session["runs_planned"] == 4
    assert [r["dir"] for r in session["runs"]] == ["gpu-r1", "gpu-r2"]
    _assert_valid("session", session)


# -- what the schemas must reject ----------------------------------------------------------------------------


@pytest.fixture
def final_manifest(session_path: Path) -> Dict[str, Any]:
    profile = _profile()
    info = _info(session_path, profile)
    runner = _runner()
    started = _started(runner, profile, info)
    runner._finish(started, info, _outcome(), None, _measurement(started, info))
    manifest = read_manifest(info.path)
    _assert_valid("manifest", manifest)
    return manifest


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"status": "ok"}, id="bad-status"),
        pytest.param({"status": None}, id="null-status"),
        pytest.param({"run_id": DROP}, id="missing-run-id"),
        pytest.param({"schema_version": DROP}, id="missing-schema-version"),
        pytest.param({"schema_version": 2}, id="other-schema-version"),
        pytest.param({"stop_reason": "crashed"}, id="unknown-stop-reason"),
        pytest.param({"stop_reason": None}, id="finished-without-stop-reason"),
        pytest.param({"error": DROP}, id="finished-without-error-field"),
        pytest.param({"start_ns": DROP}, id="complete-without-start"),
        pytest.param({"log": DROP}, id="complete-without-log"),
        pytest.param({"start_ns": "1714564800123456789"}, id="start-ns-as-string"),
        pytest.param({"finished": "yes"}, id="finished-not-boolean"),
        pytest.param({"exit_code": "0"}, id="exit-code-as-string"),
        pytest.param({"collectors": [{"name": "system", "status": "broken"}]}, id="bad-collector-status"),
        pytest.param({"app": {"image": "x"}}, id="incomplete-app"),
        pytest.param(
            {"started_at": "yesterday"},
            id="started-at-not-a-date",
            marks=pytest.mark.skipif(
                "date-time" not in Draft202012Validator.FORMAT_CHECKER.checkers,
                reason="jsonschema checks date-time only with rfc3339-validator installed",
            ),
        ),
    ],
)
def test_manifest_schema_rejects(final_manifest: Dict[str, Any], change: Dict[str, Any]) -> None:
    _assert_invalid("manifest", _changed(final_manifest, change))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"finished": True}, id="finished-but-no-stop-reason"),
        pytest.param({"stop_reason": "exited"}, id="unfinished-with-stop-reason"),
        pytest.param({"status": "complete"}, id="unfinished-but-complete"),
    ],
)
def test_manifest_schema_rejects_inconsistent_initial_form(session_path: Path, change: Dict[str, Any]) -> None:
    profile = _profile()
    info = _info(session_path, profile)
    _close(_started(_runner(), profile, info))
    manifest = read_manifest(info.path)
    _assert_valid("manifest", manifest)
    _assert_invalid("manifest", {**manifest, **change})


def test_manifest_schema_allows_unknown_top_level_fields(final_manifest: Dict[str, Any]) -> None:
    _assert_valid("manifest", {**final_manifest, "added_in_a_later_version": {"x": 1}})


@pytest.mark.parametrize(
    "line",
    [
        pytest.param({"ts_ns": "1714564800123456789", "event": "started", "container_id": "f"}, id="ts-ns-as-string"),
        pytest.param({"ts_ns": 1.5, "event": "warning", "message": "m"}, id="ts-ns-fractional"),
        pytest.param({"event": "started", "container_id": "f"}, id="missing-ts-ns"),
        pytest.param({"ts_ns": 1, "container_id": "f"}, id="missing-event"),
        pytest.param({"ts_ns": 1, "event": 7}, id="event-not-a-string"),
        pytest.param({"ts_ns": 1, "event": "exited", "exit_code": 0}, id="exited-without-stop-reason"),
        pytest.param({"ts_ns": 1, "event": "signal_sent", "signal": 2, "reason": "timeout"}, id="signal-as-number"),
        pytest.param(
            {"ts_ns": 1, "event": "run_finished", "status": "done", "stop_reason": "exited"},
            id="run-finished-bad-status",
        ),
        pytest.param([1, "started"], id="not-an-object"),
    ],
)
def test_event_schema_rejects(line: Any) -> None:
    _assert_invalid("event", line)


def test_event_schema_allows_unknown_events() -> None:
    _assert_valid("event", {"ts_ns": 1714564800123456789, "event": "collector_failed", "collector": "tegrastats"})


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"finished": "no"}, id="finished-not-boolean"),
        pytest.param(
            {"runs": [{"run_id": "r", "dir": "d", "status": "weird", "stop_reason": "exited"}]},
            id="bad-run-status",
        ),
        pytest.param(
            {"runs": [{"run_id": "r", "dir": "d", "status": "complete", "stop_reason": None}]},
            id="run-without-stop-reason",
        ),
        pytest.param({"schema_version": 2}, id="other-schema-version"),
        pytest.param({"runs_planned": "4"}, id="runs-planned-as-string"),
    ],
)
def test_session_schema_rejects(session_path: Path, change: Dict[str, Any]) -> None:
    result = SessionResult(session_id=SESSION_ID, path=session_path, image=None)
    _runner()._write_session(result, _profile(), finished=True)
    session = json.loads((session_path / SESSION_FILE).read_text(encoding="utf-8"))
    _assert_valid("session", session)
    _assert_invalid("session", {**session, **change})
    missing = dict(session)
    missing.pop("session_id")
    _assert_invalid("session", missing)


# -- a real session ------------------------------------------------------------------------------------------

TEST_IMAGES = ("waap-base:bookworm", "waap-test-base:latest")


@pytest.fixture
def engine_image(tmp_path: Path) -> Iterator[str]:
    """The first of TEST_IMAGES on the local engine (skips without an engine or an image); afterwards removes every
    WaAP container whose run directory is under tmp_path."""
    if os.environ.get("WAAP_SKIP_DOCKER") == "1":
        pytest.skip("WAAP_SKIP_DOCKER=1: Docker integration tests switched off")
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        pytest.skip(f"no Docker engine reachable: {e}")
    try:
        found = None
        for ref in TEST_IMAGES:
            try:
                client.images.get(ref)
            except docker.errors.ImageNotFound:
                continue
            found = ref
            break
        if found is None:
            pytest.skip(f"none of the test images {', '.join(TEST_IMAGES)} is built (scripts/build-images.sh)")
        yield found
        for container in client.containers.list(all=True, filters={"label": LABEL}):
            if container.labels.get(LABEL_RUN_DIR, "").startswith(str(tmp_path)):
                container.remove(force=True)
    finally:
        client.close()


@pytest.mark.docker
def test_real_session_validates(tmp_path: Path, engine_image: str) -> None:
    from profiler.engine import connect

    client = connect()
    try:
        runner = Runner(client, output_root=tmp_path / "results", pull_policy="never")
        profile = Profile(image=engine_image, targets=(Target(args=("python3", "-c", "print(1)"), name="t"),))
        session = runner.run_session(profile)
    finally:
        client.close()

    assert [r.status for r in session.runs] == ["complete"], session.runs
    session_doc = json.loads((session.path / SESSION_FILE).read_text(encoding="utf-8"))
    _assert_valid("session", session_doc)
    assert session_doc["finished"] is True
    run_path = session.path / "t-r1"
    assert [r["dir"] for r in session_doc["runs"]] == [run_path.name]

    assert (run_path / MANIFEST).is_file()
    manifest = read_manifest(run_path)
    _assert_valid("manifest", manifest)
    assert (manifest["status"], manifest["stop_reason"], manifest["exit_code"]) == ("complete", "exited", 0)
    assert manifest["app"]["image"] == engine_image

    raw_lines = (run_path / EVENTS).read_text(encoding="utf-8").splitlines()
    assert raw_lines
    kinds = []
    for raw in raw_lines:
        line = json.loads(raw)
        _assert_valid("event", line)
        kinds.append(line["event"])
    assert kinds[:3] == ["run_started", "container_created", "started"]
    assert {"exited", "container_removed", "run_finished"} <= set(kinds)
    assert (run_path / "app.log").read_text(encoding="utf-8") == "1\n"
