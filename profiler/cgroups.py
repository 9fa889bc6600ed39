"""One container's resource counters read straight from its cgroup files, cgroup v1 or v2, not the Docker stats API.

``find_cgroup`` locates the cgroup of a process through ``/proc/<pid>/cgroup`` (or, when that process is not visible,
of a container id under the layouts Docker's ``cgroupfs`` and ``systemd`` drivers create); ``CgroupV1`` and
``CgroupV2`` turn each version's files into the same ``CgroupReading``. The split follows benchexec's
cgroups/cgroupsv1/cgroupsv2. Every path comes from the caller (``proc``, ``sys_fs_cgroup``), so tests read recorded
trees (tests/data/cgroup) instead of the live machine.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "Cgroup",
    "CgroupGone",
    "CgroupNotFound",
    "CgroupReading",
    "CgroupV1",
    "CgroupV2",
    "find_cgroup",
    "first_visible_pid",
    "parse_proc_cgroup",
    "read_file",
]

# v1 reports "no limit" as PAGE_COUNTER_MAX pages (0x7FFFFFFFFFFFF000 bytes on 64-bit kernels, other values on
# 32-bit and old kernels): any limit this large means none.
UNLIMITED_BYTES = 1 << 62
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio")
# v1 blkio byte counters, best first. The throttle files are filled by blk-throttle for every scheduler; the plain
# ones only by CFQ (gone since Linux 5.0).
_V1_BLKIO_FILES = (
    "blkio.throttle.io_service_bytes_recursive",
    "blkio.throttle.io_service_bytes",
    "blkio.io_service_bytes_recursive",
)


class CgroupNotFound(Exception):
    """No cgroup for the container under the given roots; the message lists where it looked and how to fix it."""


class CgroupGone(Exception):
    """The cgroup was there and is not any more: the container exited or was removed."""


@dataclass
class CgroupReading:
    """One reading of a cgroup. None means the kernel did not say (file or field missing), never zero."""

    cpu_usage_ns: Optional[int] = None
    cpu_periods: Optional[int] = None
    cpu_throttled_periods: Optional[int] = None
    cpu_throttled_ns: Optional[int] = None
    cpu_limit_cores: Optional[float] = None
    memory_usage: Optional[int] = None
    memory_working_set: Optional[int] = None
    memory_peak: Optional[int] = None  # None when the kernel keeps no peak (v2 before Linux 5.19)
    memory_limit: Optional[int] = None  # None when unlimited
    memory_rss: Optional[int] = None
    memory_cache: Optional[int] = None
    pids_current: Optional[int] = None
    pids_limit: Optional[int] = None  # None when unlimited
    io_read_bytes: Optional[int] = None
    io_write_bytes: Optional[int] = None


# -- small, fast file helpers (a sample reads ~10 files; pathlib and text decoding would double its cost) ------------


def read_file(path: str) -> Optional[bytes]:
    """The whole file, or None when it cannot be read (missing, or ENODEV once its cgroup was removed)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 16384)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _int(data: Optional[bytes]) -> Optional[int]:
    """A one-number file; None for missing files and for "max" (v2's word for no limit)."""
    if data is None:
        return None
    try:
        return int(data)
    except ValueError:
        return None


def _flat_keyed(data: Optional[bytes]) -> Dict[bytes, int]:
    """``key value`` lines (memory.stat, cpu.stat)."""
    out: Dict[bytes, int] = {}
    if data is None:
        return out
    for line in data.split(b"\n"):
        key, _, value = line.partition(b" ")
        if value:
            try:
                out[key] = int(value)
            except ValueError:
                continue
    return out


def _limit(value: Optional[int]) -> Optional[int]:
    return value if value is not None and 0 <= value < UNLIMITED_BYTES else None


def _working_set(usage: Optional[int], inactive_file: Optional[int]) -> Optional[int]:
    # kubelet/cAdvisor's definition: what the kernel could not reclaim without IO is the container's real footprint
    if usage is None or inactive_file is None:
        return None
    return max(0, usage - inactive_file)


def _exists(path: Path) -> bool:
    return os.path.exists(path)


class Cgroup(ABC):
    """One container's cgroup. ``read`` is called at every sample and must stay cheap (well under a millisecond)."""

    version: int

    @abstractmethod
    def read(self) -> CgroupReading:
        """The current counters. Raises ``CgroupGone`` when the cgroup no longer exists."""

    @abstractmethod
    def describe(self) -> str:
        """Where the numbers come from, for the manifest and error messages."""

    @abstractmethod
    def pids(self) -> List[int]:
        """The processes in the cgroup, as this process's PID namespace sees them (invisible ones are left out)."""

    _pids_current: Optional[str]
    _pids_max: Optional[str]

    def _read_pids(self, r: CgroupReading) -> None:
        """The pids controller's files are named alike in v1 and v2."""
        if self._pids_current:
            r.pids_current = _int(read_file(self._pids_current))
        if self._pids_max:
            r.pids_limit = _int(read_file(self._pids_max))

    @staticmethod
    def _pids_from(path: Path) -> List[int]:
        data = read_file(str(path))
        if not data:
            return []
        return [pid for pid in (int(x) for x in data.split()) if pid > 0]  # 0: a process outside our PID namespace


class CgroupV1(Cgroup):
    """cgroup v1: one directory per controller hierarchy (cpu, cpuacct, memory, pids, blkio), possibly mounted
    together (``cpu,cpuacct``). Which files exist is decided once, so a sample opens only files that are there."""

    version = 1

    def __init__(self, dirs: Mapping[str, Path]) -> None:
        self.dirs = dict(dirs)

        def file(controller: str, name: str) -> Optional[str]:
            folder = self.dirs.get(controller)
            if folder is None or not _exists(folder / name):
                return None
            return str(folder / name)

        self._usage = file("cpuacct", "cpuacct.usage")
        self._cpu_stat = file("cpu", "cpu.stat")
        self._quota = file("cpu", "cpu.cfs_quota_us")
        self._period = file("cpu", "cpu.cfs_period_us")
        self._mem_usage = file("memory", "memory.usage_in_bytes")
        self._mem_peak = file("memory", "memory.max_usage_in_bytes")
        self._mem_limit = file("memory", "memory.limit_in_bytes")
        self._mem_stat = file("memory", "memory.stat")
        self._pids_current = file("pids", "pids.current")
        self._pids_max = file("pids", "pids.max")
        self._blkio = next((f for f in (file("blkio", n) for n in _V1_BLKIO_FILES) if f is not None), None)
        # the directory whose disappearance means the container is gone
        self._anchor = next(
            (str(self.dirs[c]) for c in ("memory", "cpuacct", "cpu", "pids", "blkio") if c in self.dirs), ""
        )

    def describe(self) -> str:
        folders = sorted({str(d) for d in self.dirs.values()})
        return "cgroup v1: " + ", ".join(folders)

    def pids(self) -> List[int]:
        for controller in ("memory", "cpu", "cpuacct", "pids", "blkio"):
            if controller in self.dirs:
                pids = self._pids_from(self.dirs[controller] / "cgroup.procs")
                if pids:
                    return pids
        return []

    def read(self) -> CgroupReading:
        r = CgroupReading()
        if self._usage:
            r.cpu_usage_ns = _int(read_file(self._usage))  # nanoseconds, all CPUs, user + system
        if self._cpu_stat:
            stat = _flat_keyed(read_file(self._cpu_stat))
            r.cpu_periods = stat.get(b"nr_periods")
            r.cpu_throttled_periods = stat.get(b"nr_throttled")
            r.cpu_throttled_ns = stat.get(b"throttled_time")  # v1: nanoseconds
        if self._quota and self._period:
            quota, period = _int(read_file(self._quota)), _int(read_file(self._period))
            if quota is not None and quota > 0 and period:  # -1: no quota
                r.cpu_limit_cores = quota / period
        if self._mem_usage:
            r.memory_usage = _int(read_file(self._mem_usage))
        if self._mem_peak:
            r.memory_peak = _int(read_file(self._mem_peak))
        if self._mem_stat:
            stat = _flat_keyed(read_file(self._mem_stat))
            # total_* include descendant cgroups (a container may create its own); the plain keys do not
            r.memory_rss = stat.get(b"total_rss", stat.get(b"rss"))
            r.memory_cache = stat.get(b"total_cache", stat.get(b"cache"))
            inactive = stat.get(b"total_inactive_file", stat.get(b"inactive_file"))
            r.memory_working_set = _working_set(r.memory_usage, inactive)
            # the effective limit: the smallest along the path to the root (a parent's limit binds too)
            limit = stat.get(b"hierarchical_memory_limit")
            if limit is None and self._mem_limit:
                limit = _int(read_file(self._mem_limit))
            r.memory_limit = _limit(limit)
        self._read_pids(r)
        if self._blkio:
            r.io_read_bytes, r.io_write_bytes = self._parse_blkio(read_file(self._blkio))
        if r.cpu_usage_ns is None and r.memory_usage is None and not os.path.isdir(self._anchor):
            raise CgroupGone(self._anchor)
        return r

    @staticmethod
    def _parse_blkio(data: Optional[bytes]) -> Tuple[Optional[int], Optional[int]]:
        """Read and Write bytes summed over devices (``MAJ:MIN Read N`` lines).

        A file with no device line at all (just ``Total 0``) says nothing: recent kernels (seen on 6.18) account
        the v1 throttle counters only on devices that have had a throttle rule since boot, so "no device" may
        mean "not counted" rather than "no IO". That case gives None, not zeros."""
        if data is None:
            return None, None
        read = write = 0
        devices = False
        for line in data.split(b"\n"):
            fields = line.split()
            if len(fields) != 3:
                continue
            devices = True
            if fields[1] == b"Read" and fields[2].isdigit():
                read += int(fields[2])
            elif fields[1] == b"Write" and fields[2].isdigit():
                write += int(fields[2])
        return (read, write) if devices else (None, None)


class CgroupV2(Cgroup):
    """cgroup v2: one directory holds every controller's files. A controller that is not enabled for the cgroup
    (``cgroup.subtree_control`` of its parent) has no files, and its metrics are left out."""

    version = 2

    def __init__(self, folder: Path) -> None:
        self.folder = folder

        def file(name: str) -> Optional[str]:
            return str(folder / name) if _exists(folder / name) else None

        self._cpu_stat = file("cpu.stat")  # always there: the core keeps usage_usec without the cpu controller
        self._cpu_max = file("cpu.max")
        self._mem_current = file("memory.current")
        self._mem_peak = file("memory.peak")  # Linux 5.19+
        self._mem_max = file("memory.max")
        self._mem_stat = file("memory.stat")
        self._pids_current = file("pids.current")
        self._pids_max = file("pids.max")
        self._io_stat = file("io.stat")

    def describe(self) -> str:
        return f"cgroup v2: {self.folder}"

    def pids(self) -> List[int]:
        return self._pids_from(self.folder / "cgroup.procs")

    def read(self) -> CgroupReading:
        r = CgroupReading()
        cpu_read = False
        if self._cpu_stat:
            data = read_file(self._cpu_stat)
            cpu_read = data is not None
            stat = _flat_keyed(data)
            usage_us = stat.get(b"usage_usec")
            r.cpu_usage_ns = None if usage_us is None else usage_us * 1000
            # nr_periods and friends appear only with the cpu controller enabled
            r.cpu_periods = stat.get(b"nr_periods")
            r.cpu_throttled_periods = stat.get(b"nr_throttled")
            throttled_us = stat.get(b"throttled_usec")
            r.cpu_throttled_ns = None if throttled_us is None else throttled_us * 1000
        if self._cpu_max:
            fields = (read_file(self._cpu_max) or b"").split()  # "max 100000" or "150000 100000"
            if len(fields) == 2 and fields[0] != b"max":
                with contextlib.suppress(ValueError, ZeroDivisionError):
                    r.cpu_limit_cores = int(fields[0]) / int(fields[1])
        if self._mem_current:
            r.memory_usage = _int(read_file(self._mem_current))
        if self._mem_peak:
            r.memory_peak = _int(read_file(self._mem_peak))
        if self._mem_max:
            r.memory_limit = _limit(_int(read_file(self._mem_max)))
        if self._mem_stat:
            stat = _flat_keyed(read_file(self._mem_stat))
            r.memory_rss = stat.get(b"anon")
            r.memory_cache = stat.get(b"file")
            r.memory_working_set = _working_set(r.memory_usage, stat.get(b"inactive_file"))
        self._read_pids(r)
        if self._io_stat:
            r.io_read_bytes, r.io_write_bytes = self._parse_io_stat(read_file(self._io_stat))
        if not cpu_read and not os.path.isdir(self.folder):
            raise CgroupGone(str(self.folder))
        return r

    @staticmethod
    def _parse_io_stat(data: Optional[bytes]) -> Tuple[Optional[int], Optional[int]]:
        """rbytes and wbytes summed over devices (``MAJ:MIN rbytes=N wbytes=N rios=N ...`` lines). Unlike v1, v2
        always accounts IO, so an empty file really means no IO yet."""
        if data is None:
            return None, None
        read = write = 0
        for line in data.split(b"\n"):
            for field in line.split()[1:]:
                key, _, value = field.partition(b"=")
                if key == b"rbytes" and value.isdigit():
                    read += int(value)
                elif key == b"wbytes" and value.isdigit():
                    write += int(value)
        return read, write


# -- finding the cgroup ------------------------------------------------------------------------------------------


def parse_proc_cgroup(text: str) -> Tuple[Dict[str, Tuple[str, str]], Optional[str]]:
    """``/proc/<pid>/cgroup`` as ({v1 controller: (hierarchy's controller list, path)}, v2 path or None).

    Lines are ``hierarchy-id:controllers:path``; the v2 line is ``0::path``. A hybrid host has both."""
    v1: Dict[str, Tuple[str, str]] = {}
    v2: Optional[str] = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and not controllers:
            v2 = path
            continue
        for controller in controllers.split(","):
            if controller:
                v1[controller] = (controllers, path)
    return v1, v2


def _relative(path: str) -> Optional[str]:
    """A /proc cgroup path as a path under the hierarchy's mount point, or None when it cannot be one.

    A path starting with ``/..`` is seen from another cgroup namespace (the reader's own is elsewhere in the tree)
    and the root ``/`` is the whole host, not a container."""
    rel = path.strip().lstrip("/")
    if not rel or rel.startswith(".."):
        return None
    return rel


def _v2_root(sys_fs_cgroup: Path) -> Optional[Path]:
    """Where the cgroup2 hierarchy is mounted: at the root on a unified host, under ``unified/`` on a hybrid one."""
    for root in (sys_fs_cgroup, sys_fs_cgroup / "unified"):
        if _exists(root / "cgroup.controllers"):
            return root
    return None


def _v1_roots(sys_fs_cgroup: Path, controller: str, listed: str = "") -> List[Path]:
    """Mount points that may hold a v1 controller: its own name (also the symlink systemd makes for ``cpu``
    inside ``cpu,cpuacct``), the controller list from /proc, and any comma-named folder that contains it."""
    roots = [sys_fs_cgroup / controller]
    if listed and listed != controller:
        roots.append(sys_fs_cgroup / listed)
    try:
        names = os.listdir(sys_fs_cgroup)
    except OSError:
        names = []
    roots += [sys_fs_cgroup / n for n in sorted(names) if "," in n and controller in n.split(",")]
    return roots


def _docker_layouts(container_id: str) -> List[str]:
    # cgroupfs driver: docker/<id>; systemd driver: system.slice/docker-<id>.scope (also the parent under v2)
    return [f"docker/{container_id}", f"system.slice/docker-{container_id}.scope"]


def _find_by_id(root: Path, container_id: str) -> Optional[Path]:
    for layout in _docker_layouts(container_id):
        if os.path.isdir(root / layout):
            return root / layout
    if 0 < len(container_id) < 64:  # a short id: the folder carries the full one
        for pattern in (f"docker/{container_id}*", f"system.slice/docker-{container_id}*.scope"):
            matches = sorted(p for p in root.glob(pattern) if p.is_dir())
            if len(matches) == 1:
                return matches[0]
    return None


def find_cgroup(
    container_pid: int,
    container_id: str,
    *,
    proc: Path = Path("/proc"),
    sys_fs_cgroup: Path = Path("/sys/fs/cgroup"),
) -> Cgroup:
    """The cgroup of the container whose init process is ``container_pid`` (0: not visible from here).

    First from ``/proc/<pid>/cgroup``, which names the cgroup whatever the driver (cgroupfs, systemd) or version
    (v1, v2, hybrid); then, when the PID is not visible or its path not usable, by container id under the layouts
    Docker's drivers create. On a hybrid host the v1 hierarchies win: they hold the memory and cpu controllers,
    the cgroup2 side has only the core files. Raises ``CgroupNotFound`` saying where it looked."""
    looked: List[str] = []

    if container_pid > 0:
        cgroup_file = proc / str(container_pid) / "cgroup"
        try:
            text = cgroup_file.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            looked.append(f"{cgroup_file}: {e.strerror or e}")
        else:
            v1, v2 = parse_proc_cgroup(text)
            if any(c in v1 for c in V1_CONTROLLERS):
                dirs: Dict[str, Path] = {}
                for controller in V1_CONTROLLERS:
                    if controller not in v1:
                        continue
                    listed, path = v1[controller]
                    rel = _relative(path)
                    if rel is None:
                        continue
                    for root in _v1_roots(sys_fs_cgroup, controller, listed):
                        if os.path.isdir(root / rel):
                            dirs[controller] = root / rel
                            break
                if dirs:
                    return CgroupV1(dirs)
                looked.append(f"the v1 paths {cgroup_file} names, under {sys_fs_cgroup}")
            elif v2 is not None:
                rel = _relative(v2)
                unified = _v2_root(sys_fs_cgroup)
                if rel is not None and unified is not None and os.path.isdir(unified / rel):
                    return CgroupV2(unified / rel)
                looked.append(f"the v2 path {v2.strip()!r} that {cgroup_file} names, under {sys_fs_cgroup}")
            else:
                looked.append(f"{cgroup_file}: no cgroup line")

    if container_id:
        dirs = {}
        for controller in V1_CONTROLLERS:
            for root in _v1_roots(sys_fs_cgroup, controller):
                found = _find_by_id(root, container_id)
                if found is not None:
                    dirs[controller] = found
                    break
        if dirs:
            return CgroupV1(dirs)
        v2_root = _v2_root(sys_fs_cgroup)
        if v2_root is not None:
            found = _find_by_id(v2_root, container_id)
            if found is not None:
                return CgroupV2(found)
        layouts = " or ".join(_docker_layouts(container_id[:12] + "…" if len(container_id) > 12 else container_id))
        looked.append(f"{layouts} under {sys_fs_cgroup} (v1 controller folders and the cgroup2 root)")

    raise CgroupNotFound(
        f"cannot find the cgroup of container {container_id[:12] or '?'} (pid {container_pid or 'not visible'}); "
        f"looked at: {'; '.join(looked) or 'nothing (no pid and no container id)'}. "
        "When the profiler runs in a container, give it the host's PID namespace and cgroup tree: "
        "--pid host --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:ro"
    )


def first_visible_pid(cgroup: Cgroup, proc: Path, preferred: int = 0) -> Optional[int]:
    """A process of the cgroup whose ``/proc`` entry this process can read: ``preferred`` when it can."""
    candidates: Sequence[int] = ([preferred] if preferred > 0 else []) + cgroup.pids()
    for pid in candidates:
        if _exists(proc / str(pid)):
            return pid
    return None
