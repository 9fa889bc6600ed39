"""``tegrastats``: a Jetson's RAM, swap, per-core CPU, EMC, GPU, engines, temperatures and power rails.

Runs the device's own ``tegrastats`` (the host binary, mounted into the profiler container; path from the constructor
or ``WAAP_TEGRASTATS``) at the sampling interval and pushes one sample per line it prints, parsed by
``profiler.tegrastats``. A tegrastats that exits is recorded in the status and restarted once; a second exit ends
the collector as failed, since a binary that keeps dying would otherwise be restarted for the whole run.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import IO, Callable, List, Mapping, Optional, Tuple

from ..tegrastats import parse_fields
from .base import Collector, MetricInfo, RunContext, Sample, SampleSink, Unavailable

__all__ = ["CATALOG", "DEFAULT_BINARY", "TegrastatsCollector"]

DEFAULT_BINARY = "/usr/bin/tegrastats"

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
)


class TegrastatsCollector(Collector):
    """Pushing collector: a thread reads tegrastats' lines and hands each parsed line to the sink.

    Counters in ``status``: ``lines`` read, ``unparsed_fields`` (fields no pattern recognised), ``unparsed_lines``
    (lines with no metric at all, e.g. an error message), ``cut_lines`` (a last line without its newline, left out
    since its last field may be cut), ``exits`` and ``restarts``."""

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
    ) -> None:
        super().__init__()
        self.binary = binary if binary is not None else os.environ.get("WAAP_TEGRASTATS", DEFAULT_BINARY)
        self.interval_ms = interval_ms  # None: the run's sampling interval
        self.clock_ns = clock_ns
        self.max_restarts = max_restarts
        self.stop_timeout_s = stop_timeout_s
        self._lock = threading.Lock()
        self._proc: Optional[subprocess.Popen[str]] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._notes: List[str] = []
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

    def sample(self, ts_ns: int) -> Optional[Mapping[str, float]]:
        return None  # pushing collector: samples go to the sink from the reader thread

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
        self._notes.append(text)
        self.status.reason = "; ".join(self._notes)


def _end(proc: subprocess.Popen[str], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it does not go within ``timeout_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
