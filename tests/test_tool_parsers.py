"""Tool output parsers on recorded real output (tests/data/tools and tests/data/nvidia-real, see their READMEs) and
minimal edits of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from profiler.errors import WaapError
from profiler.tools.nvidia_csv import (
    NSYS_REPORT_ALIASES,
    NSYS_REPORTS_KEPT_AS_IS,
    ToolOutputError,
    canonical_nsys_report,
    nsys_skipped_reports,
    parse_nsys_csv,
    parse_nvprof_csv,
)
from profiler.tools.tau_profile import parse_tau_dir, parse_tau_profile

DATA = Path(__file__).parent / "data" / "tools"
TAU = DATA / "matmult-mpi-pthread.profile.0.0.0"
NVPROF = DATA / "nvprof-api-summary.csv"
NSYS = DATA / "nsys-cuda_gpu_kern_sum.csv"
REAL = Path(__file__).parent / "data" / "nvidia-real"
REAL_NSYS = REAL / "nsys-2022.4.2-demo"
REAL_NVPROF = REAL / "nvprof-11.8-no-driver" / "summary.csv"


def by_name(functions: list[dict[str, object]]) -> dict[object, dict[str, object]]:
    return {f["name"]: f for f in functions}


# --- TAU ---------------------------------------------------------------------------------------------------------


def test_tau_recorded_profile() -> None:
    r = parse_tau_profile(TAU)
    assert (r["node"], r["context"], r["thread"], r["metric"], r["truncated"]) == (0, 0, 0, "TIME", False)
    assert len(r["functions"]) == 12
    assert r["user_events"] == []
    assert r["metadata"]["TAU Version"] == "2.24.1-git"
    assert r["metadata"]["Metric Name"] == "TIME"
    assert r["metadata"]["CPU Type"] == "Intel(R) Core(TM) i5-4200U CPU @ 1.60GHz"
    assert r["metadata"]["TAU_TRACK_CUDA_INSTRUCTIONS"] == ""
    assert r["functions"][0] == {
        "name": ".TAU application",
        "calls": 1,
        "subroutines": 1,
        "exclusive_us": 7512,
        "inclusive_us": 7948941,
        "group": "TAU_USER",
    }
    f = by_name(r["functions"])
    assert f["compute [{/home/skhuvis/src/tau2/examples/mm/matmult.c} {97,0}]"] == {
        "name": "compute [{/home/skhuvis/src/tau2/examples/mm/matmult.c} {97,0}]",
        "calls": 1,
        "subroutines": 0,
        "exclusive_us": 4765900,
        "inclusive_us": 4765900,
        "group": "TAU_DEFAULT",
    }
    assert f["pthread_join"]["calls"] == 3
    assert f["pthread_join"]["exclusive_us"] == 443538
    assert f["MPI_Init_thread()  "]["group"] == "MPI"  # trailing spaces kept
    assert f["main [{/home/skhuvis/src/tau2/examples/mm/matmult.c} {219,0}]"]["subroutines"] == 9
    json.dumps(r)


def test_tau_name_with_spaces_quotes_and_braces() -> None:
    r = parse_tau_profile(DATA / "weird-names.profile.0.0.1")
    assert r["thread"] == 1
    assert len(r["functions"]) == 12
    assert r["functions"][10] == {
        "name": 'pthread_join "worker" {id=1, "x"} [{pool.c} {7,0}]  ',
        "calls": 3,
        "subroutines": 0,
        "exclusive_us": 443538,
        "inclusive_us": 443538,
        "group": "TAU_DEFAULT",
    }


def test_tau_user_events() -> None:
    r = parse_tau_profile(DATA / "userevents.profile.0.0.3")
    assert len(r["functions"]) == 12
    assert r["user_events"] == [
        {"name": "Message size sent to all nodes", "count": 4, "max": 4096, "min": 8, "mean": 2056, "sumsqr": 33554560}
    ]
    assert r["truncated"] is False


def test_tau_file_cut_mid_line_is_truncated() -> None:
    r = parse_tau_profile(DATA / "cut-mid-line.profile.0.0.2")
    assert r["truncated"] is True
    assert [f["name"].split(" ")[0] for f in r["functions"]] == [
        ".TAU",
        "main",
        "MPI_Init_thread()",
        "pthread_create",
        "do_work",
        "allocateMatrix",
        "initialize",
    ]
    assert r["metadata"]["TAU Version"] == "2.24.1-git"


def test_tau_cut_inside_a_number_is_truncated(tmp_path: Path) -> None:
    # the cut last line still parses ("... 2056 3355"), but a missing final newline means the writer was interrupted
    p = tmp_path / "profile.0.0.0"
    p.write_bytes((DATA / "userevents.profile.0.0.3").read_bytes()[:-5])
    r = parse_tau_profile(p)
    assert (r["truncated"], r["user_events"], len(r["functions"])) == (True, [], 12)


@pytest.mark.parametrize("cap", [1, 40, 200, 6000, 6100])
def test_tau_cap_smaller_than_file_is_truncated(cap: int) -> None:
    assert cap < TAU.stat().st_size
    r = parse_tau_profile(TAU, max_bytes=cap)
    assert r["truncated"] is True
    full = parse_tau_profile(TAU)["functions"]
    assert r["functions"] == full[: len(r["functions"])]  # only whole lines, never a half-read function


def test_tau_cap_at_file_size_is_not_truncated() -> None:
    assert parse_tau_profile(TAU, max_bytes=TAU.stat().st_size)["truncated"] is False


def test_tau_large_dump_stops_at_cap(tmp_path: Path) -> None:
    # a 1 GB dump in miniature: 200 000 copies of a recorded function line, read under a 1 MiB cap
    lines = TAU.read_text().splitlines(keepends=True)
    line = lines[12]
    n = 200_000
    big = tmp_path / "profile.0.0.0"
    big.write_text(f"{n} templated_functions_MULTI_TIME\n" + lines[1] + line * n + "0 aggregates\n")
    assert big.stat().st_size > 10 * 2**20
    r = parse_tau_profile(big, max_bytes=2**20)
    assert r["truncated"] is True
    assert 0 < len(r["functions"]) < n
    assert r["functions"][-1]["name"] == "pthread_join"


def test_tau_garbled_line_names_file_and_line() -> None:
    with pytest.raises(ToolOutputError) as e:
        parse_tau_profile(DATA / "garbled.profile.0.0.4")
    assert e.value.line == 5
    assert "garbled.profile.0.0.4:5" in str(e.value)
    assert "20x84" in str(e.value)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n\n",
        b"\x00\x01\x02binary",
        b"hello world\n",
        b"no newline at all",
        b"12 templated_functions_MULTI_TIME\nno header\n",
    ],
)
def test_tau_empty_or_foreign_file(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "profile.0.0.0"
    p.write_bytes(content)
    with pytest.raises(ToolOutputError) as e:
        parse_tau_profile(p)
    assert str(p) in str(e.value)


def test_tau_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ToolOutputError, match="cannot read"):
        parse_tau_profile(tmp_path / "profile.0.0.0")
    with pytest.raises(ToolOutputError, match="cannot read"):
        parse_tau_profile(tmp_path)


def test_tau_dir(tmp_path: Path) -> None:
    for name in ("profile.10.0.0", "profile.9.0.0", "profile.0.0.1"):
        shutil.copy(TAU, tmp_path / name)
    (tmp_path / "tau.edf").write_text("not a profile\n")
    multi = tmp_path / "MULTI__TIME"
    multi.mkdir()
    shutil.copy(DATA / "cut-mid-line.profile.0.0.2", multi / "profile.0.0.0")
    r = parse_tau_dir(tmp_path)
    assert [(p["node"], p["thread"]) for p in r["profiles"]] == [(0, 1), (9, 0), (10, 0), (0, 0)]
    assert r["truncated"] is True
    assert r["profiles"][0]["functions"] == parse_tau_profile(TAU)["functions"]
    json.dumps(r)


def test_tau_dir_without_profiles(tmp_path: Path) -> None:
    with pytest.raises(ToolOutputError, match="no TAU profile"):
        parse_tau_dir(tmp_path)
    with pytest.raises(ToolOutputError, match="not a directory"):
        parse_tau_dir(tmp_path / "absent")


# --- nvprof ------------------------------------------------------------------------------------------------------

CUDA_MEMCPY = {
    "Type": "API calls",
    "Time(%)": 78.020031,
    "Time": 7570567.921,
    "Calls": 11,
    "Avg": 688233.447,
    "Min": 684120.984,
    "Max": 693194.046,
    "Name": "cudaMemcpyAsync",
}


def test_nvprof_recorded_summary() -> None:
    r = parse_nvprof_csv(NVPROF)
    assert r["tool"] == "nvprof"
    assert r["truncated"] is False
    assert r["columns"] == ["Type", "Time(%)", "Time", "Calls", "Avg", "Min", "Max", "Name"]
    assert r["units"] == {"Time(%)": "%", "Time": "us", "Avg": "us", "Min": "us", "Max": "us"}
    assert len(r["rows"]) == 4
    assert r["rows"][0] == CUDA_MEMCPY
    assert {row["Name"]: row["Calls"] for row in r["rows"]} == {
        "cudaMemcpyAsync": 11,
        "cudaStreamCreateWithFlags": 8,
        "cudaFree": 4,
        "cuDevicePrimaryCtxRetain": 1,
    }
    assert r["rows"][2]["Min"] == 0.541
    assert r["messages"] == []  # "======== Profiling result:" is a banner, not a message
    json.dumps(r)


def test_nvprof_pid_preamble() -> None:
    r = parse_nvprof_csv(DATA / "nvprof-pid-preamble.csv")
    assert r["rows"] == parse_nvprof_csv(NVPROF)["rows"]
    assert r["messages"] == []  # "==4242== NVPROF is profiling process ..." is neither a warning nor an error


def test_nvprof_real_no_driver_is_a_result_with_a_message() -> None:
    # nvprof 11.8, no CUDA driver: its whole --log-file is one banner line
    r = parse_nvprof_csv(REAL_NVPROF)
    assert r == {
        "tool": "nvprof",
        "source": str(REAL_NVPROF),
        "columns": [],
        "units": {},
        "rows": [],
        "messages": ["Warning: unable to locate cuda driver library, GPU profiling skipped"],
        "truncated": False,
    }


def test_nvprof_messages_among_the_table(tmp_path: Path) -> None:
    # stderr mode: nvprof's ==PID== lines come before, inside and after the table
    header, units, *rows = NVPROF.read_text().splitlines(keepends=True)[1:]
    p = tmp_path / "nvprof.csv"
    p.write_text(
        "==77== NVPROF is profiling process 77, command: ./app\n"
        "==77== Warning: Some profiling data are not recorded.\n"
        + header
        + units
        + rows[0]
        + "======== Error: unified memory profiling failed.\n"
        + "".join(rows[1:])
        + "==77== warning: lower case too\n"
    )
    r = parse_nvprof_csv(p)
    assert r["rows"] == parse_nvprof_csv(NVPROF)["rows"]
    assert r["messages"] == [
        "Warning: Some profiling data are not recorded.",
        "Error: unified memory profiling failed.",
        "warning: lower case too",
    ]


@pytest.mark.parametrize(
    "content",
    ["======== Warning: No profile data collected.\n", "==1234== Error: out of memory\n\n======== Profiling result:\n"],
)
def test_nvprof_banner_lines_only_are_a_result(tmp_path: Path, content: str) -> None:
    p = tmp_path / "nvprof.csv"
    p.write_text(content)
    r = parse_nvprof_csv(p)
    assert (r["rows"], r["columns"], r["truncated"]) == ([], [], False)
    assert r["messages"] == [content.split("== ", 1)[1].splitlines()[0]]


def test_nvprof_empty_file_says_it_was_killed(tmp_path: Path) -> None:
    p = tmp_path / "summary.csv"
    p.write_bytes(b"")
    with pytest.raises(ToolOutputError, match=r"empty file: .*probably killed"):
        parse_nvprof_csv(p)


def test_nvprof_units_differ_between_runs(tmp_path: Path) -> None:
    p = tmp_path / "nvprof.csv"
    p.write_text(NVPROF.read_text().replace(",%,us,,us,us,us,", ",%,ms,,ms,us,s,"))
    assert parse_nvprof_csv(p)["units"] == {"Time(%)": "%", "Time": "ms", "Avg": "ms", "Min": "us", "Max": "s"}


def test_nvprof_cut_mid_row_is_truncated() -> None:
    r = parse_nvprof_csv(DATA / "nvprof-cut.csv")
    assert r["truncated"] is True
    assert [row["Name"] for row in r["rows"]] == ["cudaMemcpyAsync", "cudaStreamCreateWithFlags", "cudaFree"]


def test_nvprof_cap() -> None:
    size = NVPROF.stat().st_size
    r = parse_nvprof_csv(NVPROF, max_bytes=size - 10)
    assert r["truncated"] is True
    assert len(r["rows"]) == 3
    assert parse_nvprof_csv(NVPROF, max_bytes=10) == {
        "tool": "nvprof",
        "source": str(NVPROF),
        "columns": [],
        "units": {},
        "rows": [],
        "messages": [],
        "truncated": True,
    }


@pytest.mark.parametrize(
    "content",
    [
        "",
        "\n\n",
        "hello,world\n",
        '"Type","Time(%)","Time","Calls","Avg","Min","Max","Name"\n,%,us,,us,us,us,\n"API calls",1.0,2.0\n',
        '"Type","Time(%)","Name"\n"API calls,1.0,x\n"API calls",2.0,y\n',
    ],
)
def test_nvprof_garbled(tmp_path: Path, content: str) -> None:
    p = tmp_path / "nvprof.csv"
    p.write_text(content)
    with pytest.raises(ToolOutputError) as e:
        parse_nvprof_csv(p)
    assert str(p) in str(e.value)
    assert isinstance(e.value, WaapError)


# --- Nsight Systems ----------------------------------------------------------------------------------------------

FLASH = {
    "Time (%)": 50.1,
    "Total Time (ns)": 99385786,
    "Instances": 32,
    "Avg (ns)": 3105805.8,
    "Med (ns)": 3041179.0,
    "Min (ns)": 2987340,
    "Max (ns)": 3777790,
    "StdDev (ns)": 216832.4,
    "Name": "flash_attention_prefill_f16",
}


def test_nsys_recorded_kern_sum() -> None:
    r = parse_nsys_csv(NSYS, "cuda_gpu_kern_sum")
    assert (r["tool"], r["report"], r["truncated"]) == ("nsys", "cuda_gpu_kern_sum", False)
    assert len(r["rows"]) == 4
    assert r["rows"][0] == FLASH
    assert isinstance(r["rows"][0]["Total Time (ns)"], int)
    assert {row["Name"]: row["Instances"] for row in r["rows"]}["dequant_q4_k_f16"] == 193
    json.dumps(r)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("gpukernsum", "cuda_gpu_kern_sum"),
        ("cudaapisum", "cuda_api_sum"),
        ("gpumemtimesum", "cuda_gpu_mem_time_sum"),
        ("gpumemsizesum", "cuda_gpu_mem_size_sum"),
        ("gputrace", "cuda_gpu_trace"),
        ("nvtxsum", "nvtx_sum"),
        ("osrtsum", "osrt_sum"),
        ("cuda_gpu_kern_sum", "cuda_gpu_kern_sum"),
        ("cuda_gpu_kern_sum:base", "cuda_gpu_kern_sum"),
        ("GPUKERNSUM", "cuda_gpu_kern_sum"),
    ],
)
def test_nsys_report_names(old: str, new: str) -> None:
    assert canonical_nsys_report(old) == new


def test_nsys_preamble_lines() -> None:
    r = parse_nsys_csv(DATA / "nsys-preamble.csv", "cuda_gpu_kern_sum")
    assert r["rows"] == parse_nsys_csv(NSYS, "cuda_gpu_kern_sum")["rows"]


def test_nsys_old_generation_report() -> None:
    r = parse_nsys_csv(DATA / "nsys-gpukernsum-old.csv", "gpukernsum")
    assert (r["report"], r["report_requested"]) == ("cuda_gpu_kern_sum", "gpukernsum")
    assert r["columns"][-3:] == ["GridXYZ", "BlockXYZ", "Name"]
    assert r["rows"][0] == {
        **FLASH,
        "GridXYZ": "  256    1    1",
        "BlockXYZ": "  128    1    1",
        "Name": "flash_attention_prefill_f16<float, 2>(int, float*)",
    }


def test_nsys_header_only_is_an_empty_report() -> None:
    r = parse_nsys_csv(DATA / "nsys-header-only.csv", "cuda_gpu_kern_sum")
    assert r["rows"] == []
    assert r["truncated"] is False
    assert r["columns"][0] == "Time (%)"


def test_nsys_rows_do_not_depend_on_order(tmp_path: Path) -> None:
    header, *rows = NSYS.read_text().splitlines(keepends=True)
    p = tmp_path / "r.csv"
    p.write_text(header + "".join(reversed(rows)))
    assert parse_nsys_csv(p, "cuda_gpu_kern_sum")["rows"][-1] == FLASH


def test_nsys_cap_and_cut(tmp_path: Path) -> None:
    r = parse_nsys_csv(NSYS, "cuda_gpu_kern_sum", max_bytes=NSYS.stat().st_size - 1)
    assert r["truncated"] is True
    assert len(r["rows"]) == 3
    p = tmp_path / "cut.csv"
    p.write_bytes(NSYS.read_bytes()[:-30])
    r = parse_nsys_csv(p, "cuda_gpu_kern_sum")
    assert (r["truncated"], len(r["rows"])) == (True, 3)


@pytest.mark.parametrize(
    "content",
    [
        "",
        "Generating SQLite file report1.sqlite from report1.nsys-rep\n",
        NSYS.read_text().replace("32,3105805.8,", "32,"),
    ],
)
def test_nsys_garbled(tmp_path: Path, content: str) -> None:
    p = tmp_path / "r.csv"
    p.write_text(content)
    with pytest.raises(ToolOutputError) as e:
        parse_nsys_csv(p, "gpukernsum")
    assert str(p) in str(e.value)


def test_nsys_garbled_row_names_its_line(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text(NSYS.read_text().replace("32,3105805.8,", "32,"))
    with pytest.raises(ToolOutputError) as e:
        parse_nsys_csv(p, "gpukernsum")
    assert e.value.line == 2


# --- Nsight Systems 2022.4.2, real output (tests/data/nvidia-real) ------------------------------------------------


def test_nsys_real_osrt_sum() -> None:
    r = parse_nsys_csv(REAL_NSYS / "stats_osrtsum.csv", "osrtsum")
    assert (r["report"], r["report_requested"], r["truncated"]) == ("osrt_sum", "osrtsum", False)
    assert r["columns"] == [
        "Time (%)", "Total Time (ns)", "Num Calls", "Avg (ns)", "Med (ns)", "Min (ns)", "Max (ns)", "StdDev (ns)",
        "Name",
    ]
    assert len(r["rows"]) == 11
    assert r["rows"][0] == {
        "Time (%)": 78.4,
        "Total Time (ns)": 2280823,
        "Num Calls": 46,
        "Avg (ns)": 49583.1,
        "Med (ns)": 4391.5,
        "Min (ns)": 1002,
        "Max (ns)": 248563,
        "StdDev (ns)": 59875.4,
        "Name": "read",
    }
    assert {row["Name"]: row["Num Calls"] for row in r["rows"]}["open64"] == 36


def test_nsys_real_empty_report_is_still_an_error_for_the_parser() -> None:
    # the parser reads one file; that a 0-byte report means "no data" is post-processing's call
    with pytest.raises(ToolOutputError, match="empty file"):
        parse_nsys_csv(REAL_NSYS / "stats_cudaapisum.csv", "cudaapisum")


def _help_reports() -> list[str]:
    text = (REAL_NSYS / "nsys-stats-help-reports.txt").read_text()
    # "  gpukernsum[:base|:mangled] -- CUDA GPU Kernel Summary"
    return [line.split()[0].split("[")[0] for line in text.splitlines() if line.startswith("  ") and " -- " in line]


def test_nsys_aliases_match_the_real_2022_4_2_report_list() -> None:
    names = _help_reports()
    assert len(names) == 32 and len(set(names)) == 32
    assert "gpukernsum" in names and "osrtsum" in names and "unifiedmemory" in names
    # every old name the table maps is a report of the real 2022.4.2
    assert sorted(set(NSYS_REPORT_ALIASES) - set(names)) == []
    # every report of 2022.4.2 is either mapped or knowingly kept under its old name, never both
    assert sorted(set(names) - set(NSYS_REPORT_ALIASES) - NSYS_REPORTS_KEPT_AS_IS) == []
    assert sorted(NSYS_REPORTS_KEPT_AS_IS - set(names)) == []
    assert sorted(NSYS_REPORTS_KEPT_AS_IS & set(NSYS_REPORT_ALIASES)) == []
    for name in names:
        expected = NSYS_REPORT_ALIASES.get(name, name)
        assert canonical_nsys_report(name) == expected
        assert canonical_nsys_report(f"{name}:base") == expected


# The verified renames, written out so that a change to the table is a change here too. Per old name: its new name,
# its description in `nsys stats --help-reports` of the real nsys 2022.4.2 (checked against the recorded file below),
# and the new name's description in NVIDIA's "Post-Collection Analysis Guide", section "Statistical Reports Shipped
# With Nsight Systems" (https://docs.nvidia.com/nsight-systems/AnalysisGuide/index.html), copied from there. Where the
# two descriptions differ in words, the output columns both list match (see profiler/tools/nvidia_csv.py).
NSYS_RENAMES_VERIFIED = {
    "apigpusum": ("cuda_api_gpu_sum", "API & GPU Summary (CUDA API + kernels + mem ops)",
                  "CUDA Summary (API/Kernels/MemOps)"),
    "cudaapisum": ("cuda_api_sum", "CUDA API Summary", "CUDA API Summary"),
    "cudaapitrace": ("cuda_api_trace", "CUDA API Trace", "CUDA API Trace"),
    "dx11pixsum": ("dx11_pix_sum", "D3D11 PIX Range Summary", "DX11 PIX Range Summary"),
    "dx12gpumarkersum": ("dx12_gpu_marker_sum", "DX12 GPU Command List PIX Ranges Summary",
                         "DX12 GPU Command List PIX Ranges Summary"),
    "dx12pixsum": ("dx12_pix_sum", "D3D12 PIX Range Summary", "DX12 PIX Range Summary"),
    "gpukernsum": ("cuda_gpu_kern_sum", "CUDA GPU Kernel Summary", "CUDA GPU Kernel Summary"),
    "gpumemsizesum": ("cuda_gpu_mem_size_sum", "GPU Memory Operations Summary (by Size)",
                      "CUDA GPU MemOps Summary (by Size)"),
    "gpumemtimesum": ("cuda_gpu_mem_time_sum", "GPU Memory Operations Summary (by Time)",
                      "CUDA GPU MemOps Summary (by Time)"),
    "gpusum": ("cuda_gpu_sum", "GPU Summary (kernels + memory operations)", "CUDA GPU Summary (Kernels/MemOps)"),
    "gputrace": ("cuda_gpu_trace", "CUDA GPU Trace", "CUDA GPU Trace"),
    "kernexecsum": ("cuda_kern_exec_sum", "Summary of kernel launch and exec times",
                    "CUDA Kernel Launch & Exec Time Summary"),
    "kernexectrace": ("cuda_kern_exec_trace", "Kernel launch and exec time trace",
                      "CUDA Kernel Launch & Exec Time Trace"),
    "khrdebuggpusum": ("opengl_khr_gpu_range_sum", "OpenGL KHR_debug GPU Range Summary",
                       "OpenGL KHR_debug GPU Range Summary"),
    "khrdebugsum": ("opengl_khr_range_sum", "OpenGL KHR_debug Range Summary", "OpenGL KHR_debug Range Summary"),
    "nvtxgpuproj": ("nvtx_gpu_proj_trace", "NVTX range projection", "NVTX GPU Projection Trace"),
    "nvtxkernsum": ("nvtx_kern_sum", "NVTX Range Kernel Summary", "NVTX Range Kernel Summary"),
    "nvtxppsum": ("nvtx_pushpop_sum", "NVTX Push/Pop Range Summary", "NVTX Push/Pop Range Summary"),
    "nvtxpptrace": ("nvtx_pushpop_trace", "NVTX Push/Pop Range Trace", "NVTX Push/Pop Range Trace"),
    "nvtxsesum": ("nvtx_startend_sum", "NVTX Start/End Range Summary", "NVTX Start/End Range Summary"),
    "nvtxsum": ("nvtx_sum", "NVTX Range Summary", "NVTX Range Summary"),
    "openaccsum": ("openacc_sum", "OpenACC Summary", "OpenACC Summary"),
    "openmpevtsum": ("openmp_sum", "OpenMP Event Summary", "OpenMP Summary"),
    "osrtsum": ("osrt_sum", "OS Runtime Summary", "OS Runtime Summary"),
    "umcpupagefaults": ("um_cpu_page_faults_sum", "Unified Memory CPU Page Faults Summary",
                        "Unified Memory CPU Page Faults Summary"),
    "unifiedmemory": ("um_sum", "Unified Memory Analysis Summary", "Unified Memory Analysis Summary"),
    "unifiedmemorytotals": ("um_total_sum", "Unified Memory Totals Summary", "Unified Memory Totals Summary"),
    "vulkanapisum": ("vulkan_api_sum", "Vulkan API Summary", "Vulkan API Summary"),
    "vulkanapitrace": ("vulkan_api_trace", "Vulkan API Trace", "Vulkan API Trace"),
    "vulkangpumarkersum": ("vulkan_gpu_marker_sum", "Vulkan GPU Range Summary", "Vulkan GPU Range Summary"),
    "vulkanmarkerssum": ("vulkan_marker_sum", "Vulkan Range Summary", "Vulkan Range Summary"),
    "wddmqueuesdetails": ("wddm_queue_sum", "WDDM Queue Utilization Summary", "WDDM Queue Utilization Summary"),
}


def test_nsys_aliases_are_the_verified_renames() -> None:
    verified = {old: new for old, (new, _, _) in NSYS_RENAMES_VERIFIED.items()}
    assert verified == NSYS_REPORT_ALIASES
    assert not NSYS_REPORTS_KEPT_AS_IS  # every 2022.4.2 report's new name is sourced
    # the old descriptions written above are what the real nsys 2022.4.2 says
    text = (REAL_NSYS / "nsys-stats-help-reports.txt").read_text()
    described = {line.split()[0].split("[")[0]: line.split(" -- ", 1)[1].strip()
                 for line in text.splitlines() if line.startswith("  ") and " -- " in line}
    assert {old: then for old, (_, then, _) in NSYS_RENAMES_VERIFIED.items()} == described


def test_nsys_aliases_are_one_to_one() -> None:
    new = list(NSYS_REPORT_ALIASES.values())
    assert len(set(new)) == len(new)
    assert not set(new) & set(NSYS_REPORT_ALIASES)  # a new name is never an old one


REAL_SKIPPED = {
    "nvtx_sum": "does not contain NV Tools Extension (NVTX) data",
    "cuda_api_sum": "does not contain CUDA trace data",
    "cuda_gpu_kern_sum": "does not contain CUDA kernel data",
    "cuda_gpu_mem_time_sum": "does not contain GPU memory data",
    "cuda_gpu_mem_size_sum": "does not contain GPU memory data",
    "openmp_sum": "does not contain OpenMP event data",
    "opengl_khr_range_sum": "does not contain KHR Extension (KHR_DEBUG) data",
    "opengl_khr_gpu_range_sum": "does not contain GPU KHR Extension (KHR_DEBUG) data",
    "vulkan_marker_sum": "does not contain Vulkan Debug Extension (Vulkan Debug Util) data",
    "vulkan_gpu_marker_sum": "does not contain GPU Vulkan Debug Extension (GPU Vulkan Debug markers) data",
    "dx11_pix_sum": "does not contain DX11 CPU debug markers",
    "dx12_gpu_marker_sum": "does not contain DX12 GPU debug markers",
    "dx12_pix_sum": "does not contain DX12 CPU debug markers",
    "wddm_queue_sum": "does not contain WDDM context data",
    "um_sum": "does not contain CUDA memory transfers data",
    "um_total_sum": "does not contain CUDA memory transfers data",
    "um_cpu_page_faults_sum": "does not contain CUDA Unified Memory CPU page faults data",
    "openacc_sum": "does not contain OpenACC event data",
}


def test_nsys_skipped_reports_real_output() -> None:
    text = (REAL_NSYS / "nsys-stats-output.txt").read_bytes().decode()  # as captured: read_text() would drop \r
    assert "\r" in text  # the progress bar, redrawn in place
    skipped = nsys_skipped_reports(text)
    assert skipped == REAL_SKIPPED
    # exactly the reports nsys left as 0-byte files
    empty = {canonical_nsys_report(p.name[len("stats_") : -len(".csv")]) for p in REAL_NSYS.glob("stats_*.csv")
             if p.stat().st_size == 0}
    assert set(skipped) == empty
    assert "osrt_sum" not in skipped  # PROCESSED


def test_nsys_skipped_reports_newer_layout() -> None:
    # nsys >= 2023 prints the outcome on a line of its own, and in console mode the report's table in between
    text = (
        "Generating SQLite file r.sqlite from r.nsys-rep\n"
        "Processing [r.sqlite] with [/opt/nvidia/nsight-systems/2024.5.1/host-linux-x64/reports/nvtx_sum.py]... \n"
        "SKIPPED: r.sqlite does not contain NV Tools Extension (NVTX) data.\n\n"
        "Processing [r.sqlite] with [/opt/nvidia/nsight-systems/2024.5.1/host-linux-x64/reports/osrt_sum.py]... \n\n"
        " ** OS Runtime Summary (osrt_sum):\n\n Time (%)  Total Time (ns)  Num Calls  Name\n"
        " 90.0  100  1  SKIPPED: a function's name, not an outcome\n\n"
        "Processing [r.sqlite] with [C:\\nsys\\reports\\cudaapisum.py]...\r\n"
        "SKIPPED: C:\\r.sqlite does not contain CUDA trace data.\r\n"
    )
    assert nsys_skipped_reports(text) == {
        "nvtx_sum": "does not contain NV Tools Extension (NVTX) data",
        "cuda_api_sum": "does not contain CUDA trace data",
    }


def test_nsys_skipped_reports_first_reason_wins_and_odd_reasons_are_kept() -> None:
    text = (
        "Processing [a.sqlite] with [/r/osrtsum.py] to [/w/s_osrtsum.csv]... SKIPPED: something else.\n"
        "Processing [a.sqlite] with [/r/osrt_sum.py]... SKIPPED: a.sqlite does not contain OS runtime data.\n"
        "Processing [a.sqlite] with [/r/nvtxsum.py]... SKIPPED\n"
    )
    assert nsys_skipped_reports(text) == {"osrt_sum": "something else", "nvtx_sum": "skipped"}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\r\r\n\n",
        "SKIPPED: x.sqlite does not contain CUDA trace data.\n",  # no report being processed
        "Processing [",
        "Processing [r.sqlite] with [",
        "Processing [r.sqlite] with [/r/../$(rm -rf).py]... SKIPPED: no\n",  # not a report name
        "Processing [r.sqlite] with [/r/osrtsum.py]... PROCESSED\nSKIPPED: late\n",
        "\x00\x1b[2K\ufffd" * 1000,
        "Exporting 144 events: [==8%   ]\r" * 5000,
    ],
)
def test_nsys_skipped_reports_odd_text(text: str) -> None:
    assert nsys_skipped_reports(text) == {}
