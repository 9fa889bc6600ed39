"""Where the time went, in a few lines: the top entries of a profiling tool's parsed output, for the run's summary
(``summary.json`` and the manifest's ``tools`` entry) and the table ``waap run`` prints.

One *highlight* is a table's top rows by time: ``{"table", "ranked_by", "rows": [{"name", "seconds", "percent",
"calls"}]}``. ``percent`` is the share of the table's total time (the tool's own percentage where it prints one;
``None`` where nothing gives one), ``calls`` the calls, launches or instances (``None`` where the table has none).

- TAU: the functions by exclusive time, summed over every profile file (node, context, thread) of the ``TIME``
  metric; the percentage is of the sum of every function's exclusive time.
- nvprof: its summary table, split by ``Type`` (``GPU activities``, ``API calls``) where it has that column, by
  ``Time``, converted from the unit its unit row gave.
- nsys: each stats report with a ``Total Time (ns)`` column (``osrt_sum``, ``cuda_gpu_kern_sum``, ``cuda_api_sum``,
  ...), by that column; reports without one (memory sizes, traces) give none.

Highlights never raise on odd parsed data: what cannot be read is left out.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

__all__ = ["TOP", "tool_highlights"]

TOP = 5
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
_CALL_COLUMNS = ("Num Calls", "Calls", "Instances", "Count")


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: Any) -> Optional[int]:
    number = _number(value)
    return int(number) if number is not None else None


def _timed(rows: Any, name_key: str, time_key: str) -> Iterator[Tuple[Mapping[str, Any], str, float]]:
    """(row, name, time) of the rows that have a text name and a finite number for the time; others skipped."""
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, Mapping):
            continue
        name, time = row.get(name_key), _number(row.get(time_key))
        if isinstance(name, str) and time is not None:
            yield row, name, time


def _ranked(entries: Iterable[Tuple[str, float, Optional[float], Optional[int]]], total: Optional[float],
            top: int) -> List[Dict[str, Any]]:
    """Top ``top`` (name, seconds, percent, calls) by seconds; a missing percent is computed from ``total``."""
    ordered = sorted(entries, key=lambda e: e[1], reverse=True)[:top]
    rows = []
    for name, seconds, percent, calls in ordered:
        if percent is None and total:
            percent = 100.0 * seconds / total
        rows.append({"name": name, "seconds": round(seconds, 9),
                     "percent": None if percent is None else round(percent, 2), "calls": calls})
    return rows


def _tau(parsed: Mapping[str, Any], top: int) -> List[Dict[str, Any]]:
    exclusive: Dict[str, float] = {}
    calls: Dict[str, int] = {}
    for profile in parsed.get("profiles") or []:
        if not isinstance(profile, Mapping) or profile.get("metric", "TIME") != "TIME":
            continue
        for function, name, us in _timed(profile.get("functions"), "name", "exclusive_us"):
            name = name.strip()
            exclusive[name] = exclusive.get(name, 0.0) + us * 1e-6
            calls[name] = calls.get(name, 0) + (_count(function.get("calls")) or 0)
    if not exclusive:
        return []
    total = sum(exclusive.values())
    rows = _ranked(((n, s, None, calls.get(n)) for n, s in exclusive.items()), total, top)
    return [{"table": "functions", "ranked_by": "exclusive time", "rows": rows}]


def _nvprof(parsed: Mapping[str, Any], top: int) -> List[Dict[str, Any]]:
    scale = _UNIT_SECONDS.get(str((parsed.get("units") or {}).get("Time", "")))
    if scale is None:
        return []
    groups: Dict[str, List[Tuple[str, float, Optional[float], Optional[int]]]] = {}
    for row, name, time in _timed(parsed.get("rows"), "Name", "Time"):
        group = str(row.get("Type") or "summary")
        groups.setdefault(group, []).append((name, time * scale, _number(row.get("Time(%)")),
                                             _count(row.get("Calls"))))
    return [{"table": group, "ranked_by": "time", "rows": _ranked(entries, None, top)}
            for group, entries in groups.items()]


def _nsys(report: str, parsed: Mapping[str, Any], top: int) -> List[Dict[str, Any]]:
    if "Total Time (ns)" not in (parsed.get("columns") or []):
        return []
    entries = []
    for row, name, ns in _timed(parsed.get("rows"), "Name", "Total Time (ns)"):
        calls = next((_count(row.get(c)) for c in _CALL_COLUMNS if c in row), None)
        entries.append((name, ns * 1e-9, _number(row.get("Time (%)")), calls))
    if not entries:
        return []
    return [{"table": str(parsed.get("report") or report), "ranked_by": "total time",
             "rows": _ranked(entries, None, top)}]


def tool_highlights(tool: str, table: str, parsed: Any, *, top: int = TOP) -> List[Dict[str, Any]]:
    """The highlights of one parsed output of ``tool`` (``table``: its JSON file's stem, e.g. ``osrt_sum``)."""
    if not isinstance(parsed, Mapping) or top < 1:
        return []
    if tool == "tau":
        return _tau(parsed, top)
    if tool == "nvprof":
        return _nvprof(parsed, top)
    if tool == "nsys":
        return _nsys(table, parsed, top)
    return []
