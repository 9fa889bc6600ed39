"""Removing what runs whose runner died left behind: their containers and networks, found by label.

A container is orphaned when its runner process is gone (checkable when the runner shared our PID namespace) or when
its deadline (timeout + grace + margin) has passed. The run directory, when reachable, gets a ``reaped`` event and a
final manifest marked partial, so a killed run never looks finished or vanishes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional

import docker
import requests

from .app import sanitize_output
from .errors import DockerError, RunDirError
from .identity import (
    LABEL,
    LABEL_RUN_DIR,
    LABEL_RUN_ID,
    LABEL_RUNNER,
    LABEL_RUNNER_CONTAINER,
    RunnerIdentity,
    deadline_of,
)
from .rundir import EVENTS, JsonlWriter, now_ns, read_manifest, write_json_atomic

__all__ = ["Reaped", "is_orphaned", "reap"]


@dataclass(frozen=True)
class Reaped:
    kind: str  # container or network
    name: str
    run_id: str
    why: str


ContainerRunning = Callable[[str], bool]


def is_orphaned(
    labels: Mapping[str, str],
    *,
    now: Optional[float] = None,
    proc: Path = Path("/proc"),
    container_running: Optional[ContainerRunning] = None,
) -> Optional[str]:
    """Why this labelled object is orphaned, or None when its runner may still be using it.

    A runner in a container of its own (another PID namespace) is judged by whether that container still runs."""
    runner_container = labels.get(LABEL_RUNNER_CONTAINER, "")
    if runner_container and container_running is not None:
        if not container_running(runner_container):
            return f"its runner's container {runner_container[:12]} is gone"
    else:
        runner = RunnerIdentity.parse(labels.get(LABEL_RUNNER, ""))
        if runner is not None and runner.is_alive(proc) is False:
            return f"its runner (pid {runner.pid}) is gone"
    deadline = deadline_of(labels)
    if deadline > 0 and (now if now is not None else time.time()) > deadline:
        return "its deadline has passed"
    return None


def reap(client: docker.DockerClient, *, proc: Path = Path("/proc")) -> List[Reaped]:
    reaped: List[Reaped] = []

    def running(container_id: str) -> bool:
        try:
            return bool(client.containers.get(container_id).status == "running")
        except docker.errors.NotFound:
            return False

    try:
        containers = client.containers.list(all=True, filters={"label": LABEL})
        for container in containers:
            labels = container.labels or {}
            why = is_orphaned(labels, proc=proc, container_running=running)
            if why is None:
                continue
            container.remove(force=True, v=True)
            run_id = labels.get(LABEL_RUN_ID, "")
            reaped.append(Reaped("container", container.name, run_id, why))
            _mark_run_dir(labels.get(LABEL_RUN_DIR, ""), why)
        for network in client.networks.list(filters={"label": LABEL}):
            labels = network.attrs.get("Labels") or {}
            why = is_orphaned(labels, proc=proc, container_running=running)
            if why is None:
                continue
            network.reload()
            for attached in (network.attrs.get("Containers") or {}):
                network.disconnect(attached, force=True)
            network.remove()
            reaped.append(Reaped("network", network.name, labels.get(LABEL_RUN_ID, ""), why))
    except docker.errors.NotFound:
        pass  # removed meanwhile by someone else
    except (docker.errors.APIError, requests.exceptions.RequestException) as e:
        raise DockerError(f"cleaning up after dead runs failed: {e}") from e
    return reaped


def _mark_run_dir(path_text: str, why: str) -> None:
    """Close the books of a run whose runner died: the samples stay, the manifest says partial."""
    if not path_text:
        return
    run_dir = Path(path_text)
    try:
        manifest: Any = read_manifest(run_dir)
    except RunDirError:
        return  # not visible from here (another runner container's file system) or already gone
    if manifest.get("finished"):
        return
    try:
        sanitize_output(run_dir / "output")
        events = JsonlWriter(run_dir / EVENTS)
        events.write({"ts_ns": now_ns(), "event": "reaped", "reason": why})
        events.close()
        manifest.update(status="partial", finished=True, stop_reason="killed", reaped_ns=now_ns(),
                        error=f"the runner died before the run ended ({why}); the container was removed later")
        write_json_atomic(run_dir / "manifest.json", manifest)
    except RunDirError:
        return
