"""``system``: the host as a whole — CPU (total and per core), memory, swap, load, disk and network IO, temperatures.

Numbers come from ``/proc`` (through psutil where it handles kernel differences) and ``/sys``. Both roots are
injectable: ``RunContext.proc`` points psutil at a recorded ``/proc`` (``psutil.PROCFS_PATH``) and the ``sysfs``
argument at a recorded ``/sys``, so tests run on ``tests/data/proc-host`` instead of the live machine.

Cost: one ``sample()`` reads ``/proc/stat``, ``/proc/meminfo`` (twice), ``/proc/vmstat``, ``/proc/loadavg``,
``/proc/diskstats`` and ``/proc/net/dev``: about 0.2 ms on a 2-core VM. Temperatures are not read through
``psutil.sensors_temperatures`` (it globs ``/sys`` and reads four or five files per sensor on every call): the
sensor files are found once in ``start`` and then read, one small read each, at most every
``temperature_interval_s`` (1 s by default), since some sensor drivers are slow and temperatures change slowly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import psutil

from .base import Collector, MetricInfo, RunContext, SampleSink, Unavailable

__all__ = ["CATALOG", "SystemCollector"]

CATALOG: Tuple[MetricInfo, ...] = (
    MetricInfo(
        "system.cpu.percent",
        "percent",
        "gauge",
        "busy share of all online cores (0-100, 100 = every core busy; iowait counts as idle), from /proc/stat "
        "deltas since the previous sample; absent from the first sample",
    ),
    MetricInfo("system.cpu.user_percent", "percent", "gauge", "share of all cores in user mode (user + nice)"),
    MetricInfo(
        "system.cpu.system_percent", "percent", "gauge", "share of all cores in the kernel (system + irq + softirq)"
    ),
    MetricInfo("system.cpu.iowait_percent", "percent", "gauge", "share of all cores idle while waiting for IO"),
    MetricInfo("system.cpu.core.<n>.percent", "percent", "gauge", "busy share of core n (0-100)"),
    MetricInfo("system.cpu.online_cores", "cores", "gauge", "cores online (Jetson power modes switch cores off)"),
    MetricInfo("system.memory.total_bytes", "bytes", "gauge", "physical memory (MemTotal)"),
    MetricInfo("system.memory.used_bytes", "bytes", "gauge", "memory in use: total - available (psutil's definition)"),
    MetricInfo(
        "system.memory.available_bytes",
        "bytes",
        "gauge",
        "memory available to new work without swapping (MemAvailable)",
    ),
    MetricInfo("system.swap.total_bytes", "bytes", "gauge", "swap space (zram included)"),
    MetricInfo("system.swap.used_bytes", "bytes", "gauge", "swap space in use"),
    MetricInfo("system.swap.in_bytes_total", "bytes", "counter", "bytes swapped in since boot (pswpin)"),
    MetricInfo("system.swap.out_bytes_total", "bytes", "counter", "bytes swapped out since boot (pswpout)"),
    MetricInfo("system.load.1m", "tasks", "gauge", "load average over 1 minute (runnable + uninterruptible tasks)"),
    MetricInfo("system.load.5m", "tasks", "gauge", "load average over 5 minutes"),
    MetricInfo("system.load.15m", "tasks", "gauge", "load average over 15 minutes"),
    MetricInfo(
        "system.disk.read_bytes_total",
        "bytes",
        "counter",
        "bytes read from the physical disks (those with a device in /sys/block: no loop, zram, dm) since boot",
    ),
    MetricInfo("system.disk.write_bytes_total", "bytes", "counter", "bytes written to the physical disks since boot"),
    MetricInfo("system.disk.read_ops_total", "operations", "counter", "read requests completed by the physical disks"),
    MetricInfo(
        "system.disk.write_ops_total", "operations", "counter", "write requests completed by the physical disks"
    ),
    MetricInfo(
        "system.net.rx_bytes_total",
        "bytes",
        "counter",
        "bytes received on the physical network interfaces (those with a device in /sys/class/net; all but "
        "loopback when there is none, as in a container's own network namespace)",
    ),
    MetricInfo("system.net.tx_bytes_total", "bytes", "counter", "bytes sent on the physical network interfaces"),
    MetricInfo("system.net.rx_packets_total", "packets", "counter", "packets received on the physical interfaces"),
    MetricInfo("system.net.tx_packets_total", "packets", "counter", "packets sent on the physical interfaces"),
    MetricInfo(
        "system.temperature.<sensor>.celsius",
        "celsius",
        "gauge",
        "a temperature the kernel exposes (/sys/class/hwmon, or /sys/class/thermal zones hwmon does not "
        "already show); sensor = hwmon name + label, or thermal zone type, lowercase with underscores",
    ),
)


class _CpuTimes(NamedTuple):
    """One /proc/stat cpu line in clock ticks (only ratios of deltas are used, so the tick rate does not matter)."""

    total: int  # user..steal; guest and guest_nice are already counted in user and nice
    idle: int  # idle + iowait
    user: int  # user + nice
    system: int  # system + irq + softirq
    iowait: int


def _parse_cpu(fields: List[bytes]) -> _CpuTimes:
    v = [int(x) for x in fields[1:9]]
    v += [0] * (8 - len(v))  # very old kernels lack steal
    user, nice, system, idle, iowait, irq, softirq, steal = v
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return _CpuTimes(total, idle + iowait, user + nice, system + irq + softirq, iowait)


def _read_proc_stat(path: str) -> Tuple[_CpuTimes, Dict[int, _CpuTimes]]:
    """The all-cores line and each online core by its number. Read directly rather than through
    ``psutil.cpu_times(percpu=True)``, which returns a list without core numbers: an offline core (Jetson power
    modes) would shift every later core to the wrong name."""
    with open(path, "rb") as fh:
        data = fh.read()
    total: Optional[_CpuTimes] = None
    cores: Dict[int, _CpuTimes] = {}
    for line in data.split(b"\n"):
        if not line.startswith(b"cpu"):
            break  # the cpu lines come first; the rest (interrupts, context switches) is not needed
        fields = line.split()
        if fields[0] == b"cpu":
            total = _parse_cpu(fields)
        else:
            cores[int(fields[0][3:])] = _parse_cpu(fields)
    if total is None:
        raise ValueError(f"{path}: no cpu line")
    return total, cores


def _share(part: int, total: int) -> float:
    return round(min(100.0, max(0.0, 100.0 * part / total)), 3)


class _Monotonic:
    """Running totals that only go up: a kernel counter that goes back (32-bit wrap, a device removed and re-added)
    is taken as restarted from zero, and the total carries on from where it was."""

    def __init__(self) -> None:
        self._last: Dict[str, int] = {}
        self._offset: Dict[str, int] = {}

    def __call__(self, key: str, raw: int) -> int:
        last = self._last.get(key)
        if last is not None and raw < last:
            self._offset[key] = self._offset.get(key, 0) + last
        self._last[key] = raw
        return raw + self._offset.get(key, 0)


def _physical(folder: Path) -> Optional[List[str]]:
    """Entries of /sys/block or /sys/class/net backed by hardware (a ``device`` link); None if the folder is missing."""
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    return sorted(n for n in names if os.path.lexists(folder / n / "device"))


def _sensor_name(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _number_key(path: Path) -> Tuple[int, str]:
    digits = re.findall(r"\d+", path.name)
    return (int(digits[-1]) if digits else -1, path.name)


def _temp_key(path: Path) -> Tuple[int, str]:
    number = re.search(r"\d+", path.name)  # temp10_input after temp2_input
    return (int(number.group()) if number else -1, str(path))


def _read_milli(path: Path) -> float:
    with open(path, "rb") as fh:
        return int(fh.read().strip()) / 1000.0


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def find_temperature_sensors(sysfs: Path) -> List[Tuple[str, Path]]:
    """(sensor name, file) for every temperature under ``sysfs`` that reads as a number now.

    hwmon first (``hwmonN/tempM_input``, also under ``device/`` as some drivers put them); then thermal zones whose
    type hwmon does not already show (the kernel bridges many zones into hwmon, with '-' made '_')."""
    found: List[Tuple[str, Path]] = []
    hwmon_names = set()
    hwmon_root = sysfs / "class" / "hwmon"
    for hwmon in sorted(hwmon_root.glob("hwmon*"), key=_number_key):
        inputs = sorted([*hwmon.glob("temp*_input"), *hwmon.glob("device/temp*_input")], key=_temp_key)
        device = _sensor_name(_read_text(hwmon / "name") or _read_text(hwmon / "device" / "name") or hwmon.name)
        hwmon_names.add(device)
        for path in inputs:
            label = _read_text(path.with_name(path.name.replace("_input", "_label")))
            if label:
                name = f"{device}_{_sensor_name(label)}"
            elif len(inputs) == 1:
                name = device
            else:
                name = f"{device}_{path.name.replace('_input', '')}"
            found.append((name, path))
    for zone in sorted((sysfs / "class" / "thermal").glob("thermal_zone*"), key=_number_key):
        zone_type = _sensor_name(_read_text(zone / "type") or zone.name)
        if zone_type in hwmon_names:
            continue
        found.append((zone_type, zone / "temp"))

    sensors: List[Tuple[str, Path]] = []
    seen: Dict[str, int] = {}
    for name, path in found:
        try:
            _read_milli(path)
        except (OSError, ValueError):
            continue  # a sensor that cannot be read now (no data, a driver error) is left out
        name = name or "sensor"
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}_{seen[name]}"  # two hwmon devices of one kind (dual socket, two NVMe disks)
        sensors.append((name, path))
    return sensors


_Reader = Callable[[int], Dict[str, float]]
_PROBLEMS = (OSError, ValueError, LookupError, RuntimeError, AssertionError, psutil.Error)


class SystemCollector(Collector):
    """Polled host-wide metrics. Each group (cpu, memory, swap, load, disk, net, temperature) degrades on its own:
    a group that cannot be read at start or fails later is left out from then on and named in ``status.reason``;
    only when CPU and memory both cannot be read is the collector ``Unavailable``."""

    name = "system"
    catalog = CATALOG
    source_description = "psutil and /proc (stat, meminfo, vmstat, loadavg, diskstats, net/dev), /sys for temperatures"

    def __init__(self, *, sysfs: Path = Path("/sys"), temperature_interval_s: float = 1.0) -> None:
        super().__init__()
        self.sysfs = sysfs
        self.temperature_interval_s = temperature_interval_s
        self._procfs = "/proc"
        self._saved_procfs: Optional[str] = None
        self._groups: List[Tuple[str, _Reader]] = []
        self._notes: List[str] = []
        self._prev_cpu: Optional[Tuple[_CpuTimes, Dict[int, _CpuTimes]]] = None
        self._mono = _Monotonic()
        self._disks: Optional[List[str]] = None  # None: psutil's own whole-disk total
        self._nics: List[str] = []
        self._disk_totals: Dict[str, Tuple[int, int, int, int]] = {}
        self._nic_totals: Dict[str, Tuple[int, int, int, int]] = {}
        self._sensors: List[Tuple[str, Path]] = []
        self._next_temperature_ns: Optional[int] = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self, ctx: RunContext, sink: SampleSink) -> None:
        self._procfs = str(ctx.proc)
        if self._procfs != psutil.PROCFS_PATH:
            # psutil has no per-call root; the setting is process-wide and restored in stop()
            self._saved_procfs = psutil.PROCFS_PATH
            psutil.PROCFS_PATH = self._procfs
        self._select_devices()
        self._sensors = find_temperature_sensors(self.sysfs)
        candidates: List[Tuple[str, _Reader]] = [
            ("cpu", self._cpu),
            ("memory", self._memory),
            ("swap", self._swap),
            ("load", self._load),
            ("disk", self._disk),
            ("net", self._net),
        ]
        failed: Dict[str, str] = {}
        for group, read in candidates:
            try:
                read(0)
            except _PROBLEMS as e:
                failed[group] = _why(e)
                continue
            self._groups.append((group, read))
        self._prev_cpu = None  # the probe is not a baseline: rates start with the first real sample
        if "cpu" in failed and "memory" in failed:
            self._restore_procfs()
            raise Unavailable(f"cannot read {self._procfs}: cpu: {failed['cpu']}; memory: {failed['memory']}")
        self._notes.extend(f"{group}: {why}" for group, why in failed.items())
        if self._sensors:
            self._groups.append(("temperature", self._temperature))
        else:
            self._notes.append(
                f"temperature: no readable sensor in {self.sysfs}/class/hwmon or {self.sysfs}/class/thermal"
            )
        self._update_reason()

    def sample(self, ts_ns: int) -> Optional[Mapping[str, float]]:
        values: Dict[str, float] = {}
        for group, read in list(self._groups):
            try:
                values.update(read(ts_ns))
            except _PROBLEMS as e:
                self._drop(group, _why(e))
        if not self._groups:
            raise RuntimeError(f"every metric group failed: {self.status.reason}")
        return values

    def stop(self) -> None:
        self._restore_procfs()

    # -- groups ------------------------------------------------------------------------------------------------

    def _cpu(self, ts_ns: int) -> Dict[str, float]:
        total, cores = _read_proc_stat(f"{self._procfs}/stat")
        values: Dict[str, float] = {"system.cpu.online_cores": float(len(cores))}
        prev = self._prev_cpu
        self._prev_cpu = (total, cores)
        if prev is None:
            return values
        prev_total, prev_cores = prev
        dt = total.total - prev_total.total
        if dt > 0:
            values["system.cpu.percent"] = _share(dt - max(0, total.idle - prev_total.idle), dt)
            values["system.cpu.user_percent"] = _share(max(0, total.user - prev_total.user), dt)
            values["system.cpu.system_percent"] = _share(max(0, total.system - prev_total.system), dt)
            values["system.cpu.iowait_percent"] = _share(max(0, total.iowait - prev_total.iowait), dt)
        for n, now in cores.items():
            before = prev_cores.get(n)
            if before is None:
                continue  # a core that just came online has no baseline yet
            dt = now.total - before.total
            if dt > 0:
                values[f"system.cpu.core.{n}.percent"] = _share(dt - max(0, now.idle - before.idle), dt)
        return values

    def _memory(self, ts_ns: int) -> Dict[str, float]:
        mem = psutil.virtual_memory()
        return {
            "system.memory.total_bytes": float(mem.total),
            "system.memory.used_bytes": float(mem.used),
            "system.memory.available_bytes": float(mem.available),
        }

    def _swap(self, ts_ns: int) -> Dict[str, float]:
        swap = psutil.swap_memory()
        return {
            "system.swap.total_bytes": float(swap.total),
            "system.swap.used_bytes": float(swap.used),
            "system.swap.in_bytes_total": float(self._mono("swap.in", swap.sin)),
            "system.swap.out_bytes_total": float(self._mono("swap.out", swap.sout)),
        }

    def _load(self, ts_ns: int) -> Dict[str, float]:
        # psutil.getloadavg() is os.getloadavg(), which ignores PROCFS_PATH
        with open(f"{self._procfs}/loadavg", "rb") as fh:
            one, five, fifteen = (float(x) for x in fh.read().split()[:3])
        return {"system.load.1m": one, "system.load.5m": five, "system.load.15m": fifteen}

    def _disk(self, ts_ns: int) -> Dict[str, float]:
        if self._disks is None:
            per = {"all": psutil.disk_io_counters(perdisk=False, nowrap=False)}
        else:
            every = psutil.disk_io_counters(perdisk=True, nowrap=False)
            per = {name: every[name] for name in self._disks if name in every}
        for name, io in per.items():
            if io is None:
                raise ValueError("psutil found no disks")
            self._disk_totals[name] = (
                self._mono(f"disk.{name}.rb", io.read_bytes),
                self._mono(f"disk.{name}.wb", io.write_bytes),
                self._mono(f"disk.{name}.rc", io.read_count),
                self._mono(f"disk.{name}.wc", io.write_count),
            )
        # a disk that went away keeps its last totals, so the sums never go back
        return _summed(self._disk_totals, _DISK_METRICS)

    def _net(self, ts_ns: int) -> Dict[str, float]:
        every = psutil.net_io_counters(pernic=True, nowrap=False)
        for name in self._nics:
            io = every.get(name)
            if io is None:
                continue
            self._nic_totals[name] = (
                self._mono(f"net.{name}.rb", io.bytes_recv),
                self._mono(f"net.{name}.tb", io.bytes_sent),
                self._mono(f"net.{name}.rp", io.packets_recv),
                self._mono(f"net.{name}.tp", io.packets_sent),
            )
        return _summed(self._nic_totals, _NET_METRICS)

    def _temperature(self, ts_ns: int) -> Dict[str, float]:
        if self._next_temperature_ns is not None and ts_ns < self._next_temperature_ns:
            return {}
        self._next_temperature_ns = ts_ns + int(self.temperature_interval_s * 1e9)
        values: Dict[str, float] = {}
        keep: List[Tuple[str, Path]] = []
        for name, path in self._sensors:
            try:
                values[f"system.temperature.{name}.celsius"] = _read_milli(path)
            except (OSError, ValueError) as e:
                # one sensor failing costs that sensor only, reported once
                self.status.counters["temperature_sensors_dropped"] = (
                    self.status.counters.get("temperature_sensors_dropped", 0) + 1
                )
                self._notes.append(f"temperature {name}: {_why(e)}; no longer read")
                self._update_reason()
                continue
            keep.append((name, path))
        self._sensors = keep
        if not keep:
            raise ValueError("no temperature sensor left")
        return values

    # -- helpers -----------------------------------------------------------------------------------------------

    def _select_devices(self) -> None:
        """Fix at the start which disks and interfaces are summed, so that the totals stay comparable."""
        disks = _physical(self.sysfs / "block")
        if disks:
            self._disks = disks
        else:
            self._disks = None
            self._notes.append(f"disk: no physical disk in {self.sysfs}/block; summing psutil's whole-disk devices")
        nics = _physical(self.sysfs / "class" / "net")
        if not nics:
            # e.g. the runner's own network namespace in a container: only veth and loopback
            try:
                nics = sorted(n for n in psutil.net_io_counters(pernic=True, nowrap=False) if n != "lo")
            except _PROBLEMS:
                nics = []
        self._nics = nics

    def _drop(self, group: str, why: str) -> None:
        self._groups = [(g, r) for g, r in self._groups if g != group]
        self.status.counters[f"{group}_errors"] = self.status.counters.get(f"{group}_errors", 0) + 1
        self._notes.append(f"{group}: {why}; no longer read")
        self._update_reason()

    def _update_reason(self) -> None:
        self.status.reason = "; ".join(self._notes)

    def _restore_procfs(self) -> None:
        if self._saved_procfs is not None and self._procfs == psutil.PROCFS_PATH:
            psutil.PROCFS_PATH = self._saved_procfs
        self._saved_procfs = None


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


_DISK_METRICS = (
    "system.disk.read_bytes_total",
    "system.disk.write_bytes_total",
    "system.disk.read_ops_total",
    "system.disk.write_ops_total",
)
_NET_METRICS = (
    "system.net.rx_bytes_total",
    "system.net.tx_bytes_total",
    "system.net.rx_packets_total",
    "system.net.tx_packets_total",
)


def _summed(per_device: Mapping[str, Sequence[int]], names: Sequence[str]) -> Dict[str, float]:
    """Per-device running totals summed over devices, one metric per position in the totals."""
    return {name: float(sum(totals[i] for totals in per_device.values())) for i, name in enumerate(names)}
