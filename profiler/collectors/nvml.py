"""``nvml``: discrete NVIDIA GPUs through NVML (nvidia-ml-py, the ``[gpu]`` extra): per GPU load, memory, power,
temperature and clocks, and the GPU memory of the app container's own processes.

Each field degrades alone (as gpustat does): an NVML call that fails for one field of one GPU (``NOT_SUPPORTED`` on
a GeForce card, on Jetson's integrated GPU, …) drops that field for the rest of the run and is reported once in the
collector's status; the other fields go on. The NVML module is injected (``nvml=``) so tests drive a faithful fake.

App memory: NVML lists the processes using each GPU by host PID. A PID belongs to the app when its
``/proc/<pid>/cgroup`` names the app container; a runner that cannot see host PIDs (its own PID namespace, no
``--pid host``) cannot tell, and says so once instead of guessing.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from .apppids import AppProcesses
from .base import Collector, MetricInfo, RunContext, SampleSink, Unavailable

__all__ = ["CATALOG", "NvmlCollector"]

_APP_MEMORY = "nvml.app.memory_used_bytes"

CATALOG: Tuple[MetricInfo, ...] = (
    MetricInfo(
        "nvml.gpu.<i>.utilization_percent",
        "percent",
        "gauge",
        "share of the last sample period (1/6 s to 1 s, by product) in which a kernel ran on GPU i "
        "(nvmlDeviceGetUtilizationRates .gpu); 100 does not mean every SM was busy",
    ),
    MetricInfo(
        "nvml.gpu.<i>.memory_utilization_percent",
        "percent",
        "gauge",
        "share of the last sample period in which GPU i's memory was read or written (.memory)",
    ),
    MetricInfo(
        "nvml.gpu.<i>.memory_used_bytes",
        "bytes",
        "gauge",
        "GPU i's memory in use by all processes of the machine (nvmlDeviceGetMemoryInfo .used)",
    ),
    MetricInfo("nvml.gpu.<i>.memory_total_bytes", "bytes", "gauge", "GPU i's memory (nvmlDeviceGetMemoryInfo .total)"),
    MetricInfo(
        "nvml.gpu.<i>.power_milliwatts",
        "milliwatts",
        "gauge",
        "power drawn by GPU i and its board (nvmlDeviceGetPowerUsage); absent on products without a power sensor",
    ),
    MetricInfo(
        "nvml.gpu.<i>.temperature_celsius", "celsius", "gauge", "GPU i's core temperature (NVML_TEMPERATURE_GPU)"
    ),
    MetricInfo("nvml.gpu.<i>.sm_clock_mhz", "MHz", "gauge", "GPU i's current SM clock (NVML_CLOCK_SM)"),
    MetricInfo("nvml.gpu.<i>.memory_clock_mhz", "MHz", "gauge", "GPU i's current memory clock (NVML_CLOCK_MEM)"),
    MetricInfo(
        _APP_MEMORY,
        "bytes",
        "gauge",
        "GPU memory used by the app container's processes on all GPUs: the compute and graphics processes NVML "
        "lists whose /proc/<pid>/cgroup names the container (a process in both lists counts once). Needs the "
        "runner to see host PIDs; absent otherwise (the status says why). On Jetson the GPU shares RAM with the "
        "CPU, gpu-summary uses tegrastats instead of NVML, and the app's GPU memory is jetson.app.nvmap_used_bytes",
    ),
)

_UNSUPPORTED = "unsupported_fields"


# One NVML call per entry, read from a device handle into one or more metric name suffixes: a call that fails drops
# the metrics it fills (utilization and memory info fill two each; they are asked once per sample).
_Reading = Callable[[Any, Any], Dict[str, float]]


def _utilization(nv: Any, h: Any) -> Dict[str, float]:
    u = nv.nvmlDeviceGetUtilizationRates(h)
    return {"utilization_percent": u.gpu, "memory_utilization_percent": u.memory}


def _memory(nv: Any, h: Any) -> Dict[str, float]:
    m = nv.nvmlDeviceGetMemoryInfo(h)
    return {"memory_used_bytes": m.used, "memory_total_bytes": m.total}


_READINGS: Tuple[Tuple[str, _Reading], ...] = (
    ("utilization", _utilization),
    ("memory", _memory),
    ("power_milliwatts", lambda nv, h: {"power_milliwatts": nv.nvmlDeviceGetPowerUsage(h)}),
    (
        "temperature_celsius",
        lambda nv, h: {"temperature_celsius": nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)},
    ),
    ("sm_clock_mhz", lambda nv, h: {"sm_clock_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)}),
    ("memory_clock_mhz", lambda nv, h: {"memory_clock_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)}),
)


def _nvml_error_text(nv: Any, e: BaseException) -> str:
    value = getattr(e, "value", None)
    text = str(e) or type(e).__name__
    if value == getattr(nv, "NVML_ERROR_LIB_RM_VERSION_MISMATCH", None):
        text += " (the NVML library and the kernel driver are different versions: reboot, or match them)"
    return f"{text} [NVML error {value}]" if value is not None else text


class NvmlCollector(Collector):
    """Polled NVML readings. ``start`` raises ``Unavailable`` without nvidia-ml-py, when ``nvmlInit`` fails (no
    driver, driver/library mismatch) or when NVML sees no GPU."""

    name = "nvml"
    catalog = CATALOG
    source_description = (
        "NVML (nvidia-ml-py, `pip install 'waap[gpu]'`) on discrete NVIDIA GPUs; a field NVML does not support "
        "on a GPU is left out and named once in the collector's status"
    )

    def __init__(self, nvml: Any = None) -> None:
        super().__init__()
        self._nv: Any = nvml
        self._handles: List[Any] = []
        self._dropped: Set[str] = set()
        self._notes: List[str] = []
        self._app: Optional[AppProcesses] = None
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self, ctx: RunContext, sink: SampleSink) -> None:
        if self._nv is None:
            try:
                self._nv = importlib.import_module("pynvml")
            except ImportError as e:
                raise Unavailable("nvidia-ml-py is not installed: pip install 'waap[gpu]'") from e
        nv = self._nv
        try:
            nv.nvmlInit()
        except nv.NVMLError as e:
            raise Unavailable(f"NVML could not start: {_nvml_error_text(nv, e)}") from e
        self._started = True
        try:
            count = int(nv.nvmlDeviceGetCount())
            self._handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except nv.NVMLError as e:
            self.stop()
            raise Unavailable(f"NVML could not list the GPUs: {_nvml_error_text(nv, e)}") from e
        if not self._handles:
            self.stop()
            raise Unavailable("NVML found no GPU")
        self._app = AppProcesses(ctx)
        why = AppProcesses.unavailable(ctx)
        if why is not None:
            self._drop(_APP_MEMORY, f"{why}, so the app's GPU memory is not measured")

    def sample(self, ts_ns: int) -> Optional[Mapping[str, float]]:
        nv = self._nv
        values: Dict[str, Optional[float]] = {}
        for i, handle in enumerate(self._handles):
            for what, read in _READINGS:
                key = f"nvml.gpu.{i}.{what}"
                if key in self._dropped:
                    continue
                try:
                    values.update((f"nvml.gpu.{i}.{suffix}", v) for suffix, v in read(nv, handle).items())
                except nv.NVMLError as e:
                    self._drop(key, _nvml_error_text(nv, e))
        if _APP_MEMORY not in self._dropped:
            values[_APP_MEMORY] = self._app_memory()
        return self.finite(values)

    def stop(self) -> None:
        if self._started:
            self._started = False
            # best effort: the driver frees everything when the process exits anyway
            with contextlib.suppress(self._nv.NVMLError):
                self._nv.nvmlShutdown()

    # -- helpers -----------------------------------------------------------------------------------------------

    def _drop(self, key: str, why: str) -> None:
        """Leave ``key`` out for the rest of the run, and say so once."""
        self._dropped.add(key)
        self._notes.append(f"{key}: {why}")
        self.status.reason = "; ".join(self._notes)
        self.status.counters[_UNSUPPORTED] = self.status.counters.get(_UNSUPPORTED, 0) + 1

    def _app_memory(self) -> Optional[float]:
        """Bytes of GPU memory held by the app's processes, or None when no process list could be read."""
        nv = self._nv
        total = 0
        any_list = False
        for i, handle in enumerate(self._handles):
            used: Dict[int, int] = {}  # pid -> bytes on this GPU: a compute + graphics process is listed twice
            for kind, query in (
                ("compute_processes", nv.nvmlDeviceGetComputeRunningProcesses),
                ("graphics_processes", nv.nvmlDeviceGetGraphicsRunningProcesses),
            ):
                key = f"nvml.gpu.{i}.{kind}"
                if key in self._dropped:
                    continue
                try:
                    processes = query(handle)
                except nv.NVMLError as e:
                    self._drop(key, _nvml_error_text(nv, e))
                    continue
                any_list = True
                for p in processes:
                    mem = p.usedGpuMemory  # None where the driver cannot tell (WDDM, some MIG setups)
                    if mem is not None and self._app is not None and int(p.pid) in self._app:
                        used[int(p.pid)] = max(used.get(int(p.pid), 0), int(mem))
            total += sum(used.values())
        if not any_list:
            self._drop(_APP_MEMORY, "NVML lists the processes of no GPU here")
            return None
        return float(total)
