"""The ``system`` collector on a recorded /proc and /sys (tests/data/proc-host), plus one test on the live machine."""

from __future__ import annotations

import re
import shutil
import statistics
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from profiler.collectors import Unavailable, collector_class
from profiler.collectors.base import RunContext
from profiler.collectors.system import CATALOG, SystemCollector, find_temperature_sensors
from profiler.summary import MetricCatalog

DATA = Path(__file__).parent / "data" / "proc-host"
S = 1_000_000_000  # one second in ns


def context(tmp_path: Path, proc: Path = Path("/proc")) -> RunContext:
    return RunContext("r1", "c1", 0, run_dir=tmp_path, output_dir=tmp_path, interval_s=1.0, proc=proc)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Path]:
    """A writable copy of the recorded tree: <tmp>/proc (the t0 snapshot) and <tmp>/sys."""
    root = tmp_path / "host"
    shutil.copytree(DATA / "t0" / "proc", root / "proc")
    shutil.copytree(DATA / "sys", root / "sys")
    saved = psutil.PROCFS_PATH
    yield root
    psutil.PROCFS_PATH = saved  # a failing test must not leave psutil pointed at the recording


def started(host: Path, tmp_path: Path, **kwargs: object) -> SystemCollector:
    collector = SystemCollector(sysfs=host / "sys", **kwargs)  # type: ignore[arg-type]
    collector.start(context(tmp_path, host / "proc"), lambda s: None)
    return collector


def advance_to_t1(host: Path) -> None:
    for f in (DATA / "t1" / "proc").rglob("*"):
        if f.is_file():
            shutil.copy(f, host / "proc" / f.relative_to(DATA / "t1" / "proc"))


def test_registered_under_its_name() -> None:
    assert collector_class("system") is SystemCollector


def test_first_sample_has_levels_and_counters_but_no_rates(host: Path, tmp_path: Path) -> None:
    collector = started(host, tmp_path)
    values = collector.sample(1 * S)
    collector.stop()
    assert values is not None
    assert not [k for k in values if k.startswith("system.cpu.") and k.endswith("percent")]
    assert values["system.cpu.online_cores"] == 2
    assert values["system.memory.total_bytes"] == 24684084 * 1024
    assert values["system.memory.available_bytes"] == 24031128 * 1024
    assert values["system.memory.used_bytes"] == (24684084 - 24031128) * 1024
    assert values["system.swap.total_bytes"] == 0
    assert (values["system.load.1m"], values["system.load.5m"], values["system.load.15m"]) == (0.32, 0.55, 0.79)
    # only vda (loop0-7 and zram0 have no device in /sys/block): sectors of 512 bytes
    assert values["system.disk.read_bytes_total"] == 12107906 * 512
    assert values["system.disk.write_bytes_total"] == 25446224 * 512
    assert values["system.disk.read_ops_total"] == 290557
    assert values["system.disk.write_ops_total"] == 483626
    # only eth0: not lo, docker0, the veth, ifb0/1
    assert values["system.net.rx_bytes_total"] == 1172036521
    assert values["system.net.tx_bytes_total"] == 1636963
    assert values["system.net.rx_packets_total"] == 29192
    assert values["system.net.tx_packets_total"] == 16006


def test_cpu_percent_from_deltas_between_samples(host: Path, tmp_path: Path) -> None:
    collector = started(host, tmp_path)
    collector.sample(1 * S)
    advance_to_t1(host)
    values = collector.sample(2 * S)
    collector.stop()
    assert values is not None
    # t0: cpu  95461 0 34208 216993 2942 0 901 80 0 0 ; t1: cpu  95650 0 34210 217067 2944 0 901 80 0 0
    total = (95650 + 34210 + 217067 + 2944 + 901 + 80) - (95461 + 34208 + 216993 + 2942 + 901 + 80)
    idle = (217067 + 2944) - (216993 + 2942)
    assert values["system.cpu.percent"] == pytest.approx(100 * (total - idle) / total, abs=0.001)
    assert values["system.cpu.user_percent"] == pytest.approx(100 * (95650 - 95461) / total, abs=0.001)
    assert values["system.cpu.system_percent"] == pytest.approx(100 * 2 / total, abs=0.001)
    assert values["system.cpu.iowait_percent"] == pytest.approx(100 * 2 / total, abs=0.001)
    # cpu0: 37280 0 14401 122901 507 ... -> 37400 0 14401 122912 507: 120 busy of 131
    assert values["system.cpu.core.0.percent"] == pytest.approx(100 * 120 / 131, abs=0.001)
    # cpu1: busy 69 + 1 + 0, idle 63 + 1
    assert values["system.cpu.core.1.percent"] == pytest.approx(100 * 70 / 134, abs=0.001)
    assert values["system.disk.write_bytes_total"] == 25548624 * 512


def test_offline_core_keeps_the_others_names(host: Path, tmp_path: Path) -> None:
    """Jetson power modes take cores offline; /proc/stat then skips them, and core numbers must not shift."""
    stat = host / "proc" / "stat"
    collector = started(host, tmp_path)
    collector.sample(1 * S)
    advance_to_t1(host)
    later = [line for line in stat.read_text().splitlines() if not line.startswith("cpu0 ")]
    stat.write_text("\n".join(later) + "\n")
    values = collector.sample(2 * S)
    collector.stop()
    assert values is not None
    assert "system.cpu.core.0.percent" not in values
    assert values["system.cpu.core.1.percent"] == pytest.approx(100 * 70 / 134, abs=0.001)
    assert values["system.cpu.online_cores"] == 1


def test_counters_never_go_back(host: Path, tmp_path: Path) -> None:
    collector = started(host, tmp_path)
    first = collector.sample(1 * S)
    diskstats = host / "proc" / "diskstats"
    # vda's counters restart from small numbers (a wrap, or the device re-added)
    diskstats.write_text(re.sub(r"(?m)^(\s*254\s+0 vda) \d+ \d+ \d+", r"\1 5 0 8", diskstats.read_text()))
    second = collector.sample(2 * S)
    collector.stop()
    assert first is not None and second is not None
    assert second["system.disk.read_ops_total"] == first["system.disk.read_ops_total"] + 5
    assert second["system.disk.read_bytes_total"] == first["system.disk.read_bytes_total"] + 8 * 512


def test_temperatures_from_cached_sensor_paths() -> None:
    sensors = dict(find_temperature_sensors(DATA / "sys"))
    assert list(sensors) == [
        "coretemp_package_id_0",
        "coretemp_core_0",
        "coretemp_core_1",
        "acpitz",  # the only sensor of its hwmon, no label: the device name alone
        "nvme_composite",  # under hwmon2/device/
        "x86_pkg_temp",  # thermal zone without an hwmon twin
        "cpu_therm",  # Jetson-style zone type CPU-therm
    ]  # thermal_zone0 (acpitz) is hwmon1 again; PMIC-Die cannot be read; ina3221 has no temperature


def test_temperatures_read_at_most_every_interval(host: Path, tmp_path: Path) -> None:
    collector = started(host, tmp_path, temperature_interval_s=1.0)
    first = collector.sample(10 * S)
    soon = collector.sample(10 * S + S // 2)
    later = collector.sample(11 * S)
    collector.stop()
    assert first is not None and soon is not None and later is not None
    assert first["system.temperature.coretemp_package_id_0.celsius"] == 52.0
    assert first["system.temperature.nvme_composite.celsius"] == 38.85
    assert first["system.temperature.cpu_therm.celsius"] == 41.5
    assert not [k for k in soon if k.startswith("system.temperature.")]
    assert "system.temperature.acpitz.celsius" in later


def test_a_failing_sensor_costs_only_itself(host: Path, tmp_path: Path) -> None:
    collector = started(host, tmp_path, temperature_interval_s=0.0)
    collector.sample(1 * S)
    (host / "sys" / "class" / "hwmon" / "hwmon0" / "temp2_input").write_text("not a number\n")
    values = collector.sample(2 * S)
    again = collector.sample(3 * S)
    collector.stop()
    assert values is not None and again is not None
    assert "system.temperature.coretemp_core_0.celsius" not in values
    assert "system.temperature.coretemp_core_1.celsius" in again
    assert collector.status.status == "ok"
    assert collector.status.counters == {"temperature_sensors_dropped": 1}
    assert "coretemp_core_0" in collector.status.reason


def test_a_failing_group_costs_only_itself(host: Path, tmp_path: Path) -> None:
    collector = started(host, tmp_path)
    collector.sample(1 * S)
    (host / "proc" / "loadavg").unlink()
    values = collector.sample(2 * S)
    again = collector.sample(3 * S)
    collector.stop()
    assert values is not None and again is not None
    assert "system.load.1m" not in values and "system.load.1m" not in again
    assert "system.memory.total_bytes" in again
    assert collector.status.counters == {"load_errors": 1}
    assert "load:" in collector.status.reason


def test_missing_groups_at_start_are_reported(host: Path, tmp_path: Path) -> None:
    (host / "proc" / "diskstats").unlink()
    shutil.rmtree(host / "sys" / "class" / "hwmon")
    shutil.rmtree(host / "sys" / "class" / "thermal")
    shutil.rmtree(host / "sys" / "class" / "net")  # as in a container's own network namespace: all but lo
    collector = started(host, tmp_path)
    values = collector.sample(1 * S)
    collector.stop()
    assert values is not None
    assert collector.status.status == "ok"
    assert "temperature: no readable sensor" in collector.status.reason
    assert not [k for k in values if k.startswith("system.temperature.")]
    # lo left out: eth0 + docker0 + the two veths (ifb0/1 are zero)
    assert values["system.net.rx_bytes_total"] == 1172036521 + 447999 + 52142 + 0


def test_no_proc_means_unavailable_and_psutil_untouched(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    before = psutil.PROCFS_PATH
    collector = SystemCollector(sysfs=empty)
    with pytest.raises(Unavailable, match="cannot read"):
        collector.start(context(tmp_path, empty), lambda s: None)
    assert before == psutil.PROCFS_PATH


def test_psutil_root_is_restored_at_stop(host: Path, tmp_path: Path) -> None:
    before = psutil.PROCFS_PATH
    collector = started(host, tmp_path)
    assert str(host / "proc") == psutil.PROCFS_PATH
    collector.stop()
    assert before == psutil.PROCFS_PATH


def test_every_name_is_in_the_catalog(host: Path, tmp_path: Path) -> None:
    collector = started(host, tmp_path, temperature_interval_s=0.0)
    collector.sample(1 * S)
    advance_to_t1(host)
    values = collector.sample(2 * S)
    collector.stop()
    assert values is not None
    catalog = MetricCatalog(CATALOG)
    for name in values:
        assert re.fullmatch(r"system(\.[a-z0-9_]+)+", name), name
        info = catalog.info(name)
        assert info is not None, name
        assert info.kind == ("counter" if name.endswith("_total") else "gauge"), name
    for info in CATALOG:
        assert info.unit and info.meaning and info.kind in ("gauge", "counter")


def test_live_machine_and_cost(tmp_path: Path) -> None:
    """The real /proc and /sys: plausible values, and a sample costs well under a millisecond."""
    collector = SystemCollector()
    collector.start(context(tmp_path), lambda s: None)
    try:
        first = collector.sample(time.time_ns())
        time.sleep(0.1)
        second = collector.sample(time.time_ns())
        costs = []
        for _ in range(200):
            t = time.perf_counter()
            collector.sample(time.time_ns())
            costs.append(time.perf_counter() - t)
    finally:
        collector.stop()
    assert first is not None and second is not None
    assert "system.cpu.percent" not in first
    assert 0 <= second["system.cpu.percent"] <= 100
    assert second["system.cpu.online_cores"] == len(psutil.cpu_times(percpu=True))
    assert second["system.memory.total_bytes"] == psutil.virtual_memory().total
    assert 0 < second["system.memory.available_bytes"] <= second["system.memory.total_bytes"]
    median = statistics.median(costs)
    print(f"system collector sample(): median {median * 1e6:.0f} us, max {max(costs) * 1e6:.0f} us")
    assert median < 0.001
