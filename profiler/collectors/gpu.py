"""``gpu-summary``: GPU load, memory, power and temperature, from the best source the machine has: tegrastats on a
Jetson, NVML on a discrete NVIDIA GPU. The name picks a collector when the app starts and hands it every call."""

from __future__ import annotations

import importlib
from typing import Any, Callable, List, Mapping, Optional, Tuple, Type

from .base import Collector, MetricInfo, RunContext, SampleSink, Unavailable
from .nvml import NvmlCollector

__all__ = ["GpuSummaryCollector"]


def _tegrastats_class() -> Optional[Type[Collector]]:
    """The tegrastats collector, or None in a version without it (it is imported lazily so that gpu-summary
    keeps working, NVML only, while it is missing)."""
    try:
        module = importlib.import_module("profiler.collectors.tegrastats")
    except ImportError:
        return None
    cls = getattr(module, "TegrastatsCollector", None)
    return cls if isinstance(cls, type) and issubclass(cls, Collector) else None


def _catalog() -> Tuple[MetricInfo, ...]:
    tegrastats = _tegrastats_class()
    return NvmlCollector.catalog + (tegrastats.catalog if tegrastats is not None else ())


class GpuSummaryCollector(Collector):
    """Tries tegrastats (only a Jetson has it), then NVML; ``Unavailable`` with both reasons when neither works.
    Its catalog is the union of theirs: they are not registered under their own names, so each metric is declared
    once."""

    name = "gpu-summary"
    catalog = _catalog()
    source_description = (
        "tegrastats on Jetson boards (whose integrated GPU shares RAM with the CPU: the app's GPU memory is what its "
        "processes hold through nvmap, `jetson.app.nvmap_used_bytes`, where the profiler can read debugfs), "
        "otherwise NVML on discrete NVIDIA GPUs (`nvml.*`); the manifest names the one used"
    )

    def __init__(
        self,
        nvml: Any = None,
        candidates: Optional[List[Callable[[], Collector]]] = None,
    ) -> None:
        super().__init__()
        self._nvml = nvml
        self._candidates = candidates
        self.delegate: Optional[Collector] = None

    def _default_candidates(self) -> List[Callable[[], Collector]]:
        found: List[Callable[[], Collector]] = []
        tegrastats = _tegrastats_class()
        if tegrastats is not None:
            found.append(tegrastats)
        found.append(lambda: NvmlCollector(nvml=self._nvml))
        return found

    def start(self, ctx: RunContext, sink: SampleSink) -> None:
        reasons: List[str] = []
        candidates = self._candidates if self._candidates is not None else self._default_candidates()
        if _tegrastats_class() is None and self._candidates is None:
            reasons.append("tegrastats: no tegrastats collector in this version")
        for make in candidates:
            collector = make()
            try:
                collector.start(ctx, sink)
            except Unavailable as e:
                if collector.name == "tegrastats":
                    hint = "" if "jetson" in str(e).lower() else " (not a Jetson?)"
                    reasons.append(f"tegrastats{hint}: {e}")
                else:
                    reasons.append(f"{collector.name.upper()}: {e}")
                continue
            self.delegate = collector
            self._mirror()
            return
        raise Unavailable("; ".join(reasons) or "no GPU collector")

    def sample(self, ts_ns: int) -> Optional[Mapping[str, float]]:
        if self.delegate is None:
            return None
        try:
            return self.delegate.sample(ts_ns)
        finally:
            self._mirror()

    def stop(self) -> None:
        if self.delegate is not None:
            try:
                self.delegate.stop()
            finally:
                self._mirror()

    def _mirror(self) -> None:
        """The manifest records gpu-summary: show which collector it used and what that one had to say."""
        assert self.delegate is not None
        inner = self.delegate.status
        self.status.reason = f"using {self.delegate.name}" + (f": {inner.reason}" if inner.reason else "")
        self.status.counters = inner.counters
