"""``container``: the app container's CPU, memory, pids, block IO and network, read straight from its cgroup
(v1 or v2, cgroupfs or systemd driver; see ``profiler.cgroups``) and from ``/proc/<pid>/net/dev`` of its init process.

Not the Docker stats API: without ``one-shot`` that call waits 1-2 s for two readings, and even one-shot goes
through the engine. One ``sample()`` here opens about ten small files: about 0.1 ms (``bench/sample_cost.py``).
Both roots come from the ``RunContext`` (``proc``, ``sys_fs_cgroup``), so tests read recorded trees.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from ..cgroups import Cgroup, CgroupGone, CgroupNotFound, CgroupReading, find_cgroup, first_visible_pid, read_file
from .base import Collector, MetricInfo, RunContext, SampleSink, Unavailable

__all__ = ["CATALOG", "ContainerCollector", "parse_net_dev"]

CATALOG: Tuple[MetricInfo, ...] = (
    MetricInfo(
        "container.cpu.usage_percent",
        "percent",
        "gauge",
        "CPU time the container's processes used per wall-clock time since the previous sample, in percent of one "
        "core (100 = one full core, 200 = two); absent from the first sample",
    ),
    MetricInfo(
        "container.cpu.usage_seconds_total",
        "seconds",
        "counter",
        "CPU time (user + system, all cores) since the container started: v1 cpuacct.usage, v2 cpu.stat usage_usec",
    ),
    MetricInfo(
        "container.cpu.limit_cores",
        "cores",
        "gauge",
        "the CFS quota in cores (docker --cpus): v1 cpu.cfs_quota_us / cpu.cfs_period_us, v2 cpu.max; absent when "
        "there is no quota",
    ),
    MetricInfo(
        "container.cpu.periods_total",
        "periods",
        "counter",
        "CFS enforcement periods that elapsed while the container had runnable tasks (only with a quota)",
    ),
    MetricInfo(
        "container.cpu.throttled_periods_total",
        "periods",
        "counter",
        "periods in which the container used up its quota and was stopped until the next period",
    ),
    MetricInfo(
        "container.cpu.throttled_seconds_total",
        "seconds",
        "counter",
        "time the container's tasks spent throttled (v1 cpu.stat throttled_time, v2 throttled_usec)",
    ),
    MetricInfo(
        "container.memory.usage_bytes",
        "bytes",
        "gauge",
        "memory charged to the container, page cache included: v1 memory.usage_in_bytes, v2 memory.current",
    ),
    MetricInfo(
        "container.memory.working_set_bytes",
        "bytes",
        "gauge",
        "usage minus inactive file pages (v1 total_inactive_file, v2 inactive_file of memory.stat), as kubelet and "
        "cAdvisor define the working set: what the kernel cannot reclaim without IO; what OOM decisions look at",
    ),
    MetricInfo(
        "container.memory.peak_bytes",
        "bytes",
        "gauge",
        "the highest usage so far: v1 memory.max_usage_in_bytes, v2 memory.peak (Linux 5.19+); on older v2 "
        "kernels the highest usage this collector saw (sampled, so a spike between samples is missed)",
    ),
    MetricInfo(
        "container.memory.limit_bytes",
        "bytes",
        "gauge",
        "the memory limit (docker --memory; v1: the smallest along the cgroup's ancestors); absent when unlimited",
    ),
    MetricInfo(
        "container.memory.rss_bytes",
        "bytes",
        "gauge",
        "anonymous memory (heap, stacks, private mappings; v1 total_rss, v2 anon)",
    ),
    MetricInfo(
        "container.memory.cache_bytes",
        "bytes",
        "gauge",
        "page cache charged to the container (files read or written, tmpfs; v1 total_cache, v2 file)",
    ),
    MetricInfo("container.pids.current", "tasks", "gauge", "processes and threads in the container (pids.current)"),
    MetricInfo(
        "container.pids.limit", "tasks", "gauge", "the pids limit (docker --pids-limit); absent when unlimited"
    ),
    MetricInfo(
        "container.blkio.read_bytes_total",
        "bytes",
        "counter",
        "bytes the container read from block devices (page-cache hits are not IO): v2 io.stat rbytes, v1 "
        "blkio.throttle.io_service_bytes_recursive; absent on v1 while that file lists no device (recent kernels "
        "count v1 block IO only on devices that have had a throttle rule)",
    ),
    MetricInfo(
        "container.blkio.write_bytes_total",
        "bytes",
        "counter",
        "bytes the container wrote to block devices; on v1 only what its own tasks submit (its fsync, direct IO): "
        "buffered writes flushed later by the kernel's writeback threads are charged to the root cgroup there, "
        "while v2 charges them to the container",
    ),
    MetricInfo(
        "container.net.rx_bytes_total",
        "bytes",
        "counter",
        "bytes received on the container's network interfaces (its own network namespace, loopback excluded; "
        "absent with --network host, where they would be the host's)",
    ),
    MetricInfo("container.net.tx_bytes_total", "bytes", "counter", "bytes sent on the container's interfaces"),
    MetricInfo(
        "container.net.rx_packets_total", "packets", "counter", "packets received on the container's interfaces"
    ),
    MetricInfo("container.net.tx_packets_total", "packets", "counter", "packets sent on the container's interfaces"),
    MetricInfo(
        "container.net.rx_dropped_total", "packets", "counter", "received packets dropped (e.g. full socket buffers)"
    ),
    MetricInfo("container.net.tx_dropped_total", "packets", "counter", "packets dropped before sending"),
    MetricInfo("container.net.rx_errors_total", "packets", "counter", "receive errors on the container's interfaces"),
    MetricInfo("container.net.tx_errors_total", "packets", "counter", "transmit errors on the container's interfaces"),
)

_NET_NAMES = (
    # (field index after "iface:", metric): receive bytes packets errs drop ... | transmit bytes packets errs drop ...
    (0, "container.net.rx_bytes_total"),
    (1, "container.net.rx_packets_total"),
    (2, "container.net.rx_errors_total"),
    (3, "container.net.rx_dropped_total"),
    (8, "container.net.tx_bytes_total"),
    (9, "container.net.tx_packets_total"),
    (10, "container.net.tx_errors_total"),
    (11, "container.net.tx_dropped_total"),
)


def _same_netns(a: Path, b: Path) -> bool:
    """Whether two /proc/<pid> entries share a network namespace (False when either link cannot be read)."""
    try:
        return os.readlink(a / "ns" / "net") == os.readlink(b / "ns" / "net")
    except OSError:
        return False


def parse_net_dev(data: bytes) -> Dict[str, float]:
    """Totals over every interface but loopback, from ``/proc/<pid>/net/dev`` (two header lines, then
    ``name: 16 numbers``; a large first number touches the colon, so split on it rather than on spaces)."""
    totals = [0] * 12
    for line in data.split(b"\n")[2:]:
        name, colon, rest = line.partition(b":")
        if not colon or name.strip() == b"lo":
            continue
        fields = rest.split()
        if len(fields) < 12:
            continue
        for i in range(12):
            totals[i] += int(fields[i])
    return {metric: float(totals[i]) for i, metric in _NET_NAMES}


class ContainerCollector(Collector):
    """Polled cgroup and network counters of the app container. ``start`` raises ``Unavailable`` when the cgroup
    cannot be found (the runner in another PID namespace and without the host's cgroup tree); once found, a sample
    taken after the container vanished returns None and the run goes on."""

    name = "container"
    catalog = CATALOG
    source_description = (
        "the app container's cgroup files (v1 cpu, cpuacct, memory, pids, blkio; v2 cpu.stat, cpu.max, memory.*, "
        "pids.*, io.stat) and /proc/<pid>/net/dev of its init process; not the Docker stats API"
    )

    def __init__(self) -> None:
        super().__init__()
        self.cgroup: Optional[Cgroup] = None
        self._net_dev: Optional[str] = None
        self._prev_cpu: Optional[Tuple[int, int]] = None  # (ts_ns, usage_ns) of the previous sample
        self._peak_seen = 0
        self._notes: List[str] = []

    def start(self, ctx: RunContext, sink: SampleSink) -> None:
        try:
            self.cgroup = find_cgroup(
                ctx.container_pid, ctx.container_id, proc=ctx.proc, sys_fs_cgroup=ctx.sys_fs_cgroup
            )
        except CgroupNotFound as e:
            if ctx.app_ended():
                raise Unavailable(
                    "the app ended before its container could be measured (it ran for less than a moment); "
                    "the system metrics cover the run"
                ) from e
            raise Unavailable(str(e)) from e
        self._notes.append(self.cgroup.describe())
        self._find_net_dev(ctx)
        self.status.reason = "; ".join(self._notes)

    def _find_net_dev(self, ctx: RunContext) -> None:
        pid = first_visible_pid(self.cgroup, ctx.proc, ctx.container_pid) if self.cgroup else None
        if pid is None:
            self._notes.append(
                f"network: no process of the container is visible in {ctx.proc} (run the profiler with --pid host)"
            )
            return
        if _same_netns(ctx.proc / str(pid), ctx.proc / "1"):
            self._notes.append(
                "network: the container shares the host's network namespace (--network host): its traffic is "
                "the host's, see system.net"
            )
            return
        net_dev = ctx.proc / str(pid) / "net" / "dev"
        if read_file(str(net_dev)) is None:
            self._notes.append(f"network: cannot read {net_dev}")
            return
        self._net_dev = str(net_dev)

    def sample(self, ts_ns: int) -> Optional[Mapping[str, float]]:
        if self.cgroup is None:
            return None
        try:
            r = self.cgroup.read()
        except CgroupGone:
            self._prev_cpu = None  # a cgroup that comes back (restart) starts its counters again
            return None
        values = self._values(ts_ns, r)
        if self._net_dev is not None:
            data = read_file(self._net_dev)
            if data is not None:  # the init process exited but the cgroup is still there: no network this time
                with contextlib.suppress(ValueError):  # a torn line: no network numbers this time
                    values.update(parse_net_dev(data))
        return self.finite(values)

    def _values(self, ts_ns: int, r: CgroupReading) -> Dict[str, Optional[float]]:
        values: Dict[str, Optional[float]] = {}
        if r.cpu_usage_ns is not None:
            values["container.cpu.usage_seconds_total"] = r.cpu_usage_ns / 1e9
            prev = self._prev_cpu
            self._prev_cpu = (ts_ns, r.cpu_usage_ns)
            if prev is not None:
                dt, used = ts_ns - prev[0], r.cpu_usage_ns - prev[1]
                if dt > 0 and used >= 0:  # a clock step back or a counter reset gives no rate this time
                    values["container.cpu.usage_percent"] = round(100.0 * used / dt, 3)
        values["container.cpu.limit_cores"] = r.cpu_limit_cores
        values["container.cpu.periods_total"] = r.cpu_periods
        values["container.cpu.throttled_periods_total"] = r.cpu_throttled_periods
        if r.cpu_throttled_ns is not None:
            values["container.cpu.throttled_seconds_total"] = r.cpu_throttled_ns / 1e9
        values["container.memory.usage_bytes"] = r.memory_usage
        values["container.memory.working_set_bytes"] = r.memory_working_set
        peak = r.memory_peak
        if peak is None and r.memory_usage is not None:
            self._peak_seen = max(self._peak_seen, r.memory_usage)
            peak = self._peak_seen
        values["container.memory.peak_bytes"] = peak
        values["container.memory.limit_bytes"] = r.memory_limit
        values["container.memory.rss_bytes"] = r.memory_rss
        values["container.memory.cache_bytes"] = r.memory_cache
        values["container.pids.current"] = r.pids_current
        values["container.pids.limit"] = r.pids_limit
        values["container.blkio.read_bytes_total"] = r.io_read_bytes
        values["container.blkio.write_bytes_total"] = r.io_write_bytes
        return values
