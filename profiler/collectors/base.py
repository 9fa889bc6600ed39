"""The collector interface: one small class per source of measurements, chosen by name in a profile's ``metrics``.

Two kinds share it. *Polled* collectors (host, container, tegrastats, NVML) answer ``sample()`` at every tick of the
sampler. *Pushing* collectors (the metrics socket, pywaggle's data file) produce samples on their own threads and
hand them to the ``SampleSink`` they were given in ``start``; their ``sample()`` returns None.

A sample is one JSON line of ``samples.jsonl``: ``{"ts_ns": int, "source": str, "values": {metric: number}}``,
optionally with ``"labels": {str: str}``. Metric names are dotted, lowercase, and carry their unit
(``container.memory.working_set_bytes``); docs/metrics.md is the catalog.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Tuple

__all__ = [
    "AppAdditions",
    "Collector",
    "CollectorStatus",
    "MetricInfo",
    "RunContext",
    "Sample",
    "SampleSink",
    "Unavailable",
]


class Unavailable(Exception):
    """Raised by ``Collector.start`` when the source cannot work here; the message says why (e.g. no tegrastats)."""


@dataclass(frozen=True)
class MetricInfo:
    """One row of the metric catalog (docs/metrics.md is generated from these).

    ``name`` may hold a ``<placeholder>`` for families (``system.cpu.core.<n>.percent``, ``app.<name>.total``).
    ``kind`` is ``gauge`` (a level) or ``counter`` (a running total: summaries add its rate per second).
    """

    name: str
    unit: str
    kind: str
    meaning: str


@dataclass(frozen=True)
class Sample:
    ts_ns: int
    source: str
    values: Mapping[str, float]
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        record: Dict[str, Any] = {"ts_ns": self.ts_ns, "source": self.source, "values": dict(self.values)}
        if self.labels:
            record["labels"] = dict(self.labels)
        return record


SampleSink = Callable[[Sample], None]


@dataclass
class AppAdditions:
    """What a collector needs in the app container, asked for before it is created: environment variables and
    folders of the run directory to mount (local path -> path in the app container, read-only or not)."""

    env: Dict[str, str] = field(default_factory=dict)
    mounts: Dict[Path, Tuple[str, bool]] = field(default_factory=dict)  # local path -> (app path, read_only)

    def merge(self, other: AppAdditions) -> None:
        self.env.update(other.env)
        self.mounts.update(other.mounts)


@dataclass(frozen=True)
class RunContext:
    """What a collector may know about the run it measures. Paths are as the runner sees them."""

    run_id: str
    container_id: str
    container_pid: int  # the app container's init process, in the runner's PID namespace (0 when not visible)
    run_dir: Path
    output_dir: Path  # the run's output folder, mounted at /app/profiling_output in the app container
    interval_s: float
    proc: Path = Path("/proc")
    sys_fs_cgroup: Path = Path("/sys/fs/cgroup")
    params: Mapping[str, Any] = field(default_factory=dict)  # knobs the app may ask for (custom metrics)
    # asks the engine whether the app has exited: a very short app can end before its container is measured
    app_ended: Callable[[], bool] = field(default=lambda: False)


@dataclass
class CollectorStatus:
    """How a collector fared, for the manifest: ok, unavailable (with why) or failed (with the error)."""

    name: str
    status: str = "ok"
    reason: str = ""
    counters: Dict[str, int] = field(default_factory=dict)  # e.g. rejected socket lines, restarts

    def to_json(self) -> Dict[str, Any]:
        record: Dict[str, Any] = {"name": self.name, "status": self.status}
        if self.reason:
            record["reason"] = self.reason
        if self.counters:
            record["counters"] = dict(self.counters)
        return record


class Collector(ABC):
    """One source of measurements. Subclasses set ``name`` and implement ``sample`` (polled) or push to the sink."""

    name: ClassVar[str]
    catalog: ClassVar[Tuple[MetricInfo, ...]] = ()  # every metric this collector may emit
    source_description: ClassVar[str] = ""  # where the numbers come from, for the catalog

    def __init__(self) -> None:
        self.status = CollectorStatus(self.name)

    def prepare(self, run_dir: Path, output_dir: Path, params: Mapping[str, Any]) -> AppAdditions:
        """Called before the app container is created: what it needs in that container (env, mounts)."""
        return AppAdditions()

    def start(self, ctx: RunContext, sink: SampleSink) -> None:
        """Called once the app container runs. Raise ``Unavailable`` when this source cannot work here."""
        return None  # most polled collectors need no preparation

    @abstractmethod
    def sample(self, ts_ns: int) -> Optional[Mapping[str, float]]:
        """The values at ``ts_ns`` (polled collectors), or None (pushing collectors, or nothing to report)."""

    def stop(self) -> None:
        """Called once after the app exited (a last ``sample`` has been taken); release threads and files."""
        return None

    @staticmethod
    def finite(values: Mapping[str, Optional[float]]) -> Dict[str, float]:
        """Only real numbers: NaN, infinities and missing values are dropped, never written as fake zeros."""
        return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
