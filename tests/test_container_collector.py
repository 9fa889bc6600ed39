"""The ``container`` collector: recorded cgroup trees of both versions and both Docker drivers (tests/data/cgroup,
tests/data/proc-container; provenance in tests/data/cgroup/README.md), then known loads on the real engine."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import docker
import pytest

from profiler.cgroups import CgroupV1, CgroupV2, find_cgroup, parse_proc_cgroup
from profiler.collectors import collector_class
from profiler.collectors.base import RunContext, Sample, Unavailable
from profiler.collectors.container import CATALOG, ContainerCollector, parse_net_dev

DATA = Path(__file__).resolve().parent / "data"
CGROUP = DATA / "cgroup"
PROC = DATA / "proc-container"
MiB = 2**20

# layout -> (container id, pid), as recorded
LAYOUTS: Dict[str, Tuple[str, int]] = {
    "v1-cgroupfs": ("c77f1ee0819b794175cdea70641dc1975eb382d17343063f43f3783903e1cf33", 12610),
    "v1-systemd": ("94055caeba4c4ed51768dcc398ac933544baa24a990b5ffbc3e5ec47a0182579", 12908),
    "v2-systemd": ("296c5c68cd025209a20fe04422415d55c810ef68d956af77cb704ed20c22a0c6", 4242),
    "v2-cgroupfs": ("c77f1ee0819b794175cdea70641dc1975eb382d17343063f43f3783903e1cf33", 12610),
}

NET_V1_CGROUPFS = {
    "container.net.rx_bytes_total": 4430.0,
    "container.net.rx_packets_total": 17.0,
    "container.net.tx_bytes_total": 52184.0,
    "container.net.tx_packets_total": 52.0,
    "container.net.rx_errors_total": 0.0,
    "container.net.tx_errors_total": 0.0,
    "container.net.rx_dropped_total": 0.0,
    "container.net.tx_dropped_total": 0.0,
}

# Expected first samples, worked out by hand from the recorded files.
EXPECTED: Dict[str, Dict[str, float]] = {
    "v1-cgroupfs": {
        "container.cpu.usage_seconds_total": 3.075382527,  # cpuacct.usage
        "container.cpu.limit_cores": 0.5,  # 50000 / 100000
        "container.cpu.periods_total": 64.0,
        "container.cpu.throttled_periods_total": 60.0,
        "container.cpu.throttled_seconds_total": 2.949495727,
        "container.memory.usage_bytes": 133296128.0,
        "container.memory.working_set_bytes": 133296128.0 - 22179840.0,  # - total_inactive_file
        "container.memory.peak_bytes": 177741824.0,  # max_usage_in_bytes
        "container.memory.limit_bytes": 268435456.0,  # hierarchical_memory_limit
        "container.memory.rss_bytes": 110039040.0,
        "container.memory.cache_bytes": 22249472.0,
        "container.pids.current": 4.0,
        "container.pids.limit": 64.0,
        "container.blkio.read_bytes_total": 23150592.0,
        "container.blkio.write_bytes_total": 33591296.0,
        **NET_V1_CGROUPFS,
    },
    "v1-systemd": {
        "container.cpu.usage_seconds_total": 3.050446356,
        "container.cpu.limit_cores": 0.5,
        "container.cpu.periods_total": 62.0,
        "container.cpu.throttled_periods_total": 60.0,
        "container.cpu.throttled_seconds_total": 2.887308496,
        "container.memory.usage_bytes": 128286720.0,
        "container.memory.working_set_bytes": 128286720.0 - 21954560.0,
        "container.memory.peak_bytes": 173277184.0,
        "container.memory.limit_bytes": 268435456.0,
        "container.memory.rss_bytes": 105959424.0,
        "container.memory.cache_bytes": 21966848.0,
        "container.pids.current": 4.0,
        "container.pids.limit": 64.0,
        "container.blkio.read_bytes_total": 23068672.0,
        "container.blkio.write_bytes_total": 33583104.0,
        **NET_V1_CGROUPFS,
        "container.net.rx_bytes_total": 4514.0,
        "container.net.rx_packets_total": 19.0,
    },
    "v2-systemd": {
        "container.cpu.usage_seconds_total": 528.946079,  # usage_usec
        "container.cpu.limit_cores": 2.5,  # cpu.max 250000 100000
        "container.cpu.periods_total": 2914.0,
        "container.cpu.throttled_periods_total": 222.0,
        "container.cpu.throttled_seconds_total": 2.261444,
        "container.memory.usage_bytes": 2766684160.0,  # memory.current
        "container.memory.working_set_bytes": 2766684160.0 - 42106880.0,  # - inactive_file
        "container.memory.peak_bytes": 2766684160.0,  # no memory.peak (Linux 5.15): the largest usage seen
        "container.memory.rss_bytes": 2147508224.0,  # anon
        "container.memory.cache_bytes": 590389248.0,  # file
        "container.pids.current": 14.0,
        "container.blkio.read_bytes_total": 40824832.0,
        "container.blkio.write_bytes_total": 824999936.0,
        # memory.max and pids.max say "max": no limit metrics; no net/dev recorded: no network metrics
    },
    "v2-cgroupfs": {
        # a cgroup2 folder with no controller enabled: the core cpu.stat only
        "container.cpu.usage_seconds_total": 3.075382,
        **NET_V1_CGROUPFS,
    },
}


def context(
    layout: str, *, root: Optional[Path] = None, pid: Optional[int] = None, cid: Optional[str] = None
) -> RunContext:
    base = root if root is not None else DATA
    rec_cid, rec_pid = LAYOUTS[layout]
    return RunContext(
        run_id="test",
        container_id=rec_cid if cid is None else cid,
        container_pid=rec_pid if pid is None else pid,
        run_dir=Path("/nonexistent/run"),
        output_dir=Path("/nonexistent/output"),
        interval_s=1.0,
        proc=base / "proc-container" / layout,
        sys_fs_cgroup=base / "cgroup" / layout,
    )


def started(ctx: RunContext) -> ContainerCollector:
    collector = ContainerCollector()
    pushed: List[Sample] = []
    collector.start(ctx, pushed.append)
    assert pushed == []  # a polled collector pushes nothing
    return collector


@pytest.fixture
def copied(tmp_path: Path) -> Path:
    """A writable copy of the recorded trees (tmp_path/cgroup, tmp_path/proc-container)."""
    shutil.copytree(CGROUP, tmp_path / "cgroup")
    shutil.copytree(PROC, tmp_path / "proc-container")
    return tmp_path


def cgroup_file(root: Path, layout: str, controller: str, name: str) -> Path:
    cid = LAYOUTS[layout][0]
    rel = f"system.slice/docker-{cid}.scope" if "systemd" in layout else f"docker/{cid}"
    folder = root / "cgroup" / layout
    if layout.startswith("v1"):
        folder = folder / controller
    return folder / rel / name


# -- recorded trees ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_recorded_tree_first_sample(layout: str) -> None:
    collector = started(context(layout))
    values = collector.sample(1_000_000_000)
    assert values is not None
    assert dict(values) == pytest.approx(EXPECTED[layout], rel=1e-12)
    assert "container.cpu.usage_percent" not in values  # the first sample has no rate, not a fake 0


@pytest.mark.parametrize(
    ("layout", "version", "folder"),
    [
        ("v1-cgroupfs", 1, "memory/docker/"),
        ("v1-systemd", 1, "memory/system.slice/docker-"),
        ("v2-systemd", 2, "v2-systemd/system.slice/docker-"),
        ("v2-cgroupfs", 2, "v2-cgroupfs/docker/"),
    ],
)
def test_cgroup_found_from_proc(layout: str, version: int, folder: str) -> None:
    ctx = context(layout)
    cgroup = find_cgroup(ctx.container_pid, ctx.container_id, proc=ctx.proc, sys_fs_cgroup=ctx.sys_fs_cgroup)
    assert cgroup.version == version
    assert isinstance(cgroup, CgroupV1 if version == 1 else CgroupV2)
    assert folder in cgroup.describe()


def test_hybrid_host_prefers_v1() -> None:
    # the recorded v1 host is hybrid: /proc/<pid>/cgroup has a 0:: line and unified/docker/<id> exists, but the
    # memory and cpu controllers live in the v1 hierarchies
    ctx = context("v1-cgroupfs")
    v1, v2 = parse_proc_cgroup((ctx.proc / str(ctx.container_pid) / "cgroup").read_text())
    assert v2 is not None and v2.startswith("/docker/")
    assert {"cpu", "cpuacct", "memory", "pids", "blkio", "name=systemd"} <= set(v1)
    cgroup = find_cgroup(ctx.container_pid, ctx.container_id, proc=ctx.proc, sys_fs_cgroup=ctx.sys_fs_cgroup)
    assert isinstance(cgroup, CgroupV1)
    assert set(cgroup.dirs) == {"cpu", "cpuacct", "memory", "pids", "blkio"}


def test_combined_cpu_cpuacct_mount(copied: Path) -> None:
    # most distributions mount cpu and cpuacct together as "cpu,cpuacct" (with cpu and cpuacct symlinks that a
    # copied /sys/fs/cgroup may lack); /proc names the hierarchy, so the folder is found either way
    root = copied / "cgroup" / "v1-cgroupfs"
    combined = root / "cpu,cpuacct"
    shutil.copytree(root / "cpu", combined)
    shutil.copytree(root / "cpuacct", combined, dirs_exist_ok=True)
    shutil.rmtree(root / "cpu")
    shutil.rmtree(root / "cpuacct")
    cgroup_path = copied / "proc-container" / "v1-cgroupfs" / "12610" / "cgroup"
    lines = cgroup_path.read_text().splitlines()
    lines = [ln for ln in lines if ":cpu:" not in ln and ":cpuacct:" not in ln]
    cgroup_path.write_text("\n".join([*lines, f"1:cpu,cpuacct:/docker/{LAYOUTS['v1-cgroupfs'][0]}", ""]))
    values = started(context("v1-cgroupfs", root=copied)).sample(1)
    assert values is not None
    assert values["container.cpu.usage_seconds_total"] == pytest.approx(3.075382527)
    assert values["container.cpu.throttled_periods_total"] == 60.0


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_found_by_container_id_when_pid_not_visible(layout: str) -> None:
    # the runner in another PID namespace: no pid, but the host's cgroup tree is mounted
    collector = started(context(layout, pid=0))
    values = collector.sample(1)
    assert values is not None
    assert values["container.cpu.usage_seconds_total"] == EXPECTED[layout]["container.cpu.usage_seconds_total"]
    # v1 and v2-cgroupfs list the recorded pid in cgroup.procs, so the network is still found through it
    assert ("container.net.rx_bytes_total" in values) == (layout != "v2-systemd")


def test_short_container_id() -> None:
    cid = LAYOUTS["v1-systemd"][0][:12]
    values = started(context("v1-systemd", pid=0, cid=cid)).sample(1)
    assert values is not None
    assert values["container.memory.usage_bytes"] == 128286720.0


def test_other_cgroup_namespace_falls_back_to_id(copied: Path) -> None:
    # read from a runner with its own cgroup namespace, /proc paths start with /.. and are not under the mount
    cgroup_path = copied / "proc-container" / "v1-cgroupfs" / "12610" / "cgroup"
    cid = LAYOUTS["v1-cgroupfs"][0]
    cgroup_path.write_text(
        "".join(f"{n}:{c}:/../docker/{cid}\n" for n, c in enumerate(("cpu", "cpuacct", "memory", "pids"), 1))
    )
    values = started(context("v1-cgroupfs", root=copied)).sample(1)
    assert values is not None
    assert values["container.memory.usage_bytes"] == 133296128.0


def test_unavailable_says_how_to_fix(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "cgroup").mkdir()
    ctx = RunContext(
        run_id="test",
        container_id="f" * 64,
        container_pid=0,
        run_dir=tmp_path,
        output_dir=tmp_path,
        interval_s=1.0,
        proc=tmp_path / "proc",
        sys_fs_cgroup=tmp_path / "cgroup",
    )
    with pytest.raises(Unavailable, match=r"ffffffffffff.*--pid host.*/sys/fs/cgroup"):
        ContainerCollector().start(ctx, lambda s: None)


def test_an_app_that_already_ended_is_named_as_the_reason_not_the_setup(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "cgroup").mkdir()
    asked: List[bool] = []

    def ended() -> bool:
        asked.append(True)
        return True

    ctx = RunContext(run_id="test", container_id="f" * 64, container_pid=0, run_dir=tmp_path, output_dir=tmp_path,
                     interval_s=1.0, proc=tmp_path / "proc", sys_fs_cgroup=tmp_path / "cgroup", app_ended=ended)
    with pytest.raises(Unavailable, match=r"^the app ended before its container could be measured") as e:
        ContainerCollector().start(ctx, lambda s: None)
    assert "--pid host" not in str(e.value) and asked == [True]


@pytest.mark.parametrize(
    ("layout", "controller", "name", "old", "new", "percent"),
    [
        # cpuacct.usage in ns: +0.5 s of CPU over 1 s of samples = half a core
        ("v1-cgroupfs", "cpuacct", "cpuacct.usage", "3075382527", "3575382527", 50.0),
        ("v1-systemd", "cpuacct", "cpuacct.usage", "3050446356", "4550446356", 150.0),
        # cpu.stat usage_usec: +2 s over 1 s = two cores
        ("v2-systemd", "", "cpu.stat", "usage_usec 528946079", "usage_usec 530946079", 200.0),
        ("v2-cgroupfs", "", "cpu.stat", "usage_usec 3075382", "usage_usec 3175382", 10.0),
    ],
)
def test_rate_from_two_samples(
    copied: Path, layout: str, controller: str, name: str, old: str, new: str, percent: float
) -> None:
    collector = started(context(layout, root=copied))
    first = collector.sample(10_000_000_000)
    assert first is not None and "container.cpu.usage_percent" not in first
    path = cgroup_file(copied, layout, controller, name)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    second = collector.sample(11_000_000_000)  # the rate uses the sample timestamps: 1 s apart
    assert second is not None
    assert second["container.cpu.usage_percent"] == pytest.approx(percent)
    third = collector.sample(13_000_000_000)  # nothing used since: 0 %, a real zero
    assert third is not None and third["container.cpu.usage_percent"] == 0.0


def test_no_rate_across_a_counter_reset_or_a_clock_step_back(copied: Path) -> None:
    collector = started(context("v1-cgroupfs", root=copied))
    assert collector.sample(10_000_000_000) is not None
    path = cgroup_file(copied, "v1-cgroupfs", "cpuacct", "cpuacct.usage")
    path.write_text("1000\n")  # a new cgroup under the same name (restart) starts from zero
    values = collector.sample(11_000_000_000)
    assert values is not None and "container.cpu.usage_percent" not in values
    values = collector.sample(10_500_000_000)  # the wall clock stepped back
    assert values is not None and "container.cpu.usage_percent" not in values


def test_peak_without_memory_peak_is_the_largest_usage_seen(copied: Path) -> None:
    collector = started(context("v2-systemd", root=copied))
    path = cgroup_file(copied, "v2-systemd", "", "memory.current")
    peaks = []
    for usage in (1000, 5000, 3000):
        path.write_text(f"{usage}\n")
        values = collector.sample(time.time_ns())
        assert values is not None
        peaks.append(values["container.memory.peak_bytes"])
    assert peaks == [1000.0, 5000.0, 5000.0]
    # the kernel's own peak wins when it exists (it also sees spikes between samples)
    (path.parent / "memory.peak").write_text("4096\n")
    values = started(context("v2-systemd", root=copied)).sample(1)
    assert values is not None and values["container.memory.peak_bytes"] == 4096.0


def test_unlimited_limits_are_left_out(copied: Path) -> None:
    layout = "v1-cgroupfs"
    cgroup_file(copied, layout, "cpu", "cpu.cfs_quota_us").write_text("-1\n")
    cgroup_file(copied, layout, "pids", "pids.max").write_text("max\n")
    stat = cgroup_file(copied, layout, "memory", "memory.stat")
    stat.write_text(stat.read_text().replace("hierarchical_memory_limit 268435456", "hierarchical_memory_limit "
                                             "9223372036854771712"))
    values = started(context(layout, root=copied)).sample(1)
    assert values is not None
    for name in ("container.cpu.limit_cores", "container.pids.limit", "container.memory.limit_bytes"):
        assert name not in values
    assert values["container.pids.current"] == 4.0


def test_v1_blkio_without_devices_is_unknown_not_zero(copied: Path) -> None:
    # recent kernels keep v1 blkio counters at "Total 0" on devices that never had a throttle rule
    cgroup_file(copied, "v1-cgroupfs", "blkio", "blkio.throttle.io_service_bytes_recursive").write_text("Total 0\n")
    values = started(context("v1-cgroupfs", root=copied)).sample(1)
    assert values is not None
    assert "container.blkio.read_bytes_total" not in values
    assert "container.blkio.write_bytes_total" not in values


def test_v2_empty_io_stat_is_zero(copied: Path) -> None:
    cgroup_file(copied, "v2-systemd", "", "io.stat").write_text("")
    values = started(context("v2-systemd", root=copied)).sample(1)
    assert values is not None
    assert values["container.blkio.read_bytes_total"] == 0.0


def test_missing_files_cost_only_their_metrics(copied: Path) -> None:
    for name in ("memory.stat", "pids.current", "pids.max", "cpu.max", "io.stat"):
        cgroup_file(copied, "v2-systemd", "", name).unlink()
    values = started(context("v2-systemd", root=copied)).sample(1)
    assert values is not None
    assert values["container.memory.usage_bytes"] == 2766684160.0
    assert values["container.cpu.throttled_periods_total"] == 222.0
    for name in ("container.memory.working_set_bytes", "container.memory.rss_bytes", "container.pids.current",
                 "container.cpu.limit_cores", "container.blkio.read_bytes_total"):
        assert name not in values


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_vanished_cgroup_returns_none(copied: Path, layout: str) -> None:
    collector = started(context(layout, root=copied))
    assert collector.sample(1_000_000_000) is not None
    root = copied / "cgroup" / layout
    for folder in [p for p in root.rglob("*") if p.is_dir() and LAYOUTS[layout][0] in p.name]:
        shutil.rmtree(folder)
    assert collector.sample(2_000_000_000) is None  # and no exception: the run goes on
    assert collector.sample(3_000_000_000) is None


def test_net_dev_parsing() -> None:
    data = (
        b"Inter-|   Receive                                                |  Transmit\n"
        b" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls "
        b"carrier compressed\n"
        b"    lo: 9999999 99 0 0 0 0 0 0 9999999 99 0 0 0 0 0 0\n"
        b"  eth0:123456789012 1000 1 2 0 0 0 0 987654321 900 3 4 0 0 0 0\n"  # the number touches the colon
        b"  eth1:       10       1    0    0    0     0          0         0       20       2    0    0    0     0  "
        b"     0          0\n"
    )
    assert parse_net_dev(data) == {
        "container.net.rx_bytes_total": 123456789022.0,
        "container.net.rx_packets_total": 1001.0,
        "container.net.rx_errors_total": 1.0,
        "container.net.rx_dropped_total": 2.0,
        "container.net.tx_bytes_total": 987654341.0,
        "container.net.tx_packets_total": 902.0,
        "container.net.tx_errors_total": 3.0,
        "container.net.tx_dropped_total": 4.0,
    }


def test_host_network_is_not_counted_as_the_containers(copied: Path) -> None:
    proc = copied / "proc-container" / "v1-cgroupfs"
    for pid in ("12610", "1"):
        (proc / pid / "ns").mkdir(parents=True)
        os.symlink("net:[4026531840]", proc / pid / "ns" / "net")
    collector = started(context("v1-cgroupfs", root=copied))
    values = collector.sample(1)
    assert values is not None
    assert not any(name.startswith("container.net.") for name in values)
    assert "--network host" in collector.status.reason


def test_catalog_covers_every_metric_and_registry_finds_the_class() -> None:
    assert collector_class("container") is ContainerCollector
    names = {info.name for info in CATALOG}
    assert len(names) == len(CATALOG)
    for info in CATALOG:
        assert info.name.startswith("container.") and info.name == info.name.lower()
        assert info.kind in ("gauge", "counter")
        assert info.kind != "counter" or info.name.endswith("_total")
    emitted = set()
    for layout in LAYOUTS:
        emitted |= set(EXPECTED[layout])
    emitted.add("container.cpu.usage_percent")
    assert emitted == names


# -- the real engine ----------------------------------------------------------------------------------------------


@pytest.fixture
def run_container(docker_client: docker.DockerClient, base_image: str) -> Iterator[Any]:
    """Start containers from the base image; every one is force-removed afterwards."""
    made: List[Any] = []

    def run(code: str, **kwargs: Any) -> Any:
        container = docker_client.containers.run(
            base_image, ["python3", "-c", code], detach=True, labels={"waap.test": "container-collector"}, **kwargs
        )
        made.append(container)
        container.reload()
        return container

    try:
        yield run
    finally:
        for container in made:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


def live_context(container: Any, *, pid: Optional[int] = None) -> RunContext:
    return RunContext(
        run_id="test",
        container_id=container.id,
        container_pid=int(container.attrs["State"]["Pid"]) if pid is None else pid,
        run_dir=Path("/nonexistent/run"),
        output_dir=Path("/nonexistent/output"),
        interval_s=0.25,
    )


def sample_for(collector: ContainerCollector, seconds: float, interval_s: float = 0.25) -> List[Mapping[str, float]]:
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        values = collector.sample(time.time_ns())
        assert values is not None
        samples.append(values)
        time.sleep(interval_s)
    return samples


def wait_for_log(container: Any, text: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in container.logs().decode(errors="replace"):
            return
        container.reload()
        assert container.status == "running", container.logs().decode(errors="replace")
        time.sleep(0.1)
    pytest.fail(f"the container did not print {text!r} within {timeout_s} s")


@pytest.mark.docker
def test_live_one_busy_core_reads_100_percent(run_container: Any) -> None:
    container = run_container("while True: pass")
    collector = started(live_context(container))
    time.sleep(0.5)  # past the interpreter's start
    samples = sample_for(collector, 3.0)
    rates = [s["container.cpu.usage_percent"] for s in samples if "container.cpu.usage_percent" in s]
    assert len(rates) >= 8
    assert statistics.median(rates) == pytest.approx(100.0, abs=10.0), rates
    assert samples[-1]["container.pids.current"] >= 1


@pytest.mark.docker
def test_live_200_mib_reads_200_mib_working_set(run_container: Any) -> None:
    # touch every page so the memory is really resident, then hold it
    code = (
        "import time\n"
        "b = bytearray(200 * 2**20)\n"
        "b[::4096] = b'\\x01' * len(range(0, len(b), 4096))\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    container = run_container(code)
    wait_for_log(container, "ready")
    collector = started(live_context(container))
    samples = sample_for(collector, 1.0)
    working_set = statistics.median(s["container.memory.working_set_bytes"] for s in samples)
    assert working_set == pytest.approx(200 * MiB, rel=0.10), working_set / MiB
    assert samples[-1]["container.memory.rss_bytes"] >= 200 * MiB
    assert samples[-1]["container.memory.peak_bytes"] >= working_set


@pytest.mark.docker
def test_live_limits_and_network(run_container: Any) -> None:
    container = run_container("import time; time.sleep(120)", mem_limit="256m", nano_cpus=500_000_000, pids_limit=64)
    values = started(live_context(container)).sample(time.time_ns())
    assert values is not None
    assert values["container.memory.limit_bytes"] == 256 * MiB
    assert values["container.cpu.limit_cores"] == 0.5
    assert values["container.pids.limit"] == 64.0
    assert "container.net.rx_bytes_total" in values  # the default bridge network: its own namespace


@pytest.mark.docker
def test_live_found_by_id_when_pid_is_not_visible(run_container: Any) -> None:
    container = run_container("import time; time.sleep(120)")
    collector = started(live_context(container, pid=0))
    values = collector.sample(time.time_ns())
    assert values is not None and values["container.memory.usage_bytes"] > 0


@pytest.mark.docker
def test_live_container_removed_between_samples(run_container: Any) -> None:
    container = run_container("import time; time.sleep(120)")
    collector = started(live_context(container))
    assert collector.sample(time.time_ns()) is not None
    container.remove(force=True)
    assert collector.sample(time.time_ns()) is None
    collector.stop()


