"""Parsers for the CSV summaries of NVIDIA's command-line profilers: nvprof (JetPack 4, compute capability < 8.0)
and Nsight Systems' ``nsys stats --format csv`` (both generations of report names), and for what ``nsys stats``
prints while it runs (which reports it skipped, and why).

Also home of ``ToolOutputError`` and the size-capped reader the TAU parser shares.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Tuple, Union

from profiler.errors import WaapError, where

__all__ = [
    "DEFAULT_MAX_BYTES",
    "NSYS_REPORTS_KEPT_AS_IS",
    "NSYS_REPORT_ALIASES",
    "ToolOutputError",
    "canonical_nsys_report",
    "nsys_skipped_reports",
    "parse_nsys_csv",
    "parse_nvprof_csv",
    "read_capped",
]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""A profiler dump can reach gigabytes; past this many bytes we stop reading and mark the result truncated."""

Number = Union[int, float]

# nsys 2023.1 renamed its stats reports; a run may meet either generation, results always carry the new name.
# Sources:
# - every OLD name (key) below was checked against the real Nsight Systems 2022.4.2's `nsys stats --help-reports`
#   (tests/data/nvidia-real/nsys-2022.4.2-demo/nsys-stats-help-reports.txt; tests/test_tool_parsers.py keeps it so);
# - every NEW name (value), all 32, is a report of NVIDIA's "Post-Collection Analysis Guide", section "Statistical
#   Reports Shipped With Nsight Systems" (https://docs.nvidia.com/nsight-systems/AnalysisGuide/index.html), which
#   lists the reports by their current names, each with a description ("osrt_sum -- OS Runtime Summary"). Each old
#   name was matched to the report the Guide describes as 2022.4.2's --help-reports describes it ("osrtsum -- OS
#   Runtime Summary"); where the words differ (apigpusum, gpumemsizesum, gpumemtimesum, gpusum, kernexecsum,
#   kernexectrace, dx11pixsum and dx12pixsum: "D3D11/D3D12" then, "DX11/DX12" now; openmpevtsum: "OpenMP Event
#   Summary" then, "OpenMP Summary" now) by the output columns both list too. nvtxgpuproj ("NVTX range projection")
#   is nvtx_gpu_proj_trace: the Guide gives it exactly the columns of 2022.4.2's nvtxgpuproj.py (Name, Projected
#   Start, Projected Duration, Orig Start, ... RangeStack), while nvtx_gpu_proj_sum is a per-name summary;
# - cross-check: a real nsys 2023.1.2 `nsys stats` run (published in a public project) runs the same 19 default
#   reports in the same order as 2022.4.2 (tests/data/nvidia-real/nsys-2022.4.2-demo/nsys-stats-output.txt) with
#   the same SKIPPED reasons (but um_sum's and um_total_sum's), under the new names: nvtx_sum, osrt_sum,
#   cuda_api_sum, cuda_gpu_kern_sum, cuda_gpu_mem_time_sum, cuda_gpu_mem_size_sum, openmp_sum, opengl_khr_range_sum,
#   opengl_khr_gpu_range_sum, vulkan_marker_sum, vulkan_gpu_marker_sum, dx11_pix_sum, dx12_gpu_marker_sum,
#   dx12_pix_sum, wddm_queue_sum, um_sum, um_total_sum, um_cpu_page_faults_sum, openacc_sum.
#   ../shared/fixtures/nvidia-profilers holds a recorded cuda_gpu_kern_sum too.
# A same-named report may have changed its columns since: 2022.4.2's gpukernsum has GridXYZ and BlockXYZ, the
# Guide's cuda_gpu_kern_sum does not (they moved to a new report, cuda_gpu_kern_gb_sum).
NSYS_REPORT_ALIASES: Dict[str, str] = {
    "apigpusum": "cuda_api_gpu_sum",
    "cudaapisum": "cuda_api_sum",
    "cudaapitrace": "cuda_api_trace",
    "dx11pixsum": "dx11_pix_sum",
    "dx12gpumarkersum": "dx12_gpu_marker_sum",
    "dx12pixsum": "dx12_pix_sum",
    "gpukernsum": "cuda_gpu_kern_sum",
    "gpumemsizesum": "cuda_gpu_mem_size_sum",
    "gpumemtimesum": "cuda_gpu_mem_time_sum",
    "gpusum": "cuda_gpu_sum",
    "gputrace": "cuda_gpu_trace",
    "kernexecsum": "cuda_kern_exec_sum",
    "kernexectrace": "cuda_kern_exec_trace",
    "khrdebuggpusum": "opengl_khr_gpu_range_sum",
    "khrdebugsum": "opengl_khr_range_sum",
    "nvtxgpuproj": "nvtx_gpu_proj_trace",
    "nvtxkernsum": "nvtx_kern_sum",
    "nvtxppsum": "nvtx_pushpop_sum",
    "nvtxpptrace": "nvtx_pushpop_trace",
    "nvtxsesum": "nvtx_startend_sum",
    "nvtxsum": "nvtx_sum",
    "openaccsum": "openacc_sum",
    "openmpevtsum": "openmp_sum",
    "osrtsum": "osrt_sum",
    "umcpupagefaults": "um_cpu_page_faults_sum",
    "unifiedmemory": "um_sum",
    "unifiedmemorytotals": "um_total_sum",
    "vulkanapisum": "vulkan_api_sum",
    "vulkanapitrace": "vulkan_api_trace",
    "vulkangpumarkersum": "vulkan_gpu_marker_sum",
    "vulkanmarkerssum": "vulkan_marker_sum",
    "wddmqueuesdetails": "wddm_queue_sum",
}

# Reports of nsys 2022.4.2 (its --help-reports) knowingly left under their old name, for want of a source for the new
# one. None now: the Guide above names all 32.
NSYS_REPORTS_KEPT_AS_IS: FrozenSet[str] = frozenset()

_INT = re.compile(r"[-+]?\d+\Z")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\Z")
_TEXT_COLUMNS = frozenset({"Name", "Type", "Operation", "Range", "Style", "Category"})
_NVPROF_UNITS = frozenset({"%", "ns", "us", "ms", "s"})
# an nsys header has at least one column with a unit in parentheses: "Total Time (ns)", "Time(%)", "Total (MB)"
_NSYS_UNIT_COLUMN = re.compile(r"\((%|[num]?s|[KMG]i?B|B)\)\s*\Z")
# nvprof's own lines: "======== Warning: ...", "==1234== Error: ..."; only warnings and errors are kept as messages
_NVPROF_MESSAGE = re.compile(r"==(?:=+|\d+)==\s*(?P<message>(?:warning|error)\b.*)", re.IGNORECASE)
# nsys stats, per report: "Processing [X.sqlite] with [/.../reports/osrtsum.py] to [/w/stats_osrtsum.csv]... "
# then "PROCESSED" or "SKIPPED: X.sqlite does not contain CUDA trace data." on the same line (2022.4) or a later one
_NSYS_PROCESSING = re.compile(r"Processing \[[^\]\r\n]*\] with \[(?P<script>[^\]\r\n]*)\]")
_NSYS_OUTCOME = re.compile(r"(?:\s*to \[[^\]\r\n]*\])?[\s.]*(?P<outcome>SKIPPED|PROCESSED)\b:?\s*(?P<reason>.*)")
_NSYS_REPORT_NAME = re.compile(r"[A-Za-z0-9_]+")
_NSYS_SQLITE_PATH = re.compile(r"\S*\.sqlite\s+(?=does not contain)")
_MAX_MESSAGE = 500  # characters kept of one message a tool printed


class ToolOutputError(WaapError):
    """A profiler's output file cannot be read or is garbled. ``source`` and ``line`` say where."""

    def __init__(self, message: str, *, source: str = "", line: Optional[int] = None) -> None:
        self.reason = message
        self.source = source
        self.line = line
        place = where(source, line)
        super().__init__(f"{place}: {message}" if place else message)


def read_capped(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Tuple[List[str], bool]:
    """Read at most ``max_bytes`` of ``path`` as complete lines: ``(lines, truncated)``.

    Past the cap the partial last line is dropped and ``truncated`` is set. The profilers end every line with a
    newline, so a file ending mid-line was cut while being written: its partial line is dropped and it is truncated
    too (a cut number would otherwise parse as a wrong one).
    """
    if max_bytes < 1:
        raise ToolOutputError(f"max_bytes must be positive, got {max_bytes}", source=str(path))
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ToolOutputError(f"cannot read: {e.strerror or e}", source=str(path)) from e
    if b"\0" in data:
        raise ToolOutputError("binary data where text was expected", source=str(path))
    capped = len(data) > max_bytes
    complete = data[: data.rfind(b"\n", 0, max_bytes) + 1]
    if not capped and not complete and data.strip():
        raise ToolOutputError("no complete line: not profiler output", source=str(path))
    # a lossy decode keeps a stray non-UTF-8 byte in a function name from losing the whole file
    return complete.decode("utf-8", errors="replace").splitlines(), len(complete) < len(data)


def canonical_nsys_report(report: str) -> str:
    """The current (nsys >= 2023.1) name of a stats report, given either generation's name and optional arguments."""
    name = report.strip().split(":", 1)[0].lower()
    return NSYS_REPORT_ALIASES.get(name, name)


def nsys_skipped_reports(text: str) -> Dict[str, str]:
    """Which reports ``nsys stats`` skipped, and why, from what it printed (its stdout and stderr): canonical report
    name → reason, e.g. ``{"cuda_api_sum": "does not contain CUDA trace data"}``.

    For each report nsys prints ``Processing [X.sqlite] with [.../reports/NAME.py]...``, then ``PROCESSED`` or
    ``SKIPPED: X.sqlite does not contain ... data.``, on the same line (2022.4) or a later one. The report's name is
    the script's (``cudaapisum.py`` → ``cuda_api_sum``); the reason is what follows ``SKIPPED:`` without the
    database's path and the final period. Progress bars, other lines and garbled text are ignored: this never
    raises, and text that is not nsys stats output gives ``{}``. A report skipped twice keeps its first reason.
    """
    skipped: Dict[str, str] = {}
    pending: Optional[str] = None  # the report nsys is processing, whose outcome it has not printed yet
    for line in re.split(r"[\r\n]+", text):
        rest = line
        for match in _NSYS_PROCESSING.finditer(line):
            script = re.split(r"[\\/]", match.group("script").strip())[-1]
            name = script[:-3] if script.endswith(".py") else script
            pending = canonical_nsys_report(name) if _NSYS_REPORT_NAME.fullmatch(name) else None
            rest = line[match.end() :]
        if pending is None:
            continue
        outcome = _NSYS_OUTCOME.match(rest)
        if outcome is None:
            continue  # nothing yet, or the report's own table (console output) until the next "Processing"
        if outcome.group("outcome") == "SKIPPED":
            reason = outcome.group("reason").strip()
            sqlite = _NSYS_SQLITE_PATH.match(reason)
            if sqlite:
                reason = reason[sqlite.end() :]
            skipped.setdefault(pending, reason.rstrip(". ")[:_MAX_MESSAGE] or "skipped")
        pending = None
    return skipped


def _value(column: str, field: str) -> Union[Number, str, None]:
    if field == "":
        return None
    if column in _TEXT_COLUMNS:
        return field
    text = field.strip()
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return field


def _fields(line: str, source: str, lineno: int) -> List[str]:
    try:
        return next(csv.reader([line], strict=True))
    except csv.Error as e:
        raise ToolOutputError(f"garbled CSV: {e}", source=source, line=lineno) from e


def _rows(lines: List[str], start: int, columns: List[str], source: str) -> List[Dict[str, Any]]:
    """Data rows from ``lines[start:]``, each a dict keyed by ``columns``."""
    rows: List[Dict[str, Any]] = []
    for index in range(start, len(lines)):
        line = lines[index]
        if not line.strip():
            continue
        fields = _fields(line, source, index + 1)
        if len(fields) != len(columns):
            message = f"{len(fields)} fields where the header has {len(columns)}"
            raise ToolOutputError(message, source=source, line=index + 1)
        rows.append({col: _value(col, field) for col, field in zip(columns, fields)})
    return rows


def _check_not_empty(lines: List[str], truncated: bool, source: str, why: str = "") -> None:
    if not truncated and not any(line.strip() for line in lines):
        raise ToolOutputError(f"empty file{why}", source=source)


def parse_nvprof_csv(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Dict[str, Any]:
    """Parse ``nvprof --csv`` summary output (``--log-file`` or captured stderr).

    Banner lines (``==PID== ...``, ``======== Profiling result:``) are not table rows; those that are warnings or
    errors (``======== Warning: unable to locate cuda driver library, GPU profiling skipped``, ``==1234== Error:
    ...``) are kept, without the ``==...==`` prefix, in ``messages``. A file of banner lines only is what nvprof
    writes when it had nothing to profile: a valid result with no rows. An empty file is an error (nvprof writes
    its summary when the app ends; it was killed before it could).

    The header is the first line that is not a banner, and the row under it gives each column's unit
    (``ns``/``us``/``ms``/``s``/``%``; it differs between runs). Values stay in the file's units, which ``units``
    records per column; numbers become ``int``/``float``, names stay text.
    """
    source = str(path)
    lines, truncated = read_capped(path, max_bytes)
    _check_not_empty(
        lines, truncated, source, ": nvprof writes its summary when the app ends; it was probably killed before that"
    )
    result: Dict[str, Any] = {
        "tool": "nvprof",
        "source": source,
        "columns": [],
        "units": {},
        "rows": [],
        "messages": [
            m.group("message").strip()[:_MAX_MESSAGE] for line in lines if (m := _NVPROF_MESSAGE.match(line))
        ],
        "truncated": truncated,
    }
    content = [i for i, line in enumerate(lines) if line.strip() and not line.startswith("==")]
    if not content:
        return result  # banner lines only (the empty file was refused above), or cut before the header
    header_at = content[0]
    columns = _fields(lines[header_at], source, header_at + 1)
    if len(columns) < 2 or "Name" not in columns:
        raise ToolOutputError(
            f"not an nvprof CSV header: {lines[header_at][:120]!r}", source=source, line=header_at + 1
        )
    result["columns"] = columns
    data_start = header_at + 1
    if len(content) > 1:
        units_at = content[1]
        units = _fields(lines[units_at], source, units_at + 1)
        if len(units) == len(columns) and all(u == "" or u in _NVPROF_UNITS for u in units):
            result["units"] = {col: unit for col, unit in zip(columns, units) if unit}
            data_start = units_at + 1
    # nvprof interleaves its own ==PID== warnings with the table when it writes to stderr
    data = [line if not line.startswith("==") else "" for line in lines]
    result["rows"] = _rows(data, data_start, columns, source)
    return result


def parse_nsys_csv(path: Path, report: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Dict[str, Any]:
    """Parse one ``nsys stats --report REPORT --format csv`` output file.

    ``report`` may use either generation's name (``gpukernsum`` or ``cuda_gpu_kern_sum``); the result's ``report`` is
    the current one. Preamble lines (``Generating SQLite file ...``, ``Processing [...]``) are skipped: the header is
    the first line with a unit-bearing column such as ``Total Time (ns)``. A header with no rows is an empty report.
    """
    source = str(path)
    lines, truncated = read_capped(path, max_bytes)
    _check_not_empty(lines, truncated, source)
    result: Dict[str, Any] = {
        "tool": "nsys",
        "report": canonical_nsys_report(report),
        "report_requested": report,
        "source": source,
        "columns": [],
        "rows": [],
        "truncated": truncated,
    }
    for index, line in enumerate(lines):
        if "," not in line:
            continue
        try:
            columns = next(csv.reader([line], strict=True))
        except csv.Error:
            continue  # a preamble sentence with a stray quote is not the header
        if len(columns) >= 2 and any(_NSYS_UNIT_COLUMN.search(col) for col in columns):
            if len(set(columns)) != len(columns):
                raise ToolOutputError("duplicate column names in the header", source=source, line=index + 1)
            break
    else:
        if truncated:
            return result
        raise ToolOutputError(f"no nsys stats CSV header found for report {report!r}", source=source)
    result["columns"] = columns
    result["rows"] = _rows(lines, index + 1, columns, source)
    return result
