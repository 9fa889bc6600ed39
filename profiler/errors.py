"""The exception tree. Everything WaAP raises on purpose derives from ``WaapError``.

WaapError
├── SpecError            a profile (YAML, CLI values) is invalid; names the file, line and field
├── DockerError          the Docker engine refused or failed an operation
│   ├── DockerUnavailable    no engine answers at the configured address
│   └── ImageError           an image is missing and could not be pulled
├── RunDirError          the run directory cannot be written or read
└── HostPathError        a path cannot be shared with a sibling container
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "DockerError",
    "DockerUnavailable",
    "HostPathError",
    "ImageError",
    "RunDirError",
    "SpecError",
    "WaapError",
    "where",
]


class WaapError(Exception):
    """Root of every error WaAP raises on purpose; its message is meant for the user."""


def where(source: str, line: Optional[int]) -> str:
    """``file:line`` (or ``line N``, or just ``file``) for messages that point into a user's or a tool's file."""
    if line is None:
        return source
    return f"{source}:{line}" if source else f"line {line}"


class SpecError(WaapError):
    """A profile value is invalid. ``source``, ``line`` and ``field`` say where."""

    def __init__(self, message: str, *, source: str = "", line: Optional[int] = None, field: str = "") -> None:
        self.reason = message
        self.source = source
        self.line = line
        self.field = field
        parts = [p for p in (where(source, line), field) if p]
        super().__init__(": ".join([*parts, message]))


class DockerError(WaapError):
    """The Docker engine failed an operation."""


class DockerUnavailable(DockerError):
    """No Docker engine answers."""


class ImageError(DockerError):
    """An image is not present and could not be pulled."""


class RunDirError(WaapError):
    """A run directory could not be written or read."""


class HostPathError(WaapError):
    """A local path has no equivalent on the Docker host (sibling-container setups)."""
