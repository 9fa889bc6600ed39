"""Tool output parsers on recorded real output (tests/data/tools, see its README) and minimal edits of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from profiler.errors import WaapError
from profiler.tools.nvidia_csv import ToolOutputError, canonical_nsys_report, parse_nsys_csv, parse_nvprof_csv
from profiler.tools.tau_profile import parse_tau_dir, parse_tau_profile

DATA = Path(__file__).parent / "data" / "tools"
TAU = DATA / "matmult-mpi-pthread.profile.0.0.0"
NVPROF = DATA / "nvprof-api-summary.csv"
NSYS = DATA / "nsys-cuda_gpu_kern_sum.csv"


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
    json.dumps(r)


def test_nvprof_pid_preamble() -> None:
    assert parse_nvprof_csv(DATA / "nvprof-pid-preamble.csv")["rows"] == parse_nvprof_csv(NVPROF)["rows"]


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
        "truncated": True,
    }


@pytest.mark.parametrize(
    "content",
    [
        "",
        "======== Warning: No profile data collected.\n",
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
