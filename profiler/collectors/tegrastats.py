"""``tegrastats``: a Jetson's RAM, swap, per-core CPU, EMC, GPU, engines, temperatures and power rails, and the
memory the app's processes hold through nvmap (the app's GPU memory on a Jetson).

Runs the device's own ``tegrastats`` (the host binary, mounted into the profiler container; path from the constructor
or ``WAAP_TEGRASTATS``) at the sampling interval and pushes one sample per line it prints, parsed by
``profiler.tegrastats``. A tegrastats that exits is recorded in the status and restarted once; a second exit ends
the collector as failed, since a binary that keeps dying would otherwise be restarted for the whole run.

App GPU memory: the Jetson's GPU has no memory of its own; its buffers (and the camera's, the codecs') are allocated
by the kernel's nvmap, whose debugfs table lists them per process by host PID (``profiler.nvmap``; path from the
constructor or ``WAAP_NVMAP_CLIENTS``). ``sample()``, asked at every tick, reads that table and sums the lines of the
app container's processes, found as the NVML collector finds them (``AppProcesses``). When the table cannot be read
(not root, debugfs not mounted in the profiler container, not an nvmap kernel) or the runner cannot see host PIDs, the
metric is left out and the reason said once in the status; tegrastats' own metrics go on.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import IO, Callable, List, Mapping, Optional, Tuple

from ..nvmap import ENV_CLIENTS, HEADER, clients_path, read_clients
from ..tegrastats import parse_fields
from .apppids import AppProcesses
from .base import Collector, MetricInfo, RunContext, Sample, SampleSink, Unavailable

__all__ = ["CATALOG", "DEFAULT_BINARY", "TegrastatsCollector"]

DEFAULT_BINARY = "/usr/bin/tegrastats"
APP_NVMAP = "jetson.app.nvmap_used_bytes"

CATALOG: Tuple[MetricInfo, ...] = (
    MetricInfo("jetson.ram.used_bytes", "bytes", "gauge", "memory in use (RAM used/total, printed in MiB)"),
    MetricInfo("jetson.ram.total_bytes", "bytes", "gauge", "physical memory shared by CPU and GPU"),
    MetricInfo("jetson.ram.lfb_blocks", "blocks", "gauge", "largest free block: how many blocks of that size are free"),
    MetricInfo("jetson.ram.lfb_block_bytes", "bytes", "gauge", "largest free block: the size of one block"),
    MetricInfo("jetson.swap.used_bytes", "bytes", "gauge", "swap in use (zram included)"),
    MetricInfo("jetson.swap.total_bytes", "bytes", "gauge", "swap space"),
    MetricInfo("jetson.swap.cached_bytes", "bytes", "gauge", "swap cached in memory"),
    MetricInfo("jetson.iram.used_bytes", "bytes", "gauge", "on-chip IRAM in use (boards that print IRAM: Nano, TX1)"),
    MetricInfo("jetson.iram.total_bytes", "bytes", "gauge", "on-chip IRAM size"),
    MetricInfo("jetson.iram.lfb_bytes", "bytes", "gauge", "largest free block of IRAM"),
    MetricInfo("jetson.cpu.core.<n>.online", "boolean", "gauge", "1 when core n is online, 0 when it prints off"),
    MetricInfo("jetson.cpu.core.<n>.percent", "percent", "gauge", "load of core n (0-100); absent while it is off"),
    MetricInfo("jetson.cpu.core.<n>.mhz", "MHz", "gauge", "clock of core n"),
    MetricInfo("jetson.mts.foreground_percent", "percent", "gauge", "MTS foreground share (boards that print MTS)"),
    MetricInfo("jetson.mts.background_percent", "percent", "gauge", "MTS background share"),
    MetricInfo("jetson.emc.percent", "percent", "gauge", "external memory controller load (EMC_FREQ), 0-100"),
    MetricInfo("jetson.emc.mhz", "MHz", "gauge", "external memory controller clock"),
    MetricInfo("jetson.gpu.percent", "percent", "gauge", "GPU (GR3D) load, 0-100"),
    MetricInfo("jetson.gpu.mhz", "MHz", "gauge", "GPU clock (the first GPC's where tegrastats prints one per GPC)"),
    MetricInfo("jetson.gpu.gpc.<i>.mhz", "MHz", "gauge", "clock of GPC i, where tegrastats prints more than one"),
    MetricInfo(
        "jetson.engine.<name>.on",
        "boolean",
        "gauge",
        "1 when the engine (ape, vic, nvenc, nvdec, nvjpg, nvdla0, ...) runs, 0 when tegrastats prints off",
    ),
    MetricInfo("jetson.engine.<name>.mhz", "MHz", "gauge", "clock of the engine while it runs"),
    MetricInfo("jetson.engine.<name>.percent", "percent", "gauge", "load of the engine where tegrastats prints one"),
    MetricInfo(
        "jetson.temperature.<sensor>.celsius",
        "celsius",
        "gauge",
        "a thermal zone tegrastats prints (cpu, gpu, ao, pmic, thermal, ...; lowercase); -256 (no reading) is left out",
    ),
    MetricInfo(
        "jetson.power.<rail>.milliwatts",
        "mW",
        "gauge",
        "instantaneous power on an INA3221 rail (board-specific: vdd_in, vdd_cpu_gpu_cv, pom_5v_in, ...; lowercase)",
    ),
    MetricInfo(
        "jetson.power.<rail>.average_milliwatts", "mW", "gauge", "tegrastats' running average power on the rail"
    ),
    MetricInfo(
        APP_NVMAP,
        "bytes",
        "gauge",
        "the app's GPU memory on a Jetson: memory the app container's processes hold through nvmap, the kernel "
        "allocator of the GPU's buffers (CUDA allocations on Jetsons with the nvgpu driver) and also of camera, "
        "codec and display buffers, from the IOVMM heap's table in debugfs (/sys/kernel/debug/nvmap/iovmm/clients, "
        "root only, or WAAP_NVMAP_CLIENTS), read at every tick: the sum of the lines whose host PID's "
        "/proc/<pid>/cgroup names the container. A buffer shared with another process counts in part (kernels "
        "that divide it by its share count) or in full (older kernels); whole KiB. Not counted: carveout heaps, "
        "the app's ordinary CPU memory (container.memory.*), and GPU memory that does not go through nvmap (on "
        "Thor's nvidia.ko driver CUDA memory reportedly does not). Whether container.memory.* also counts these "
        "pages depends on the kernel (nvmap charges them to the memory cgroup only in recent releases): do not add "
        "the two. Absent, with the reason in the status, when the table cannot be read (not root, debugfs not "
        "mounted in the profiler container, not an nvmap kernel) or the runner cannot see host PIDs (--pid host)",
    ),
)


class TegrastatsCollector(Collector):
    """Pushing collector: a thread reads tegrastats' lines and hands each parsed line to the sink. Polled too:
    ``sample()`` answers the app's nvmap memory at every tick (None when that is left out).

    Counters in ``status``: ``lines`` read, ``unparsed_fields`` (fields no pattern recognised), ``unparsed_lines``
    (lines with no metric at all, e.g. an error message), ``cut_lines`` (a last line without its newline, left out
    since its last field may be cut), ``exits`` and ``restarts``; ``nvmap_unknown_lines`` once the nvmap table had
    a line the parser does not know."""

    name = "tegrastats"
    catalog = CATALOG
    source_description = "the device's tegrastats (host binary mounted into the profiler container), one line a tick"

    def __init__(
        self,
        binary: Optional[str] = None,
        interval_ms: Optional[int] = None,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        max_restarts: int = 1,
        stop_timeout_s: float = 2.0,
        nvmap_clients: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.binary = binary if binary is not None else os.environ.get("WAAP_TEGRASTATS", DEFAULT_BINARY)
        self.nvmap_clients = clients_path(nvmap_clients)
        self.interval_ms = interval_ms  # None: the run's sampling interval
        self.clock_ns = clock_ns
        self.max_restarts = max_restarts
        self.stop_timeout_s = stop_timeout_s
        self._lock = threading.Lock()
        self._proc: Optional[subprocess.Popen[str]] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._notes: List[str] = []
        self._notes_lock = threading.Lock()  # notes come from the reader thread and from sample()
        self._app: Optional[AppProcesses] = None  # None: the app's nvmap memory is left out
        for counter in ("lines", "unparsed_fields", "unparsed_lines", "cut_lines", "exits", "restarts"):
            self.status.counters[counter] = 0

    @property
    def command(self) -> List[str]:
        return [self.binary, "--interval", str(self.interval_ms)]

    def start(self, ctx: RunContext, sink: SampleSink) -> None:
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            raise Unavailable(
                f"tegrastats not found at {self.binary}: not a Jetson, or mount the host's /usr/bin/tegrastats "
                "into the profiler container (another path: WAAP_TEGRASTATS)"
            )
        if self.interval_ms is None:
            self.interval_ms = max(1, round(ctx.interval_s * 1000))
        self._proc = self._launch()
        self._thread = threading.Thread(target=self._run, args=(sink,), name="waap-tegrastats", daemon=True)
        self._thread.start()
        why = AppProcesses.unavailable(ctx)
        if why is not None:
            self._note(f"{APP_NVMAP}: {why}, so the app's GPU memory is not measured")
            return
        self._app = AppProcesses(ctx)
        if self._app_nvmap() is None:
            return  # said why
        self._note(f"{APP_NVMAP}: from {self.nvmap_clients}")

    def sample(self, ts_ns: int) -> Optional[Mapping[str, float]]:
        """The app's nvmap memory; tegrastats' own lines go to the sink from the reader thread."""
        if self._app is None:
            return None
        value = self._app_nvmap()
        return None if value is None else {APP_NVMAP: value}

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            proc = self._proc
        if proc is not None:
            _end(proc, self.stop_timeout_s)
        if self._thread is not None:
            self._thread.join(self.stop_timeout_s)
            self._thread = None

    # -- reader thread -----------------------------------------------------------------------------------------

    def _launch(self) -> subprocess.Popen[str]:
        try:
            # stderr joins stdout so that an error message is seen (as a line with no metric) and kept for the reason
            return subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
            )
        except OSError as e:
            raise Unavailable(f"cannot run {' '.join(self.command)}: {e}") from e

    def _run(self, sink: SampleSink) -> None:
        proc = self._proc
        try:
            while proc is not None:
                try:
                    last_text = self._read(proc, sink)
                    rc = proc.wait()
                finally:
                    if proc.stdout is not None:
                        proc.stdout.close()
                proc = self._after_exit(rc, last_text)
        except Exception as e:  # a failing sink or relaunch ends the collector, recorded rather than lost
            if not self._stopping:
                self.status.status = "failed"
                self._note(f"reader stopped: {type(e).__name__}: {e}")

    def _read(self, proc: subprocess.Popen[str], sink: SampleSink) -> str:
        """Pushes a sample per line until tegrastats closes its output; returns its last line with no metric."""
        counters = self.status.counters
        last_text = ""
        stream: Optional[IO[str]] = proc.stdout
        assert stream is not None  # stdout=PIPE
        for line in stream:
            ts_ns = self.clock_ns()
            if not line.endswith("\n"):
                counters["cut_lines"] += 1  # the process died mid-write: the last field may be cut
                continue
            if not line.strip():
                continue
            counters["lines"] += 1
            values, unknown = parse_fields(line)
            counters["unparsed_fields"] += len(unknown)
            values = self.finite(values)
            if not values:
                counters["unparsed_lines"] += 1
                last_text = line.strip()[:200]
                continue
            sink(Sample(ts_ns, self.name, values))
        return last_text

    def _after_exit(self, rc: int, last_text: str) -> Optional[subprocess.Popen[str]]:
        """Records an exit; the process to read next (a restarted tegrastats) or None."""
        with self._lock:
            if self._stopping:
                return None
            counters = self.status.counters
            counters["exits"] += 1
            said = f" ({last_text})" if last_text else ""
            if counters["restarts"] >= self.max_restarts:
                self.status.status = "failed"
                self._note(f"tegrastats exited with status {rc}{said}; not restarted again")
                self._proc = None
                return None
            counters["restarts"] += 1
            self._note(f"tegrastats exited with status {rc}{said}; restarted")
            self._proc = self._launch()
            return self._proc

    def _note(self, text: str) -> None:
        with self._notes_lock:
            self._notes.append(text)
            self.status.reason = "; ".join(self._notes)

    # -- the app's nvmap memory --------------------------------------------------------------------------------

    def _app_nvmap(self) -> Optional[float]:
        """Bytes the app's processes hold through nvmap, or None after leaving the metric out (said once)."""
        app = self._app
        if app is None:
            return None
        path = self.nvmap_clients
        try:
            table = read_clients(path)
        except OSError as e:
            self._leave_out_nvmap(_unreadable(path, e))
            return None
        if not table.header:
            self._leave_out_nvmap(
                f"{path} is not an nvmap clients table (no '{' '.join(HEADER)}' line); another path: {ENV_CLIENTS}"
            )
            return None
        if table.unknown:
            counters = self.status.counters
            counters["nvmap_unknown_lines"] = counters.get("nvmap_unknown_lines", 0) + len(table.unknown)
        return float(sum(size for pid, size in table.by_pid.items() if pid in app))

    def _leave_out_nvmap(self, why: str) -> None:
        self._app = None
        self._note(f"{APP_NVMAP}: {why}, so the app's GPU memory is not measured")


def _unreadable(path: str, e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return (
            f"no {path}: debugfs is not mounted there (mount the host's /sys/kernel/debug into the profiler "
            f"container) or this kernel has no nvmap table (another path: {ENV_CLIENTS})"
        )
    if isinstance(e, PermissionError):
        return f"cannot read {path}: debugfs is readable by root only (run the profiler as root)"
    return f"cannot read {path}: {e.strerror or e}"


def _end(proc: subprocess.Popen[str], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it does not go within ``timeout_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
