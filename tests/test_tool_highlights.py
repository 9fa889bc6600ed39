"""Highlights (where the time went) from the parsers' output on recorded real dumps: TAU's profile.N.C.T, nvprof's
CSV and an nsys stats CSV from a GPU (tests/data/tools, copies of ../shared/fixtures), the real nsys 2022.4 on the
demo (tests/data/nvidia-real), and their text form."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Dict, List

import pytest

from profiler.summary import format_highlights
from profiler.tools.highlights import tool_highlights
from profiler.tools.nvidia_csv import parse_nsys_csv, parse_nvprof_csv
from profiler.tools.tau_profile import parse_tau_dir

from .conftest import REPO_ROOT

DATA = REPO_ROOT / "tests" / "data" / "tools"
TAU_FILE = DATA / "matmult-mpi-pthread.profile.0.0.0"
NVPROF_CSV = DATA / "nvprof-api-summary.csv"
NSYS_KERNELS = DATA / "nsys-cuda_gpu_kern_sum.csv"
NSYS_OSRT = REPO_ROOT / "tests" / "data" / "nvidia-real" / "nsys-2022.4.2-demo" / "stats_osrtsum.csv"


def _tau(tmp_path: Path, copies: int) -> Dict[str, Any]:
    for thread in range(copies):
        shutil.copy(TAU_FILE, tmp_path / f"profile.0.0.{thread}")
    return parse_tau_dir(tmp_path)


def test_tau_ranks_functions_by_exclusive_time_with_their_share(tmp_path: Path) -> None:
    parsed = _tau(tmp_path, 1)
    [block] = tool_highlights("tau", "profile", parsed)
    assert (block["table"], block["ranked_by"]) == ("functions", "exclusive time")
    rows = block["rows"]
    assert len(rows) == 5
    seconds = [r["seconds"] for r in rows]
    assert seconds == sorted(seconds, reverse=True)
    functions = parsed["profiles"][0]["functions"]
    top = max(functions, key=lambda f: f["exclusive_us"])
    assert rows[0]["name"] == top["name"].strip() and rows[0]["calls"] == top["calls"]
    assert math.isclose(rows[0]["seconds"], top["exclusive_us"] / 1e6)
    total = sum(f["exclusive_us"] for f in functions)
    assert math.isclose(rows[0]["percent"], round(100 * top["exclusive_us"] / total, 2))


def test_tau_sums_each_function_over_every_thread(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = tool_highlights("tau", "profile", _tau(tmp_path / "one", 1))
    two = tool_highlights("tau", "profile", _tau(tmp_path / "two", 2))
    for a, b in zip(one[0]["rows"], two[0]["rows"]):
        assert a["name"] == b["name"]
        assert math.isclose(b["seconds"], 2 * a["seconds"], rel_tol=1e-9) and b["calls"] == 2 * a["calls"]
        assert a["percent"] == b["percent"]  # the share does not change when every thread did the same


def test_nvprof_times_are_converted_from_the_unit_row_and_grouped_by_type() -> None:
    parsed = parse_nvprof_csv(NVPROF_CSV)
    blocks = tool_highlights("nvprof", "summary", parsed)
    assert [b["table"] for b in blocks] == list(dict.fromkeys(str(r["Type"]) for r in parsed["rows"]))
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[parsed["units"]["Time"]]
    first = max(parsed["rows"], key=lambda r: r["Time"])
    row = blocks[0]["rows"][0]
    assert row["name"] == first["Name"] and row["calls"] == first["Calls"]
    assert math.isclose(row["seconds"], first["Time"] * scale, rel_tol=1e-9)
    assert row["percent"] == round(first["Time(%)"], 2)


@pytest.mark.parametrize(("path", "report", "calls_column"), [
    (NSYS_KERNELS, "cuda_gpu_kern_sum", "Instances"),
    (NSYS_OSRT, "osrtsum", "Num Calls"),
])
def test_nsys_reports_rank_by_total_time(path: Path, report: str, calls_column: str) -> None:
    parsed = parse_nsys_csv(path, report)
    [block] = tool_highlights("nsys", parsed["report"], parsed)
    assert block["table"] == parsed["report"] and block["ranked_by"] == "total time"
    ordered = sorted(parsed["rows"], key=lambda r: r["Total Time (ns)"], reverse=True)[:5]
    assert [r["name"] for r in block["rows"]] == [r["Name"] for r in ordered]
    assert [r["calls"] for r in block["rows"]] == [r[calls_column] for r in ordered]
    assert [r["percent"] for r in block["rows"]] == [r["Time (%)"] for r in ordered]
    assert math.isclose(block["rows"][0]["seconds"], ordered[0]["Total Time (ns)"] / 1e9)


def test_the_real_nsys_osrt_report_puts_read_first() -> None:
    [block] = tool_highlights("nsys", "osrt_sum", parse_nsys_csv(NSYS_OSRT, "osrtsum"))
    assert block["rows"][0] == {"name": "read", "seconds": 0.002280823, "percent": 78.4, "calls": 46}


@pytest.mark.parametrize("parsed", [
    None, [], "text", {}, {"rows": "x"}, {"columns": ["Total Time (ns)"], "rows": [{"Name": 3}, "row", {}]},
    {"columns": ["Total Time (ns)", "Name"], "rows": [{"Name": "x", "Total Time (ns)": float("nan")}]},
    {"units": {"Time": "fortnights"}, "rows": [{"Name": "k", "Time": 1}]},
    {"profiles": [{"functions": [{"name": "f", "exclusive_us": "12"}, None]}, "profile"]},
])
@pytest.mark.parametrize("tool", ["tau", "nvprof", "nsys", "other"])
def test_odd_parsed_data_gives_no_highlight_and_never_raises(tool: str, parsed: Any) -> None:
    assert tool_highlights(tool, "t", parsed) == []


def test_a_report_without_a_time_column_gives_none() -> None:
    parsed = {"report": "cuda_gpu_mem_size_sum", "columns": ["Total (MB)", "Count", "Name"],
              "rows": [{"Total (MB)": 1.5, "Count": 3, "Name": "[CUDA memcpy HtoD]"}]}
    assert tool_highlights("nsys", "cuda_gpu_mem_size_sum", parsed) == []


def test_the_text_form_lists_each_table_with_share_time_calls_and_name() -> None:
    blocks: List[Dict[str, Any]] = tool_highlights("nsys", "osrt_sum", parse_nsys_csv(NSYS_OSRT, "osrtsum"))
    text = format_highlights(blocks).splitlines()
    assert text[0] == "osrt_sum, by total time:"
    assert text[1].split() == ["78.4%", "2.28", "ms", "46x", "read"]
    assert len(text) == 6
    long = [{"table": "t", "ranked_by": "time", "rows": [{"name": "n" * 100, "seconds": 2.0, "percent": None,
                                                          "calls": None}]}]
    assert format_highlights(long, max_name=10).splitlines()[1].split() == ["2", "s", "n" * 9 + "…"]
