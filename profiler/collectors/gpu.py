"""``gpu-summary``: GPU load, memory, power and temperature. On a Jetson that is tegrastats, on a discrete GPU NVML;
neither collector exists in this version yet, so the name is accepted and reported unavailable, never faked."""

from __future__ import annotations

from typing import Mapping, Optional

from .base import Collector, RunContext, SampleSink, Unavailable

__all__ = ["GpuSummaryCollector"]


class GpuSummaryCollector(Collector):
    name = "gpu-summary"
    source_description = "tegrastats on Jetson boards, NVML on discrete NVIDIA GPUs (not implemented yet)"

    def start(self, ctx: RunContext, sink: SampleSink) -> None:
        raise Unavailable("GPU collectors (tegrastats for Jetson, NVML for discrete GPUs) are not in this version yet")

    def sample(self, ts_ns: int) -> Optional[Mapping[str, float]]:
        return None
