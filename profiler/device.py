"""Facts about the machine a run happens on, for the manifest: OS, CPU, memory, board, Docker engine."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any, Dict, Optional

import docker
import requests

__all__ = ["device_facts", "engine_facts", "host_facts"]


def host_facts(root: Path = Path("/")) -> Dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "arch": platform.machine(),
        "kernel": platform.release(),
        "os": _os_release(root),
        "cpus": os.cpu_count(),
        "memory_bytes": _mem_total(root),
        "board": _board(root),
    }


def engine_facts(client: docker.DockerClient) -> Dict[str, Any]:
    try:
        info = client.info()
        version = client.version()
    except (docker.errors.APIError, requests.exceptions.RequestException) as e:
        return {"error": str(e)}
    return {
        "version": version.get("Version"),
        "api_version": version.get("ApiVersion"),
        "cgroup_version": info.get("CgroupVersion"),
        "cgroup_driver": info.get("CgroupDriver"),
        "runtimes": sorted((info.get("Runtimes") or {}).keys()),
        "default_runtime": info.get("DefaultRuntime"),
    }


def device_facts(client: docker.DockerClient, root: Path = Path("/")) -> Dict[str, Any]:
    facts = host_facts(root)
    facts["docker"] = engine_facts(client)
    return facts


def _os_release(root: Path) -> Optional[str]:
    for name in ("etc/os-release", "usr/lib/os-release"):
        try:
            for line in (root / name).read_text().splitlines():
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
        except OSError:
            continue
    return None


def _mem_total(root: Path) -> Optional[int]:
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _board(root: Path) -> Optional[str]:
    """The board model on ARM devices (e.g. 'NVIDIA Jetson Xavier NX Developer Kit'), from the device tree."""
    try:
        return (root / "proc/device-tree/model").read_text().rstrip("\x00\n") or None
    except OSError:
        return None
