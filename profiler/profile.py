"""The validated profile: what to run and how to measure it. Built by ``profiler.spec`` from YAML or CLI values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from .collectors import metric_names

__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_INTERVAL_S",
    "DEFAULT_METRICS",
    "KNOWN_METRICS",
    "DockerOptions",
    "Limits",
    "ParamValue",
    "Profile",
    "Target",
]

# a knob's value, as the app receives it over the metrics socket (``plugin.param("res").get()``)
ParamValue = Union[str, int, float, bool]

DEFAULT_INTERVAL_S = 1.0
DEFAULT_GRACE_S = 10.0

# Metric collectors a profile may name: the registry's names (the seed's "system" and "gpu-summary" among them).
KNOWN_METRICS: Tuple[str, ...] = metric_names()
# what a profile without ``metrics`` measures: the host, the app's container and what the app reports itself
# (gpu-summary only when asked for: most machines a newcomer starts on have no GPU to report)
DEFAULT_METRICS: Tuple[str, ...] = ("system", "container", "custom")


@dataclass(frozen=True)
class Limits:
    """Resource limits applied to the app container (None = the engine's default, i.e. unlimited)."""

    memory_bytes: Optional[int] = None
    cpus: Optional[float] = None
    pids: Optional[int] = None


@dataclass(frozen=True)
class DockerOptions:
    """The few container options a user may give (``app_docker_args``), after the allow-list let them through.

    Everything else a ``docker run`` could do is refused at the edge (``profiler.dockerargs``): the runner holds the
    Docker socket, so an option that escaped would be root on the device."""

    env: Mapping[str, str] = field(default_factory=dict)
    data_mounts: Tuple[Tuple[str, str], ...] = ()  # (host path, path in the app container), always read-only
    runtime: Optional[str] = None  # "nvidia" when allowed
    network: str = "run"  # "run": a network of the run's own; "none": no network
    devices: Tuple[str, ...] = ()  # host device paths, only those the agent's policy lists


@dataclass(frozen=True)
class Target:
    """One way to run the app: its arguments (an argv list, never a shell string), timeout and environment."""

    args: Tuple[str, ...] = ()
    timeout_s: float = 0.0  # 0 = no timeout: the app ends by itself
    env: Mapping[str, str] = field(default_factory=dict)
    name: str = ""
    params: Mapping[str, ParamValue] = field(default_factory=dict)  # knobs; the profile's, overridden


@dataclass(frozen=True)
class Profile:
    """A complete, validated profiling request."""

    image: str
    targets: Tuple[Target, ...]
    metrics: Tuple[str, ...] = DEFAULT_METRICS
    interval_s: float = DEFAULT_INTERVAL_S
    repeat: int = 1
    env: Mapping[str, str] = field(default_factory=dict)  # common to every target; a target's env wins
    grace_s: float = DEFAULT_GRACE_S  # after SIGINT, before SIGTERM
    limits: Limits = field(default_factory=Limits)
    source: str = "<command line>"  # where the profile came from, for messages and the manifest
    params: Mapping[str, ParamValue] = field(default_factory=dict)  # knobs common to every target
    required: Tuple[str, ...] = ()  # collectors whose failure fails the run (others are recorded and skipped)
    docker: DockerOptions = field(default_factory=DockerOptions)
    # profiling tools (profiler.tools.wrap): each target runs under each of them in turn, one tool per run
    tools: Tuple[str, ...] = ()

    @property
    def tool_passes(self) -> Tuple[Optional[str], ...]:
        """The tool of each run of a target within one repetition: every listed tool in turn, or no tool."""
        return tuple(self.tools) if self.tools else (None,)

    @property
    def runs_per_target(self) -> int:
        return self.repeat * len(self.tool_passes)

    def target_env(self, target: Target) -> dict[str, str]:
        """The environment a target runs with: the profile's, overridden by the target's."""
        merged = dict(self.env)
        merged.update(target.env)
        return merged

    def target_params(self, target: Target) -> Dict[str, Any]:
        """The knobs a target runs with: the profile's, overridden by the target's."""
        merged: Dict[str, Any] = dict(self.params)
        merged.update(target.params)
        return merged
