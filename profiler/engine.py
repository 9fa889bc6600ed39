"""Connecting to the Docker engine, with its failures translated into ``WaapError``s once, here."""

from __future__ import annotations

import os
from typing import Optional

import docker
import requests

from .errors import DockerUnavailable

__all__ = ["DEFAULT_API_TIMEOUT_S", "connect", "engine_address"]

DEFAULT_API_TIMEOUT_S = 60


def engine_address(base_url: Optional[str] = None) -> str:
    return base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(base_url: Optional[str] = None, *, timeout: int = DEFAULT_API_TIMEOUT_S) -> docker.DockerClient:
    """A client that has answered a ping. Raises ``DockerUnavailable`` with a fix hint otherwise."""
    address = engine_address(base_url)
    try:
        client = docker.DockerClient(base_url=address, timeout=timeout) if base_url else docker.from_env(
            timeout=timeout
        )
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as e:
        raise DockerUnavailable(
            f"cannot reach the Docker engine at {address} ({_short(e)}); "
            "start it (e.g. `dockerd &` or `systemctl start docker`) or set DOCKER_HOST"
        ) from e
    return client


def _short(error: BaseException) -> str:
    """The last, most specific clause of a nested requests/urllib3 error message."""
    text = str(error).strip() or type(error).__name__
    for marker in ("Caused by", "Error while fetching server API version:"):
        if marker in text:
            text = text.split(marker)[-1]
    return text.strip(" :()'\"")[:200]
