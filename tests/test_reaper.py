"""The reaper on the real engine: containers and networks of dead runners go, those of live runners stay."""

from __future__ import annotations

import contextlib

import docker
import pytest

from profiler.identity import LABEL_RUNNER_CONTAINER, RunnerIdentity, labels_for
from profiler.reaper import reap
from profiler.rundir import RunDir, read_jsonl, read_manifest

pytestmark = pytest.mark.docker


def _labels(run_dir: str, *, alive: bool, runner_container: str = "") -> dict:
    me = RunnerIdentity.current()
    runner = me if alive else RunnerIdentity(me.pidns, 2**22 + 1, 1)  # beyond pid_max: never a live process
    return labels_for(runner, run_id="s.t-r1", session_id="s", run_dir=run_dir, deadline_s=0,
                      runner_container=runner_container)


def test_reaper_removes_only_what_dead_runners_left(docker_client, base_image, tmp_path):
    dead_dir = RunDir(tmp_path / "dead")
    dead_dir.start({"run_id": "s.t-r1"})
    (dead_dir.output / "link").symlink_to("/etc/passwd")
    created = []
    try:
        dead = docker_client.containers.create(base_image, ["sleep", "60"],
                                               labels=_labels(str(dead_dir.path), alive=False))
        live = docker_client.containers.create(base_image, ["sleep", "60"],
                                               labels=_labels(str(tmp_path / "live"), alive=True))
        net_dead = docker_client.networks.create(f"waap-test-{tmp_path.name}-dead", labels=_labels("", alive=False))
        net_live = docker_client.networks.create(f"waap-test-{tmp_path.name}-live", labels=_labels("", alive=True))
        created += [dead, live, net_dead, net_live]
        reaped = {(r.kind, r.name) for r in reap(docker_client)}
        assert ("container", dead.name) in reaped and ("network", net_dead.name) in reaped
        assert ("container", live.name) not in reaped and ("network", net_live.name) not in reaped
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(dead.id)
        with pytest.raises(docker.errors.NotFound):
            docker_client.networks.get(net_dead.id)
        docker_client.containers.get(live.id)
        docker_client.networks.get(net_live.id)
        m = read_manifest(dead_dir.path)
        assert (m["status"], m["finished"], m["stop_reason"]) == ("partial", True, "killed")
        assert read_jsonl(dead_dir.path / "events.jsonl")[-1]["event"] == "reaped"
        assert not (dead_dir.output / "link").is_symlink()  # the untrusted output is sanitized on reaping too
    finally:
        for obj in created:
            with contextlib.suppress(docker.errors.NotFound):
                obj.remove(force=True) if hasattr(obj, "exec_run") else obj.remove()


def test_runner_in_a_container_is_judged_by_its_container(docker_client, base_image, tmp_path):
    runner = docker_client.containers.run(base_image, ["sleep", "60"], detach=True)
    created = [runner]
    try:
        app = docker_client.containers.create(base_image, ["sleep", "60"],
                                              labels=_labels(str(tmp_path), alive=True, runner_container=runner.id))
        created.append(app)
        assert app.labels[LABEL_RUNNER_CONTAINER] == runner.id
        assert not [r for r in reap(docker_client) if r.name == app.name]  # its runner's container still runs
        runner.remove(force=True)
        assert [r.why for r in reap(docker_client) if r.name == app.name] == [
            f"its runner's container {runner.id[:12]} is gone"
        ]
    finally:
        for c in created:
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)
