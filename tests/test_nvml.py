"""The NVML collector and the gpu-summary dispatcher, against a faithful fake of nvidia-ml-py's ``pynvml`` driven by
tests/data/nvml/devices.json (provenance in its README). No GPU is needed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import pytest

from profiler.collectors import Collector, RunContext, Unavailable
from profiler.collectors.gpu import GpuSummaryCollector
from profiler.collectors.nvml import NvmlCollector

DATA = Path(__file__).parent / "data" / "nvml" / "devices.json"
CONTAINER_ID = "3f1c0a9e5b7d2e4f6a8c0b1d3e5f7a9c1b3d5e7f9a1c3e5b7d9f1a3c5e7b9d1f"
MiB = 1024 * 1024


class FakePynvml:
    """The part of pynvml the collector uses, with pynvml's names, constants and error classes (nvidia-ml-py
    13.615.71): ``NVMLError(value)`` returns the subclass for that code, which carries ``value``."""

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_ERROR_UNINITIALIZED = 1
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_NO_PERMISSION = 4
    NVML_ERROR_DRIVER_NOT_LOADED = 9
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
    NVML_ERROR_UNKNOWN = 999

    def __init__(self, devices: List[Dict[str, Any]], init_error: Optional[int] = None) -> None:
        self.devices = devices
        self.init_error = init_error
        self.calls: Dict[str, int] = {}
        self.initialized = False
        strings = {
            1: "Uninitialized",
            3: "Not Supported",
            4: "Insufficient Permissions",
            9: "Driver Not Loaded",
            12: "NVML Shared Library Not Found",
            18: "RM has detected an NVML/RM version mismatch.",
            999: "Unknown Error",
        }
        mapping: Dict[int, type] = {}

        class NVMLError(Exception):
            value: int

            def __new__(cls, value: int) -> Any:
                if cls is NVMLError:
                    cls = mapping.get(value, cls)
                obj = Exception.__new__(cls)
                obj.value = value
                return obj

            def __str__(self) -> str:
                return strings.get(self.value, f"NVML Error with code {self.value}")

        def subclass(name: str, value: int) -> type:
            cls = type(name, (NVMLError,), {"__new__": lambda typ, *args: NVMLError.__new__(typ, value)})
            mapping[value] = cls
            return cls

        self.NVMLError = NVMLError
        self.NVMLError_NotSupported = subclass("NVMLError_NotSupported", 3)
        self.NVMLError_DriverNotLoaded = subclass("NVMLError_DriverNotLoaded", 9)
        self.NVMLError_LibRmVersionMismatch = subclass("NVMLError_LibRmVersionMismatch", 18)

    def _call(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if not self.initialized:
            raise self.NVMLError(self.NVML_ERROR_UNINITIALIZED)

    def _value(self, handle: int, key: str) -> Any:
        v = self.devices[handle][key]
        if v == "NOT_SUPPORTED":
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return v

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.NVMLError(self.init_error)
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self._call("nvmlShutdown")
        self.initialized = False

    def nvmlDeviceGetCount(self) -> int:
        self._call("nvmlDeviceGetCount")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._call("nvmlDeviceGetHandleByIndex")
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        self._call("nvmlDeviceGetUtilizationRates")
        u = self._value(handle, "utilization")
        return SimpleNamespace(gpu=u["gpu"], memory=u["memory"])

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        self._call("nvmlDeviceGetMemoryInfo")
        m = self._value(handle, "memory")
        return SimpleNamespace(total=m["total"], used=m["used"], free=m["total"] - m["used"])

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        self._call("nvmlDeviceGetPowerUsage")
        return int(self._value(handle, "power_mw"))

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        self._call("nvmlDeviceGetTemperature")
        assert sensor == self.NVML_TEMPERATURE_GPU
        return int(self._value(handle, "temperature_c"))

    def nvmlDeviceGetClockInfo(self, handle: int, clock: int) -> int:
        self._call("nvmlDeviceGetClockInfo")
        key = {self.NVML_CLOCK_SM: "clock_sm_mhz", self.NVML_CLOCK_MEM: "clock_mem_mhz"}[clock]
        return int(self._value(handle, key))

    def _processes(self, handle: int, key: str) -> List[Any]:
        return [SimpleNamespace(pid=p["pid"], usedGpuMemory=p["usedGpuMemory"]) for p in self._value(handle, key)]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> List[Any]:
        self._call("nvmlDeviceGetComputeRunningProcesses")
        return self._processes(handle, "compute_processes")

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> List[Any]:
        self._call("nvmlDeviceGetGraphicsRunningProcesses")
        return self._processes(handle, "graphics_processes")


def _devices() -> List[Dict[str, Any]]:
    devices: List[Dict[str, Any]] = json.loads(DATA.read_text())["devices"]
    return devices


def _proc(tmp_path: Path, pids: Dict[int, str]) -> Path:
    for pid, cgroup in pids.items():
        (tmp_path / str(pid)).mkdir(parents=True)
        (tmp_path / str(pid) / "cgroup").write_text(cgroup)
    return tmp_path


def _ctx(tmp_path: Path, proc: Optional[Path] = None, container_pid: int = 4242) -> RunContext:
    return RunContext(
        run_id="r1",
        container_id=CONTAINER_ID,
        container_pid=container_pid,
        run_dir=tmp_path,
        output_dir=tmp_path,
        interval_s=1.0,
        proc=proc or tmp_path / "proc",
    )


def _in_app(cgroup_v2: bool = True) -> str:
    if cgroup_v2:
        return f"0::/system.slice/docker-{CONTAINER_ID}.scope\n"
    return f"12:memory:/docker/{CONTAINER_ID}\n11:cpu,cpuacct:/docker/{CONTAINER_ID}\n"


def _no_sink(sample: Any) -> None:
    raise AssertionError("NVML is polled, it never pushes")


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    # gpustat's PIDs: 48448 (compute + graphics on GPU 1) and 192453 (GPU 2) run in the app container
    return _proc(
        tmp_path / "proc",
        {
            48448: _in_app(),
            153223: "0::/user.slice/user-1000.slice/session-2.scope\n",
            192453: _in_app(cgroup_v2=False),
            194826: "0::/system.slice/docker-0123456789abcdef.scope\n",
        },
    )


def test_recorded_rtx_3090_values_come_out_in_the_catalog_units(tmp_path: Path, proc: Path) -> None:
    fake = FakePynvml(_devices())
    c = NvmlCollector(nvml=fake)
    c.start(_ctx(tmp_path, proc), _no_sink)
    values = c.sample(1)
    assert values is not None
    assert {k: v for k, v in values.items() if k.startswith("nvml.gpu.0.")} == {
        "nvml.gpu.0.utilization_percent": 2.0,
        "nvml.gpu.0.memory_utilization_percent": 0.0,
        "nvml.gpu.0.memory_used_bytes": 0.0,
        "nvml.gpu.0.memory_total_bytes": 24576.0 * MiB,
        "nvml.gpu.0.power_milliwatts": 99310.0,
        "nvml.gpu.0.temperature_celsius": 33.0,
        "nvml.gpu.0.sm_clock_mhz": 1695.0,
        "nvml.gpu.0.memory_clock_mhz": 9751.0,
    }
    names = {info.name.replace("<i>", "0") for info in NvmlCollector.catalog}
    assert {k.replace(".1.", ".0.").replace(".2.", ".0.").replace(".3.", ".0.") for k in values} <= names


def test_an_unsupported_field_costs_only_that_field_and_is_reported_once(tmp_path: Path, proc: Path) -> None:
    fake = FakePynvml(_devices())
    c = NvmlCollector(nvml=fake)
    c.start(_ctx(tmp_path, proc), _no_sink)
    first = c.sample(1)
    calls_after_first = dict(fake.calls)
    second = c.sample(2)
    assert first == second
    assert first is not None
    # GPU 2 has no power sensor, GPU 3 no utilization: the rest of those GPUs is still there
    assert "nvml.gpu.2.power_milliwatts" not in first
    assert first["nvml.gpu.2.temperature_celsius"] == 36.0
    assert "nvml.gpu.3.utilization_percent" not in first and "nvml.gpu.3.memory_utilization_percent" not in first
    assert first["nvml.gpu.3.power_milliwatts"] == 250000.0
    assert first["nvml.gpu.1.utilization_percent"] == 76.0
    assert first["nvml.gpu.1.memory_used_bytes"] == 8000.0 * MiB
    # reported once, and not asked again
    reason = c.status.reason
    assert reason.count("nvml.gpu.2.power_milliwatts: Not Supported [NVML error 3]") == 1
    assert reason.count("nvml.gpu.3.utilization: Not Supported") == 1
    unsupported = c.status.counters["unsupported_fields"]
    assert unsupported == 3 * 2 + 1 + 1 + 2  # clocks of GPUs 1-3, power of 2, utilization and process lists of 3
    assert fake.calls["nvmlDeviceGetPowerUsage"] == calls_after_first["nvmlDeviceGetPowerUsage"] + 3
    assert fake.calls["nvmlDeviceGetUtilizationRates"] == calls_after_first["nvmlDeviceGetUtilizationRates"] + 3
    c.sample(3)
    assert c.status.counters["unsupported_fields"] == unsupported
    assert c.status.reason == reason


def test_app_memory_sums_the_containers_processes_once_each(tmp_path: Path, proc: Path) -> None:
    c = NvmlCollector(nvml=FakePynvml(_devices()))
    c.start(_ctx(tmp_path, proc), _no_sink)
    values = c.sample(1)
    assert values is not None
    # 48448 (compute and graphics on GPU 1: 4000 MiB once) + 192453 (3000 MiB on GPU 2); 153223 and 194826 are not
    # the app's; GPU 3 lists no processes (not supported)
    assert values["nvml.app.memory_used_bytes"] == (4000 + 3000) * MiB
    assert "nvml.gpu.3.compute_processes: Not Supported" in c.status.reason


def test_app_memory_is_zero_when_no_app_process_uses_a_gpu(tmp_path: Path) -> None:
    c = NvmlCollector(nvml=FakePynvml(_devices()[:1]))  # the recorded RTX 3090: "Processes: None"
    c.start(_ctx(tmp_path, tmp_path), _no_sink)
    values = c.sample(1)
    assert values is not None and values["nvml.app.memory_used_bytes"] == 0.0
    assert c.status.reason == ""


def test_a_process_that_is_gone_is_not_counted(tmp_path: Path) -> None:
    c = NvmlCollector(nvml=FakePynvml(_devices()[1:2]))
    c.start(_ctx(tmp_path, _proc(tmp_path / "proc", {153223: _in_app()})), _no_sink)  # 48448 has no /proc entry
    values = c.sample(1)
    assert values is not None and values["nvml.app.memory_used_bytes"] == 4000 * MiB


def test_without_host_pids_app_memory_is_left_out_and_says_why(tmp_path: Path, proc: Path) -> None:
    c = NvmlCollector(nvml=FakePynvml(_devices()))
    c.start(_ctx(tmp_path, proc, container_pid=0), _no_sink)
    values = c.sample(1)
    assert values is not None and "nvml.app.memory_used_bytes" not in values
    assert values["nvml.gpu.0.temperature_celsius"] == 33.0
    assert "nvml.app.memory_used_bytes: the runner cannot see the app's host PIDs (run it with --pid host)" in (
        c.status.reason
    )


def test_missing_nvidia_ml_py_is_unavailable_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with pytest.raises(Unavailable, match=r"nvidia-ml-py is not installed: pip install 'waap\[gpu\]'"):
        NvmlCollector().start(_ctx(tmp_path), _no_sink)


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (18, "RM has detected an NVML/RM version mismatch"),
        (9, "Driver Not Loaded"),
        (12, "NVML Shared Library Not Found"),
    ],
)
def test_nvml_init_failure_is_unavailable_naming_the_nvml_error(tmp_path: Path, code: int, words: str) -> None:
    with pytest.raises(Unavailable, match="NVML could not start") as e:
        NvmlCollector(nvml=FakePynvml(_devices(), init_error=code)).start(_ctx(tmp_path), _no_sink)
    assert words in str(e.value) and f"[NVML error {code}]" in str(e.value)
    if code == 18:
        assert "different versions" in str(e.value)


def test_no_gpu_is_unavailable_and_nvml_is_shut_down(tmp_path: Path) -> None:
    fake = FakePynvml([])
    with pytest.raises(Unavailable, match="NVML found no GPU"):
        NvmlCollector(nvml=fake).start(_ctx(tmp_path), _no_sink)
    assert fake.calls["nvmlShutdown"] == 1 and not fake.initialized


def test_stop_shuts_nvml_down_once(tmp_path: Path, proc: Path) -> None:
    fake = FakePynvml(_devices())
    c = NvmlCollector(nvml=fake)
    c.start(_ctx(tmp_path, proc), _no_sink)
    c.sample(1)
    c.stop()
    c.stop()
    assert fake.calls["nvmlShutdown"] == 1


class _NoTegrastats(Collector):
    name = "tegrastats"

    def start(self, ctx: RunContext, sink: Any) -> None:
        raise Unavailable("no tegrastats binary on PATH")

    def sample(self, ts_ns: int) -> None:
        return None


def test_gpu_summary_falls_back_to_nvml_and_delegates(tmp_path: Path, proc: Path) -> None:
    fake = FakePynvml(_devices())
    c = GpuSummaryCollector(candidates=[_NoTegrastats, lambda: NvmlCollector(nvml=fake)])
    c.start(_ctx(tmp_path, proc), _no_sink)
    assert c.delegate is not None and c.delegate.name == "nvml"
    values = c.sample(1)
    assert values is not None and values["nvml.gpu.0.sm_clock_mhz"] == 1695.0
    assert c.status.reason.startswith("using nvml: ") and "nvml.gpu.2.power_milliwatts" in c.status.reason
    assert c.status.counters["unsupported_fields"] > 0
    c.stop()
    assert fake.calls["nvmlShutdown"] == 1


def test_gpu_summary_without_either_source_gives_both_reasons(tmp_path: Path) -> None:
    fake = FakePynvml(_devices(), init_error=9)
    c = GpuSummaryCollector(candidates=[_NoTegrastats, lambda: NvmlCollector(nvml=fake)])
    with pytest.raises(Unavailable) as e:
        c.start(_ctx(tmp_path), _no_sink)
    assert str(e.value) == (
        "tegrastats (not a Jetson?): no tegrastats binary on PATH; NVML: NVML could not start: Driver Not Loaded "
        "[NVML error 9]"
    )


def test_gpu_summary_default_candidates_end_with_nvml(tmp_path: Path, proc: Path) -> None:
    c = GpuSummaryCollector(nvml=FakePynvml(_devices()))
    try:
        c.start(_ctx(tmp_path, proc), _no_sink)
    except Unavailable:  # pragma: no cover - only on a Jetson, where tegrastats would have been picked
        pytest.skip("tegrastats is unavailable here in an unexpected way")
    assert c.delegate is not None
    assert c.status.reason.startswith(f"using {c.delegate.name}")
    if c.delegate.name == "nvml":
        values = c.sample(1)
        assert values is not None and values["nvml.gpu.0.temperature_celsius"] == 33.0
    c.stop()


def test_gpu_summary_default_reasons_name_tegrastats_and_nvml(tmp_path: Path) -> None:
    c = GpuSummaryCollector(nvml=FakePynvml(_devices(), init_error=18))
    with pytest.raises(Unavailable) as e:
        c.start(_ctx(tmp_path), _no_sink)  # no tegrastats binary on this machine (not a Jetson)
    message = str(e.value)
    assert message.startswith("tegrastats") and "; NVML: NVML could not start: RM has detected" in message


def test_gpu_summary_catalog_holds_the_nvml_metrics_once() -> None:
    names = [info.name for info in GpuSummaryCollector.catalog]
    assert len(names) == len(set(names))
    assert {info.name for info in NvmlCollector.catalog} <= set(names)
