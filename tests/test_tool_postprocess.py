"""Post-processing of what the real NVIDIA tools left (tests/data/nvidia-real, see its README), and of edits of it:
one report at a time for nsys, nvprof's own messages, the manifest entry that results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

from profiler.tools.nvidia_csv import canonical_nsys_report
from profiler.tools.postprocess import MAX_MESSAGES, ToolReport, postprocess_tool

DATA = Path(__file__).parent / "data"
REAL_NSYS = DATA / "nvidia-real" / "nsys-2022.4.2-demo"
REAL_NVPROF = DATA / "nvidia-real" / "nvprof-11.8-no-driver" / "summary.csv"
KERN_SUM = DATA / "tools" / "nsys-cuda_gpu_kern_sum.csv"  # real nsys output of a CUDA app (../shared/fixtures)
STATS_OUTPUT = (REAL_NSYS / "nsys-stats-output.txt").read_bytes().decode()

# the 18 reports the real nsys 2022.4.2 wrote as 0-byte files, by their current names
REAL_EMPTY = sorted(
    canonical_nsys_report(p.name[len("stats_") : -len(".csv")])
    for p in REAL_NSYS.glob("stats_*.csv")
    if p.stat().st_size == 0
)


def _nsys_run(tmp_path: Path) -> Path:
    """A run directory whose output/tools/nsys holds the real stats_*.csv files, as nsys left them."""
    dump = tmp_path / "output" / "tools" / "nsys"
    dump.mkdir(parents=True)
    for p in REAL_NSYS.glob("stats_*.csv"):
        shutil.copy(p, dump / p.name)
    return dump


def _json(tmp_path: Path, relative: str) -> Any:
    return json.loads((tmp_path / relative).read_text())


def _entry(report: ToolReport) -> Dict[str, Any]:
    entry = report.to_json()
    assert json.loads(json.dumps(entry)) == entry  # what the manifest gets
    return entry


def test_real_nsys_empty_reports_are_not_errors(tmp_path: Path) -> None:
    _nsys_run(tmp_path)
    assert len(REAL_EMPTY) == 18
    report = postprocess_tool("nsys", tmp_path, tmp_path / "output", exit_code=0)
    assert (report.status, report.error, report.report_errors) == ("ok", None, {})
    assert report.files == ["tools/nsys/osrt_sum.json"]
    assert sorted(p.name for p in (tmp_path / "tools" / "nsys").iterdir()) == ["osrt_sum.json"]
    # no output of nsys stats given: which reports are empty is known, not why
    assert report.empty == {name: None for name in REAL_EMPTY}
    assert "osrt_sum" not in report.empty
    assert len(report.dumps) == 19
    osrt = _json(tmp_path, "tools/nsys/osrt_sum.json")
    assert (osrt["report"], osrt["report_requested"]) == ("osrt_sum", "osrtsum")
    read = {row["Name"]: row for row in osrt["rows"]}["read"]
    assert (read["Num Calls"], read["Total Time (ns)"]) == (46, 2280823)
    assert len(osrt["rows"]) == 11
    entry = _entry(report)
    assert entry["empty"]["cuda_api_sum"] is None and entry["messages"] == []


def test_real_nsys_stats_output_says_why(tmp_path: Path) -> None:
    _nsys_run(tmp_path)
    report = postprocess_tool("nsys", tmp_path, tmp_path / "output", exit_code=0, tool_output=STATS_OUTPUT)
    assert (report.status, report.files) == ("ok", ["tools/nsys/osrt_sum.json"])
    assert sorted(report.empty) == REAL_EMPTY
    assert report.empty["cuda_api_sum"] == "does not contain CUDA trace data"
    assert report.empty["cuda_gpu_kern_sum"] == "does not contain CUDA kernel data"
    assert report.empty["dx11_pix_sum"] == "does not contain DX11 CPU debug markers"
    reasons = list(report.empty.values())
    assert all(isinstance(r, str) and r.startswith("does not contain ") for r in reasons), reasons
    assert list(report.empty) == sorted(report.empty)


def test_garbled_report_among_good_ones_fails_only_that_report(tmp_path: Path) -> None:
    dump = _nsys_run(tmp_path)
    shutil.copy(KERN_SUM, dump / "stats_gpukernsum.csv")  # this one has data now
    good = (dump / "stats_osrtsum.csv").read_text()
    (dump / "stats_cudaapisum.csv").write_text(good.replace("46,49583.1,", "46,"))  # a row short of one field
    report = postprocess_tool("nsys", tmp_path, tmp_path / "output", exit_code=0, tool_output=STATS_OUTPUT)
    assert (report.status, report.error) == ("ok", None)
    assert report.files == ["tools/nsys/cuda_gpu_kern_sum.json", "tools/nsys/osrt_sum.json"]
    assert list(report.report_errors) == ["cuda_api_sum"]
    message = report.report_errors["cuda_api_sum"]
    assert message.startswith("ToolOutputError: ") and "stats_cudaapisum.csv:2" in message
    assert "8 fields where the header has 9" in message
    assert "cuda_api_sum" not in report.empty and "cuda_gpu_kern_sum" not in report.empty
    assert sorted(report.empty) == sorted(set(REAL_EMPTY) - {"cuda_api_sum", "cuda_gpu_kern_sum"})
    assert not (tmp_path / "tools" / "nsys" / "cuda_api_sum.json").exists()
    kern = _json(tmp_path, "tools/nsys/cuda_gpu_kern_sum.json")
    assert kern["rows"][0]["Name"] == "flash_attention_prefill_f16"


def test_no_report_parsed_and_one_broken_is_a_failure(tmp_path: Path) -> None:
    dump = _nsys_run(tmp_path)
    (dump / "stats_osrtsum.csv").write_text("Generating SQLite file report.sqlite from report.nsys-rep\n")
    report = postprocess_tool("nsys", tmp_path, tmp_path / "output", exit_code=0)
    assert (report.status, report.files) == ("failed", [])
    assert list(report.report_errors) == ["osrt_sum"]
    assert report.error is not None
    assert report.error.startswith("no nsys report could be parsed: osrt_sum: ToolOutputError: ")
    assert "no nsys stats CSV header" in report.error
    assert sorted(report.empty) == REAL_EMPTY  # still said


def test_only_empty_reports_is_ok(tmp_path: Path) -> None:
    dump = _nsys_run(tmp_path)
    (dump / "stats_osrtsum.csv").unlink()
    report = postprocess_tool("nsys", tmp_path, tmp_path / "output", exit_code=0)
    assert (report.status, report.error, report.files) == ("ok", None, [])
    assert sorted(report.empty) == REAL_EMPTY
    # the existing rule still holds: nothing parsed and the app failed is a failed tool
    failed = postprocess_tool("nsys", tmp_path, tmp_path / "output", exit_code=2)
    assert (failed.status, failed.error) == ("failed", "the app exited with code 2")


def test_skipped_report_without_a_file(tmp_path: Path) -> None:
    # a newer nsys may write no file for a report it skipped: its output alone says it is empty
    dump = tmp_path / "output" / "tools" / "nsys"
    dump.mkdir(parents=True)
    shutil.copy(REAL_NSYS / "stats_osrtsum.csv", dump / "stats_osrt_sum.csv")
    output = (
        "Processing [r.sqlite] with [/opt/nsys/reports/cuda_api_sum.py]... \n"
        "SKIPPED: r.sqlite does not contain CUDA trace data.\n"
        "Processing [r.sqlite] with [/opt/nsys/reports/osrt_sum.py]... \nPROCESSED\n"
    )
    report = postprocess_tool("nsys", tmp_path, tmp_path / "output", tool_output=output)
    assert (report.status, report.files) == ("ok", ["tools/nsys/osrt_sum.json"])
    assert report.empty == {"cuda_api_sum": "does not contain CUDA trace data"}


def test_nsys_without_any_report_still_fails(tmp_path: Path) -> None:
    dump = tmp_path / "output" / "tools" / "nsys"
    dump.mkdir(parents=True)
    (dump / "report.nsys-rep").write_bytes(b"\x00rep")
    for output in (None, "", "garbage\r\n"):
        report = postprocess_tool("nsys", tmp_path, tmp_path / "output", tool_output=output)
        assert (report.status, report.error, report.empty) == ("failed", "nsys stats wrote no CSV report", {})


def test_both_generations_of_one_report_keep_both(tmp_path: Path) -> None:
    dump = tmp_path / "output" / "tools" / "nsys"
    dump.mkdir(parents=True)
    shutil.copy(KERN_SUM, dump / "stats_cuda_gpu_kern_sum.csv")
    shutil.copy(KERN_SUM, dump / "stats_gpukernsum.csv")
    report = postprocess_tool("nsys", tmp_path, tmp_path / "output")
    assert report.files == ["tools/nsys/cuda_gpu_kern_sum.json", "tools/nsys/gpukernsum.json"]


def test_report_over_the_cap_is_not_parsed_the_others_are(tmp_path: Path) -> None:
    dump = _nsys_run(tmp_path)
    shutil.copy(KERN_SUM, dump / "stats_gpukernsum.csv")
    cap = (dump / "stats_osrtsum.csv").stat().st_size - 1
    assert (dump / "stats_gpukernsum.csv").stat().st_size <= cap
    report = postprocess_tool("nsys", tmp_path, tmp_path / "output", max_bytes=cap)
    assert (report.status, report.files) == ("ok", ["tools/nsys/cuda_gpu_kern_sum.json"])
    assert (report.truncated, report.skipped) == (True, ["output/tools/nsys/stats_osrtsum.csv"])
    assert "osrt_sum" not in report.empty and report.report_errors == {}
    (dump / "stats_gpukernsum.csv").unlink()
    alone = postprocess_tool("nsys", tmp_path, tmp_path / "output", max_bytes=cap)
    assert (alone.status, alone.files) == ("failed", [])
    assert alone.error == "no nsys report could be parsed: stats_osrtsum.csv: over the size cap, not parsed"


def _nvprof_run(tmp_path: Path, content: Optional[bytes]) -> None:
    dump = tmp_path / "output" / "tools" / "nvprof"
    dump.mkdir(parents=True)
    if content is not None:
        (dump / "summary.csv").write_bytes(content)


def test_real_nvprof_without_driver_is_ok_with_its_message(tmp_path: Path) -> None:
    _nvprof_run(tmp_path, REAL_NVPROF.read_bytes())
    report = postprocess_tool("nvprof", tmp_path, tmp_path / "output", exit_code=0)
    assert (report.status, report.error, report.files) == ("ok", None, ["tools/nvprof/summary.json"])
    assert report.messages == ["nvprof: Warning: unable to locate cuda driver library, GPU profiling skipped"]
    summary = _json(tmp_path, "tools/nvprof/summary.json")
    assert (summary["rows"], summary["messages"]) == (
        [], ["Warning: unable to locate cuda driver library, GPU profiling skipped"])
    assert _entry(report)["messages"] == report.messages


def test_nvprof_table_has_no_messages(tmp_path: Path) -> None:
    _nvprof_run(tmp_path, (DATA / "tools" / "nvprof-pid-preamble.csv").read_bytes())
    report = postprocess_tool("nvprof", tmp_path, tmp_path / "output", exit_code=0)
    assert (report.status, report.messages, report.empty, report.report_errors) == ("ok", [], {}, {})
    assert len(_json(tmp_path, "tools/nvprof/summary.json")["rows"]) == 4


def test_nvprof_messages_in_the_entry_are_few_and_unique(tmp_path: Path) -> None:
    warnings = [f"==9== Warning: number {i % 30}\n" for i in range(300)]  # 30 distinct, each ten times
    _nvprof_run(tmp_path, "".join(warnings).encode() + (DATA / "tools" / "nvprof-api-summary.csv").read_bytes())
    report = postprocess_tool("nvprof", tmp_path, tmp_path / "output", exit_code=0)
    assert report.status == "ok"
    assert report.messages == [f"nvprof: Warning: number {i}" for i in range(MAX_MESSAGES)] + [
        f"nvprof: {30 - MAX_MESSAGES} more messages in tools/nvprof/summary.json"
    ]
    assert len(_json(tmp_path, "tools/nvprof/summary.json")["messages"]) == 300  # all of them kept there


def test_empty_nvprof_summary_is_a_clear_failure(tmp_path: Path) -> None:
    _nvprof_run(tmp_path, b"")
    report = postprocess_tool("nvprof", tmp_path, tmp_path / "output", exit_code=137)
    assert (report.status, report.files) == ("failed", [])
    assert report.error is not None
    assert report.error.startswith(
        "nvprof wrote an empty summary.csv: it was probably killed before it could write; ")
    assert "(the app exited with code 137)" in report.error
    assert not (tmp_path / "tools").exists()
