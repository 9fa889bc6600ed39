"""nvmap's clients table: the parser on a recorded real table (tests/data/nvmap, with its provenance), and the app's
nvmap memory end to end through the tegrastats collector on a temporary tree (that table, a fake /proc whose cgroup
files say which PIDs run in the app container, a stand-in tegrastats)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from profiler.collectors import tegrastats as tegrastats_collector
from profiler.collectors.base import RunContext, Unavailable
from profiler.collectors.gpu import GpuSummaryCollector
from profiler.collectors.tegrastats import APP_NVMAP, CATALOG, TegrastatsCollector
from profiler.nvmap import DEFAULT_CLIENTS, ENV_CLIENTS, clients_path, parse_clients, read_clients

from .test_nvml import CONTAINER_ID, _in_app, _proc

DATA = Path(__file__).parent / "data" / "nvmap"
RECORDED = DATA / "iovmm-clients-gimbal.txt"
KiB = 1024

# the recorded table: PID -> KiB, and its total line
RECORDED_KIB = {4481: 118372, 2831: 5384, 1731: 18140, 1012: 0}
RECORDED_TOTAL_KIB = 141896

# NVIDIA's note, PRINT_MEM_STATS_NOTE(SIZE) in nvmap_dev.c, which some kernels print after the clients table
KERNEL_NOTE = (
    "Note: total memory is precise account of pages allocated by NvMap.\n"
    'It doesn\'t match with all clients "SIZE" accumulated as shared memory \n'
    'is accounted in full in each clients "SIZE" that shared memory.\n'
)


def _recorded() -> str:
    return RECORDED.read_text()


# -- parser ----------------------------------------------------------------------------------------------------


def test_recorded_table_is_read_per_pid_in_bytes() -> None:
    table = parse_clients(_recorded())
    assert table.header
    assert table.by_pid == {pid: kib * KiB for pid, kib in RECORDED_KIB.items()}
    assert table.total_bytes == RECORDED_TOTAL_KIB * KiB
    assert table.clients == 4
    assert table.unknown == []


def test_recorded_table_is_what_the_kernel_format_strings_print() -> None:
    # client_stringify + nvmap_debug_clients_show, their seq_printf formats as the kernel writes them; Python's %
    # knows one length modifier (l), not C's ll: the provenance check of tests/data/nvmap/README.md
    def printf(fmt: str, *args: object) -> str:
        return fmt.replace("llu", "lu") % args

    rows = [("gem", 4481), ("gnome-shell", 2831), ("Xorg", 1731), ("nvargus-daemon", 1012)]
    text = printf("%-18s %18s %8s %11s\n", "CLIENT", "PROCESS", "PID", "SIZE")
    for comm, pid in rows:
        text += printf("%-18s %18s %8u", "user", comm, pid) + printf(" %10lluK\n", RECORDED_KIB[pid])
    text += printf("%-18s %18s %8s %10lluK\n", "total", "", "", RECORDED_TOTAL_KIB)
    assert _recorded() == text


def test_a_table_cut_anywhere_never_raises_nor_misreads() -> None:
    text = _recorded()
    whole = parse_clients(text)
    for cut in range(len(text) + 1):
        table = parse_clients(text[:cut])
        for pid, size in table.by_pid.items():
            assert whole.by_pid[pid] == size, (cut, pid)  # a row cut before its K is skipped, never read short
        assert table.total_bytes in (None, whole.total_bytes), cut


def test_unknown_lines_are_skipped_and_kept_for_the_status() -> None:
    table = parse_clients(_recorded() + KERNEL_NOTE + "garbage\n\n   \nuser foo 12 34\ntotal 5\n")
    assert table.by_pid == {pid: kib * KiB for pid, kib in RECORDED_KIB.items()}
    assert table.total_bytes == RECORDED_TOTAL_KIB * KiB
    assert len(table.unknown) == 3 + 3  # the note's three lines, garbage, a size without K, a total without K
    assert table.unknown[3:] == ["garbage", "user foo 12 34", "total 5"]


@pytest.mark.parametrize("text", ["", "\n", "\x00\xff", "CLIENT PROCESS PID", "total", "user 1 2K 3"])
def test_odd_input_gives_an_empty_table(text: str) -> None:
    table = parse_clients(text)
    assert table.by_pid == {} and table.total_bytes is None and not table.header


def test_a_process_with_two_clients_is_summed_and_a_name_with_spaces_costs_nothing() -> None:
    lines = _recorded().splitlines()
    gem = lines[1]
    spaced = lines[2].replace("   gnome-shell", "Web Content 2")  # the same width: comm may hold spaces and digits
    table = parse_clients("\n".join([lines[0], gem, gem, spaced, *lines[3:]]))
    assert table.by_pid[4481] == 2 * 118372 * KiB
    assert table.by_pid[2831] == 5384 * KiB
    assert table.clients == 5


def test_read_clients_and_the_path_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_clients(str(RECORDED)).by_pid[4481] == 118372 * KiB
    with pytest.raises(OSError):
        read_clients(str(tmp_path / "none"))
    monkeypatch.delenv(ENV_CLIENTS, raising=False)
    assert clients_path() == DEFAULT_CLIENTS == "/sys/kernel/debug/nvmap/iovmm/clients"
    monkeypatch.setenv(ENV_CLIENTS, "/elsewhere/clients")
    assert clients_path() == "/elsewhere/clients"
    assert TegrastatsCollector(binary="x").nvmap_clients == "/elsewhere/clients"
    assert clients_path("/given") == "/given"


@pytest.mark.skipif(not os.access(DEFAULT_CLIENTS, os.R_OK), reason=f"{DEFAULT_CLIENTS} is not readable here")
def test_the_real_table() -> None:  # pragma: no cover - a Jetson, as root, with debugfs mounted
    table = read_clients(DEFAULT_CLIENTS)
    assert table.header and table.total_bytes is not None


# -- the collector -----------------------------------------------------------------------------------------------


@pytest.fixture
def tegrastats(tmp_path: Path) -> Path:
    """A stand-in that prints nothing: only the nvmap part of the collector is measured here."""
    script = tmp_path / "tegrastats"
    script.write_text("#!/bin/sh\nexec sleep 60\n")
    script.chmod(0o755)
    return script


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    # gem (4481) and Xorg (1731) run in the app container, the others do not; nvargus-daemon has no /proc entry
    return _proc(
        tmp_path / "proc",
        {
            4481: _in_app(),
            1731: _in_app(cgroup_v2=False),
            2831: "0::/user.slice/user-1000.slice/session-2.scope\n",
        },
    )


def _ctx(tmp_path: Path, proc: Path, container_pid: int = 4242) -> RunContext:
    return RunContext("r1", CONTAINER_ID, container_pid, tmp_path, tmp_path / "out", interval_s=1.0, proc=proc)


def _no_sink(sample: Any) -> None:
    raise AssertionError("the stand-in tegrastats prints nothing")


def _started(tegrastats: Path, clients: Path, ctx: RunContext) -> TegrastatsCollector:
    c = TegrastatsCollector(binary=str(tegrastats), interval_ms=1000, nvmap_clients=str(clients))
    c.start(ctx, _no_sink)
    return c


def _app_bytes(values: Optional[Any]) -> Optional[float]:
    return None if values is None else dict(values).get(APP_NVMAP)


def test_the_apps_processes_are_summed_and_the_others_ignored(tmp_path: Path, tegrastats: Path, proc: Path) -> None:
    c = _started(tegrastats, RECORDED, _ctx(tmp_path, proc))
    try:
        assert c.sample(1) == {APP_NVMAP: float((118372 + 18140) * KiB)}
        assert c.sample(2) == {APP_NVMAP: float((118372 + 18140) * KiB)}
    finally:
        c.stop()
    assert c.status.status == "ok"
    assert c.status.reason == f"{APP_NVMAP}: from {RECORDED}"
    assert "nvmap_unknown_lines" not in c.status.counters


def test_no_app_process_in_the_table_is_zero(tmp_path: Path, tegrastats: Path) -> None:
    c = _started(tegrastats, RECORDED, _ctx(tmp_path, _proc(tmp_path / "proc", {2831: "0::/init.scope\n"})))
    try:
        assert c.sample(1) == {APP_NVMAP: 0.0}
    finally:
        c.stop()


def test_unknown_lines_are_counted_not_fatal(tmp_path: Path, tegrastats: Path, proc: Path) -> None:
    clients = tmp_path / "clients"
    clients.write_text(_recorded() + KERNEL_NOTE)
    c = _started(tegrastats, clients, _ctx(tmp_path, proc))
    try:
        assert _app_bytes(c.sample(1)) == float((118372 + 18140) * KiB)
    finally:
        c.stop()
    assert c.status.counters["nvmap_unknown_lines"] == 2 * 3  # read at start, then at the sample


def _left_out_once(c: TegrastatsCollector, words: str) -> None:
    try:
        assert c.sample(1) is None and c.sample(2) is None
    finally:
        c.stop()
    assert c.status.status == "ok"  # tegrastats' own metrics are not affected
    assert c.status.reason.count(APP_NVMAP) == 1
    assert c.status.reason.startswith(f"{APP_NVMAP}: ")
    assert words in c.status.reason, c.status.reason
    assert c.status.reason.endswith("so the app's GPU memory is not measured")


def test_a_missing_table_leaves_the_metric_out_and_says_why_once(tmp_path: Path, tegrastats: Path, proc: Path) -> None:
    missing = tmp_path / "debug" / "nvmap" / "iovmm" / "clients"
    c = _started(tegrastats, missing, _ctx(tmp_path, proc))
    _left_out_once(c, f"no {missing}: debugfs is not mounted there (mount the host's /sys/kernel/debug")


def test_an_unreadable_table_says_root_only(
    tmp_path: Path, tegrastats: Path, proc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients = tmp_path / "clients"

    def not_root(path: str) -> None:  # what open() raises for a debugfs file when not root (mode 0700 folders)
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(tegrastats_collector, "read_clients", not_root)
    c = _started(tegrastats, clients, _ctx(tmp_path, proc))
    _left_out_once(c, f"cannot read {clients}: debugfs is readable by root only (run the profiler as root)")


def test_another_read_error_is_named(tmp_path: Path, tegrastats: Path, proc: Path) -> None:
    c = _started(tegrastats, tmp_path, _ctx(tmp_path, proc))  # a directory
    _left_out_once(c, f"cannot read {tmp_path}: Is a directory")


def test_a_file_that_is_not_a_clients_table_is_not_guessed_at(tmp_path: Path, tegrastats: Path, proc: Path) -> None:
    other = tmp_path / "procrank"
    other.write_text("CLIENT PROCESS PID PSS SIZE\nuser gem 4481 10K 20K\n")
    c = _started(tegrastats, other, _ctx(tmp_path, proc))
    _left_out_once(c, f"{other} is not an nvmap clients table (no 'CLIENT PROCESS PID SIZE' line)")


def test_a_table_gone_mid_run_is_said_once(tmp_path: Path, tegrastats: Path, proc: Path) -> None:
    clients = tmp_path / "clients"
    clients.write_text(_recorded())
    c = _started(tegrastats, clients, _ctx(tmp_path, proc))
    assert _app_bytes(c.sample(1)) == float((118372 + 18140) * KiB)
    clients.unlink()
    try:
        assert c.sample(2) is None and c.sample(3) is None
    finally:
        c.stop()
    first, then = c.status.reason.split("; ")
    assert first == f"{APP_NVMAP}: from {clients}"
    assert then.startswith(f"{APP_NVMAP}: no {clients}: debugfs is not mounted there")


def test_without_host_pids_the_table_is_not_read(tmp_path: Path, tegrastats: Path, proc: Path) -> None:
    c = _started(tegrastats, tmp_path / "never-read", _ctx(tmp_path, proc, container_pid=0))
    _left_out_once(c, "the runner cannot see the app's host PIDs (run it with --pid host)")
    assert "never-read" not in c.status.reason


def test_without_tegrastats_nothing_is_read(tmp_path: Path, proc: Path) -> None:
    c = TegrastatsCollector(binary=str(tmp_path / "nope"), nvmap_clients=str(RECORDED))
    with pytest.raises(Unavailable):
        c.start(_ctx(tmp_path, proc), _no_sink)
    assert c.sample(1) is None


def test_gpu_summary_passes_the_apps_nvmap_memory_on(tmp_path: Path, tegrastats: Path, proc: Path) -> None:
    def make() -> TegrastatsCollector:
        return TegrastatsCollector(binary=str(tegrastats), interval_ms=1000, nvmap_clients=str(RECORDED))

    c = GpuSummaryCollector(candidates=[make])
    c.start(_ctx(tmp_path, proc), _no_sink)
    try:
        assert c.sample(1) == {APP_NVMAP: float((118372 + 18140) * KiB)}
    finally:
        c.stop()
    assert c.status.reason == f"using tegrastats: {APP_NVMAP}: from {RECORDED}"


def test_the_metric_is_declared_once_where_gpu_summary_finds_it() -> None:
    declared: Dict[str, int] = {}
    for info in GpuSummaryCollector.catalog:
        declared[info.name] = declared.get(info.name, 0) + 1
    assert declared[APP_NVMAP] == 1
    info = next(i for i in CATALOG if i.name == APP_NVMAP)
    assert (info.unit, info.kind) == ("bytes", "gauge")
    assert "/sys/kernel/debug/nvmap/iovmm/clients" in info.meaning and "--pid host" in info.meaning
