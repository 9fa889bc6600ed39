"""Translating the runner's paths into the Docker host's, for bind mounts into sibling containers.

When the runner itself runs in a container with the Docker socket bound in, the engine resolves bind-mount sources
on the host, not in the runner's file system. The runner's own mounts say where each of its folders lives on the host.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, List, Optional, Sequence, Tuple

import docker

from .errors import DockerError, HostPathError

__all__ = ["PathMapper", "detect_mapper", "own_container_id"]

_CONTAINER_ID = re.compile(r"/(?:docker/)?containers/([0-9a-f]{64})/")


class PathMapper:
    """Maps a path as the runner sees it to the same file as the Docker host sees it."""

    def __init__(self, mounts: Sequence[Tuple[str, str]] = (), *, container_id: Optional[str] = None) -> None:
        # (destination in the runner, source on the host), longest destination first so the most specific wins
        self.mounts: List[Tuple[str, str]] = sorted(mounts, key=lambda m: len(m[0]), reverse=True)
        self.container_id = container_id

    @property
    def in_container(self) -> bool:
        return self.container_id is not None

    def to_host(self, path: Path) -> str:
        local = PurePosixPath(os.path.abspath(path))
        if not self.in_container:
            return str(local)
        for destination, source in self.mounts:
            try:
                rel = local.relative_to(destination)
            except ValueError:
                continue
            return str(PurePosixPath(source) / rel)
        raise HostPathError(
            f"{local} is inside the runner's container and not on a mount, so the app container cannot see it; "
            "bind-mount the results folder into the runner (ideally at the same path, e.g. -v \"$PWD:$PWD\")"
        )


def own_container_id(mountinfo: Path = Path("/proc/self/mountinfo")) -> Optional[str]:
    """The id of the container this process runs in, or None on a host.

    The engine bind-mounts the container's hostname and resolv.conf from its own folder, which names the id;
    this works with cgroup v1 and v2 alike, unlike parsing /proc/self/cgroup.
    """
    try:
        text = mountinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if " /etc/hostname " in line or " /etc/resolv.conf " in line:
            match = _CONTAINER_ID.search(line)
            if match:
                return match.group(1)
    return None


def detect_mapper(client: docker.DockerClient, *, mountinfo: Path = Path("/proc/self/mountinfo")) -> PathMapper:
    container_id = own_container_id(mountinfo)
    if container_id is None:
        return PathMapper()
    try:
        attrs: Any = client.api.inspect_container(container_id)
    except docker.errors.NotFound:
        # another engine's container (e.g. the runner runs under a different daemon): no mapping is possible
        return PathMapper()
    except docker.errors.APIError as e:
        raise DockerError(f"cannot inspect the runner's own container {container_id[:12]}: {e}") from e
    mounts = [
        (m["Destination"], m["Source"])
        for m in attrs.get("Mounts", [])
        if m.get("Type") in ("bind", "volume") and m.get("Source") and m.get("Destination")
    ]
    return PathMapper(mounts, container_id=container_id)
