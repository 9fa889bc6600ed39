"""Parsers for the CSV summaries of NVIDIA's command-line profilers: nvprof (JetPack 4, compute capability < 8.0)
and Nsight Systems' ``nsys stats --format csv`` (both generations of report names).

Also home of ``ToolOutputError`` and the size-capped reader the TAU parser shares.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from profiler.errors import WaapError, where

__all__ = [
    "DEFAULT_MAX_BYTES",
    "NSYS_REPORT_ALIASES",
    "ToolOutputError",
    "canonical_nsys_report",
    "parse_nsys_csv",
    "parse_nvprof_csv",
    "read_capped",
]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""A profiler dump can reach gigabytes; past this many bytes we stop reading and mark the result truncated."""

Number = Union[int, float]

# nsys 2023.1 renamed its stats reports; a run may meet either generation, results always carry the new name.
NSYS_REPORT_ALIASES: Dict[str, str] = {
    "apigpusum": "cuda_api_gpu_sum",
    "cudaapisum": "cuda_api_sum",
    "cudaapitrace": "cuda_api_trace",
    "gpukernsum": "cuda_gpu_kern_sum",
    "gpumemsizesum": "cuda_gpu_mem_size_sum",
    "gpumemtimesum": "cuda_gpu_mem_time_sum",
    "gpusum": "cuda_gpu_sum",
    "gputrace": "cuda_gpu_trace",
    "kernexecsum": "cuda_kern_exec_sum",
    "kernexectrace": "cuda_kern_exec_trace",
    "nvtxsum": "nvtx_sum",
    "nvtxkernsum": "nvtx_kern_sum",
    "openmpevtsum": "openmp_sum",
    "osrtsum": "osrt_sum",
    "umcpupagefaults": "um_cpu_page_faults_sum",
    "unifiedmemory": "um_sum",
    "unifiedmemorytotals": "um_total_sum",
    "vulkanmarkerssum": "vulkan_marker_sum",
}

_INT = re.compile(r"[-+]?\d+\Z")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\Z")
_TEXT_COLUMNS = frozenset({"Name", "Type", "Operation", "Range", "Style", "Category"})
_NVPROF_UNITS = frozenset({"%", "ns", "us", "ms", "s"})
# an nsys header has at least one column with a unit in parentheses: "Total Time (ns)", "Time(%)", "Total (MB)"
_NSYS_UNIT_COLUMN = re.compile(r"\((%|[num]?s|[KMG]i?B|B)\)\s*\Z")


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


def _check_not_empty(lines: List[str], truncated: bool, source: str) -> None:
    if not truncated and not any(line.strip() for line in lines):
        raise ToolOutputError("empty file", source=source)


def parse_nvprof_csv(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Dict[str, Any]:
    """Parse ``nvprof --csv`` summary output (``--log-file`` or captured stderr).

    Banner lines (``==PID== ...``, ``======== Profiling result:``) are skipped; the header is the first other line
    and the row under it gives each column's unit (``ns``/``us``/``ms``/``s``/``%``; it differs between runs). Values
    stay in the file's units, which ``units`` records per column; numbers become ``int``/``float``, names stay text.
    """
    source = str(path)
    lines, truncated = read_capped(path, max_bytes)
    _check_not_empty(lines, truncated, source)
    result: Dict[str, Any] = {
        "tool": "nvprof",
        "source": source,
        "columns": [],
        "units": {},
        "rows": [],
        "truncated": truncated,
    }
    content = [i for i, line in enumerate(lines) if line.strip() and not line.startswith("==")]
    if not content:
        if truncated:
            return result
        raise ToolOutputError("no CSV header: is this nvprof --csv output?", source=source)
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
