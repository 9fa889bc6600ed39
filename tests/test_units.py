"""Unit tests of the pieces around the engine, on recorded data: no Docker needed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from profiler.errors import HostPathError, RunDirError, SpecError
from profiler.hostpath import PathMapper, own_container_id
from profiler.identity import LABEL_DEADLINE, LABEL_RUNNER, RunnerIdentity
from profiler.images import PullProgress, _account
from profiler.reaper import is_orphaned
from profiler.rundir import RunDir, read_jsonl, read_manifest

DATA = Path(__file__).parent / "data"


# -- host paths for sibling containers -------------------------------------------------------------------------
def test_container_id_is_read_from_the_recorded_mountinfo_of_a_container():
    cid = own_container_id(DATA / "proc" / "mountinfo-in-container.txt")
    assert cid is not None and len(cid) == 64 and int(cid, 16) >= 0


def test_on_a_host_there_is_no_container_id():
    assert own_container_id(DATA / "proc" / "mountinfo-host.txt") is None
    assert own_container_id(DATA / "no-such-file") is None


def test_path_mapper_translates_through_the_most_specific_mount():
    mapper = PathMapper([("/work", "/srv/jenkins/ws"), ("/work/results", "/data/results")], container_id="c" * 64)
    assert mapper.to_host(Path("/work/results/s1/run/output")) == "/data/results/s1/run/output"
    assert mapper.to_host(Path("/work/x")) == "/srv/jenkins/ws/x"
    assert mapper.to_host(Path("/work")) == "/srv/jenkins/ws"


def test_path_mapper_refuses_paths_only_the_runner_container_can_see():
    mapper = PathMapper([("/work", "/srv/ws")], container_id="c" * 64)
    with pytest.raises(HostPathError, match="bind-mount the results folder"):
        mapper.to_host(Path("/tmp/results"))
    with pytest.raises(HostPathError):
        mapper.to_host(Path("/workshop/x"))  # a prefix of the string is not a parent folder


def test_path_mapper_on_a_host_is_the_identity():
    assert PathMapper().to_host(Path("/tmp/a/../b")) == "/tmp/b"


# -- runner identity and orphans ---------------------------------------------------------------------------------
def _fake_proc(tmp_path: Path, pid: int, start: int, comm: str = "waap (x) y") -> Path:
    proc = tmp_path / "proc"
    (proc / "self" / "ns").mkdir(parents=True)
    os.symlink("/proc/self/ns/pid", proc / "self" / "ns" / "pid")  # same namespace as this test process
    (proc / str(pid)).mkdir()
    fields = ["S"] + ["0"] * 18 + [str(start)] + ["0"] * 10
    (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + "\n")
    return proc


def test_runner_identity_tells_a_live_runner_from_a_reused_pid(tmp_path):
    proc = _fake_proc(tmp_path, 4242, 777)
    me = RunnerIdentity.current()
    assert RunnerIdentity(me.pidns, 4242, 777).is_alive(proc) is True
    assert RunnerIdentity(me.pidns, 4242, 778).is_alive(proc) is False  # same pid, another process
    assert RunnerIdentity(me.pidns, 4343, 777).is_alive(proc) is False
    assert RunnerIdentity(me.pidns + 1, 4242, 777).is_alive(proc) is None  # another namespace: unknowable


def test_orphan_rules(tmp_path):
    proc = _fake_proc(tmp_path, 10, 5)
    me = RunnerIdentity.current()
    alive = RunnerIdentity(me.pidns, 10, 5).label()
    dead = RunnerIdentity(me.pidns, 11, 5).label()
    foreign = RunnerIdentity(me.pidns + 1, 10, 5).label()
    assert is_orphaned({LABEL_RUNNER: alive, LABEL_DEADLINE: "0"}, proc=proc) is None
    assert "gone" in (is_orphaned({LABEL_RUNNER: dead}, proc=proc) or "")
    assert is_orphaned({LABEL_RUNNER: foreign, LABEL_DEADLINE: "0"}, proc=proc) is None
    assert is_orphaned({LABEL_RUNNER: foreign, LABEL_DEADLINE: "100"}, now=50, proc=proc) is None
    assert "deadline" in (is_orphaned({LABEL_RUNNER: foreign, LABEL_DEADLINE: "100"}, now=101, proc=proc) or "")
    assert RunnerIdentity.parse("garbage") is None


# -- pull progress -----------------------------------------------------------------------------------------------
def test_pull_progress_aggregates_layers():
    # messages as the engine streams them for `POST /images/create` (abridged from a real pull)
    messages = [
        {"status": "Pulling from waap-test/pulled", "id": "1"},
        {"status": "Pulling fs layer", "id": "a1"},
        {"status": "Pulling fs layer", "id": "b2"},
        {"status": "Downloading", "id": "a1", "progressDetail": {"current": 100, "total": 400}},
        {"status": "Downloading", "id": "b2", "progressDetail": {"current": 50, "total": 100}},
        {"status": "Download complete", "id": "b2", "progressDetail": {}},
        {"status": "Pull complete", "id": "b2", "progressDetail": {}},
        {"status": "Digest: sha256:abc"},
    ]
    p = PullProgress(image="x")
    for m in messages:
        _account(p, m)
    assert (p.bytes_done, p.bytes_total, p.layers_done, len(p.layers)) == (200, 500, 1, 2)
    assert p.status == "Digest: sha256:abc"


# -- run directory -----------------------------------------------------------------------------------------------
def test_manifest_is_partial_until_finished_and_replaced_atomically(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.start({"run_id": "r1"})
    first = read_manifest(rd.path)
    assert (first["status"], first["finished"], first["schema_version"]) == ("partial", False, 1)
    rd.event("started", container_id="c")
    final = rd.finish("complete", stop_reason="exited", exit_code=0)
    assert read_manifest(rd.path) == final
    assert final["finished"] is True
    assert [p.name for p in rd.path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    with pytest.raises(ValueError):
        rd.finish("great")


def test_torn_last_line_is_dropped(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"event": "a"}\nnot json\n[1]\n{"event": "b"}\n{"event": "to')
    assert [e["event"] for e in read_jsonl(path)] == ["a", "b"]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_run_dir_errors_are_waap_errors(tmp_path):
    RunDir(tmp_path / "run")
    with pytest.raises(RunDirError, match="already exists"):
        RunDir(tmp_path / "run")
    with pytest.raises(RunDirError, match="not a run directory"):
        read_manifest(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("[1, 2]")
    with pytest.raises(RunDirError, match="JSON object"):
        read_manifest(tmp_path / "bad")


def test_spec_error_names_where():
    e = SpecError("expected a number", source="p.yaml", line=3, field="targets[0].timeout")
    assert str(e) == "p.yaml:3: targets[0].timeout: expected a number"
    assert json.dumps({"e": str(SpecError("x"))})


# -- the app's environment with the collectors' additions --------------------------------------------------------
def test_search_paths_are_prepended_to_the_apps_own_and_other_additions_win():
    from profiler.measurement import app_env

    additions = {"PYTHONPATH": "/run/waap", "WAAP_METRICS_SOCKET": "/run/waap/metrics.sock", "TZ": "UTC"}
    assert app_env({"TZ": "Europe/Paris", "A": "1"}, {"PYTHONPATH": "/app/lib"}, additions) == {
        "TZ": "UTC", "A": "1", "PYTHONPATH": "/run/waap:/app/lib", "WAAP_METRICS_SOCKET": "/run/waap/metrics.sock"}
    assert app_env({"PYTHONPATH": "/mine"}, {"PYTHONPATH": "/image"}, additions)["PYTHONPATH"] == "/run/waap:/mine"
    assert app_env({}, {}, additions)["PYTHONPATH"] == "/run/waap"
