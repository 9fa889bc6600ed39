"""Collectors, by the names a profile's ``metrics`` uses. Each name maps to the class that implements it; a class is
imported only when a profile asks for it, so a missing optional dependency costs only that collector."""

from __future__ import annotations

import importlib
from typing import Dict, List, Tuple, Type

from .base import AppAdditions, Collector, CollectorStatus, MetricInfo, RunContext, Sample, SampleSink, Unavailable

__all__ = [
    "REGISTRY",
    "AppAdditions",
    "Collector",
    "CollectorStatus",
    "MetricInfo",
    "RunContext",
    "Sample",
    "SampleSink",
    "Unavailable",
    "catalog",
    "collector_class",
    "metric_names",
]

# name in a profile -> "module:Class"
REGISTRY: Dict[str, str] = {
    "system": "profiler.collectors.system:SystemCollector",
    "container": "profiler.collectors.container:ContainerCollector",
    "custom": "profiler.collectors.custom:CustomCollector",
    "gpu-summary": "profiler.collectors.gpu:GpuSummaryCollector",
}


def metric_names() -> Tuple[str, ...]:
    return tuple(REGISTRY)


def collector_class(name: str) -> Type[Collector]:
    """The class behind a metric name. Raises KeyError for unknown names (the spec rejects those earlier)."""
    module_name, class_name = REGISTRY[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Collector)):
        raise TypeError(f"{REGISTRY[name]} is not a Collector")
    return cls


def catalog() -> List[Tuple[str, MetricInfo]]:
    """(collector name, metric) for every metric every registered collector may emit."""
    return [(name, info) for name in REGISTRY for info in collector_class(name).catalog]
