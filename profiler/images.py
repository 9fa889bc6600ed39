"""Making sure the app image is on the engine: pull when missing (with progress), record its id and digest."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional

import docker
import requests
from docker.utils import parse_repository_tag

from .errors import DockerError, ImageError

__all__ = ["PULL_POLICIES", "ImageInfo", "PullProgress", "ensure_image"]

PULL_POLICIES = ("missing", "always", "never")


@dataclass
class PullProgress:
    """Aggregate state of one pull, over all its layers."""

    image: str
    status: str = ""
    layers: Dict[str, str] = field(default_factory=dict)  # layer id -> last status
    current: Dict[str, int] = field(default_factory=dict)
    total: Dict[str, int] = field(default_factory=dict)

    @property
    def bytes_done(self) -> int:
        return sum(self.current.values())

    @property
    def bytes_total(self) -> int:
        return sum(self.total.values())

    @property
    def layers_done(self) -> int:
        return sum(1 for s in self.layers.values() if s in ("Pull complete", "Already exists"))


@dataclass(frozen=True)
class ImageInfo:
    ref: str
    id: str
    digest: Optional[str]  # the registry digest, when the image came from a registry
    pulled: bool
    env: Mapping[str, str] = field(default_factory=dict)  # the image's own environment (Config.Env)


def ensure_image(
    client: docker.DockerClient,
    ref: str,
    *,
    policy: str = "missing",
    on_progress: Optional[Callable[[PullProgress], None]] = None,
) -> ImageInfo:
    """Return the image, pulling it first when the policy asks for it. Raises ``ImageError``."""
    if policy not in PULL_POLICIES:
        raise ValueError(f"pull policy must be one of {PULL_POLICIES}, not {policy!r}")
    image = None if policy == "always" else _local(client, ref)
    pulled = False
    if image is None:
        if policy == "never":
            raise ImageError(f"image {ref!r} is not on this machine and the pull policy is 'never'")
        _pull(client, ref, on_progress)
        pulled = True
        image = _local(client, ref)
        if image is None:
            raise ImageError(f"image {ref!r} was pulled but the engine does not list it")
    digests = image.attrs.get("RepoDigests") or []
    env = dict(e.split("=", 1) for e in (image.attrs.get("Config") or {}).get("Env") or [] if "=" in e)
    return ImageInfo(ref=ref, id=image.id, digest=digests[0] if digests else None, pulled=pulled, env=env)


def _local(client: docker.DockerClient, ref: str) -> Any:
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as e:
        raise DockerError(f"cannot inspect image {ref!r}: {e.explanation or e}") from e


def _pull(client: docker.DockerClient, ref: str, on_progress: Optional[Callable[[PullProgress], None]]) -> None:
    repo, tag = parse_repository_tag(ref)
    if tag is None and "@" not in ref:
        tag = "latest"
    progress = PullProgress(image=ref)
    try:
        for message in client.api.pull(repo, tag=tag, stream=True, decode=True):
            if "error" in message:
                raise ImageError(f"cannot pull image {ref!r}: {message['error']}")
            _account(progress, message)
            if on_progress is not None:
                on_progress(progress)
    except docker.errors.APIError as e:
        raise ImageError(f"image {ref!r} is not on this machine and pulling it failed: {e.explanation or e}") from e
    except requests.exceptions.RequestException as e:
        raise ImageError(f"pulling image {ref!r} failed: {e}") from e


def _account(progress: PullProgress, message: Dict[str, Any]) -> None:
    status = str(message.get("status", ""))
    layer = message.get("id")
    detail = message.get("progressDetail") or {}
    if layer and status and not status.startswith(("Pulling from", "Digest", "Status")):
        progress.layers[layer] = status
        if status == "Downloading" and detail.get("total"):
            progress.current[layer] = int(detail.get("current", 0))
            progress.total[layer] = int(detail["total"])
        elif status in ("Download complete", "Pull complete") and layer in progress.total:
            progress.current[layer] = progress.total[layer]
    progress.status = status
