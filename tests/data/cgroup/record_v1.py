#!/usr/bin/env python3
"""Record the cgroup v1 files of a real Docker container into tests/data (run as root on a cgroup v1 host).

    python3 tests/data/cgroup/record_v1.py cgroupfs   # the engine's own docker/<id> cgroups
    python3 tests/data/cgroup/record_v1.py systemd    # the same container moved into system.slice/docker-<id>.scope

The container (waap-base:bookworm) sleeps 3 s, then holds 100 MiB of touched memory, writes and fsyncs 32 MiB, reads
8 MiB back from disk, sends UDP datagrams to the bridge gateway, keeps 3 idle threads and spins one core under a
0.5-CPU quota (so throttling shows), with a 256 MiB memory limit and a 64-pid limit. ``cgroupfs`` mode also sets
a 10 GB/s read and write limit on the disk holding /var/lib/docker: recent kernels (seen on 6.18) keep the v1
``blkio.throttle.*`` counters at ``Total 0`` unless the device has a throttle rule; ``systemd`` mode sets none, so
its tree shows that case. ``systemd`` mode creates the
systemd driver's layout by hand (this host's engine uses cgroupfs): the container's process is moved into new
cgroups named ``system.slice/docker-<id>.scope`` in every v1 hierarchy and the cgroup2 one before the workload starts,
so every charged byte and tick lands there; the files are still the kernel's own. Everything it creates is removed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROC_OUT = HERE.parent / "proc-container"
CG = Path("/sys/fs/cgroup")
IMAGE = "waap-base:bookworm"
WORKLOAD = r"""
import os, socket, threading, time
time.sleep(3)
b = bytearray(100 * 2**20)
for i in range(0, len(b), 4096):
    b[i] = 1
with open('/var/tmp/blk', 'wb') as f:
    f.write(os.urandom(32 * 2**20)); f.flush(); os.fsync(f.fileno())
fd = os.open('/var/tmp/blk', os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
while os.read(fd, 2**20) and os.lseek(fd, 0, os.SEEK_CUR) < 8 * 2**20:
    pass
os.close(fd)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(50):
    s.sendto(b'x' * 1000, ('172.17.0.1', 9))
for _ in range(3):
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
while True:
    pass
"""
FILES = {
    "cpu": ["cpu.stat", "cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares", "cgroup.procs"],
    "cpuacct": ["cpuacct.usage", "cpuacct.stat", "cpuacct.usage_percpu"],
    "memory": [
        "memory.usage_in_bytes", "memory.max_usage_in_bytes", "memory.limit_in_bytes", "memory.stat",
        "memory.failcnt", "memory.oom_control", "memory.memsw.usage_in_bytes",
    ],
    "pids": ["pids.current", "pids.max", "pids.peak", "pids.events"],
    "blkio": [
        "blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_serviced_recursive",
        "blkio.throttle.io_service_bytes", "blkio.bfq.io_service_bytes_recursive", "blkio.throttle.read_bps_device",
        "blkio.throttle.write_bps_device",
    ],
    "unified": ["cgroup.procs", "cgroup.controllers", "cgroup.stat", "cpu.stat", "memory.pressure"],
}
MOVE = ["cpu", "cpuacct", "memory", "pids", "blkio", "cpuset", "devices", "freezer", "systemd", "unified"]


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def docker_disk() -> str:
    """/dev/<name> of the block device holding /var/lib/docker (a partition's parent disk is not needed here)."""
    import os

    st = os.stat("/var/lib/docker")
    uevent = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/uevent").read_text()
    name = next(line.split("=", 1)[1] for line in uevent.splitlines() if line.startswith("DEVNAME="))
    return f"/dev/{name}"


def main(layout: str) -> None:
    extra: list[str] = []
    if layout == "cgroupfs":
        disk = docker_disk()
        extra = ["--device-read-bps", f"{disk}:10gb", "--device-write-bps", f"{disk}:10gb"]
    cid = sh("docker", "run", "-d", "--memory", "256m", "--cpus", "0.5", "--pids-limit", "64", *extra, IMAGE,
             "python3", "-c", WORKLOAD)
    made: list[Path] = []
    try:
        pid = int(sh("docker", "inspect", "-f", "{{.State.Pid}}", cid))
        rel = f"docker/{cid}"
        if layout == "systemd":
            rel = f"system.slice/docker-{cid}.scope"
            for hier in MOVE:
                old, new = CG / hier / "docker" / cid, CG / hier / rel
                new.mkdir(parents=True, exist_ok=True)
                made.append(new)
                if hier == "cpuset":  # a new cpuset cgroup has no CPUs until told
                    for f in ("cpuset.cpus", "cpuset.mems"):
                        (new.parent / f).write_text((CG / hier / f).read_text())
                        (new / f).write_text((old / f).read_text())
                for f in ("memory.limit_in_bytes", "cpu.cfs_period_us", "cpu.cfs_quota_us", "pids.max"):
                    if (old / f).exists():
                        (new / f).write_text((old / f).read_text())
                (new / "cgroup.procs").write_text(str(pid))
        time.sleep(9)  # 3 s idle, the workload (~2 s under the quota), then some throttled spinning
        out = HERE / f"v1-{layout}"
        proc_out = PROC_OUT / f"v1-{layout}" / str(pid)
        for d in (out, proc_out):
            if d.exists():
                shutil.rmtree(d)
        (proc_out / "net").mkdir(parents=True)
        (proc_out / "cgroup").write_bytes(Path(f"/proc/{pid}/cgroup").read_bytes())
        (proc_out / "net" / "dev").write_bytes(Path(f"/proc/{pid}/net/dev").read_bytes())
        for hier, names in FILES.items():
            src = CG / hier / rel
            dst = out / hier / rel
            dst.mkdir(parents=True)
            for name in names:
                if (src / name).exists():
                    (dst / name).write_bytes((src / name).read_bytes())
        (out / "unified" / "cgroup.controllers").write_bytes((CG / "unified" / "cgroup.controllers").read_bytes())
        info = {"container_id": cid, "pid": pid, "layout": layout, "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                time.gmtime()), "kernel": sh("uname", "-r"), "docker": sh("docker", "version", "-f",
                "{{.Server.Version}}")}
        (out / "recording.json").write_text(json.dumps(info, indent=2) + "\n")
        print(json.dumps(info))
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
        for new in reversed(made):
            for _ in range(50):
                try:
                    new.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
            if new.parent.name == "system.slice":
                with contextlib.suppress(OSError):
                    new.parent.rmdir()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cgroupfs")
