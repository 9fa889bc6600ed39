"""Parser for TAU's flat profile files (``profile.N.C.T``): per-function times, user events and metadata as JSON.

Format (TAU 2.x): line 1 ``<n> templated_functions[_MULTI_<metric>]``; line 2 the column header ``# Name Calls Subrs
Excl Incl ProfileCalls #`` followed by an XML ``<metadata>`` block; n lines ``"name" calls subrs excl incl
profilecalls GROUP="group"``; ``<k> aggregates`` and k lines; optionally ``<m> userevents``, a ``# eventname ...``
header and m lines ``"name" numevents max min mean sumsqr``.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from profiler.tools.nvidia_csv import DEFAULT_MAX_BYTES, ToolOutputError, read_capped

__all__ = ["parse_tau_dir", "parse_tau_profile"]

_FIRST = re.compile(r"\s*(\d+)\s+templated_functions(?:_MULTI_(\S+))?\s*\Z")
_FILE_NAME = re.compile(r"(?:^|\.)profile\.(\d+)\.(\d+)\.(\d+)\Z")
# Names may hold spaces, quotes, brackets and braces, so a line is matched from the right: the name is everything
# between the first quote and the quote that precedes the five numbers and GROUP="..." (greedy ``.*``).
_FUNCTION = re.compile(r'"(?P<name>.*)"\s+(?P<calls>\S+)\s+(?P<subrs>\S+)\s+(?P<excl>\S+)\s+(?P<incl>\S+)'
                       r'\s+(?P<profcalls>\S+)\s+GROUP="(?P<group>[^"]*)"\s*\Z')
_USER_EVENT = re.compile(r'"(?P<name>.*)"\s+(?P<count>\S+)\s+(?P<max>\S+)\s+(?P<min>\S+)\s+(?P<mean>\S+)'
                         r'\s+(?P<sumsqr>\S+)\s*\Z')
_COUNT = re.compile(r"\s*(\d+)\s+(aggregates|userevents)\s*\Z")
_ATTRIBUTE = re.compile(r"<attribute>\s*<name>(.*?)</name>\s*<value>(.*?)</value>\s*</attribute>", re.DOTALL)


class _Cut(Exception):
    """The file ends (cap or cut short) before the structure it announced is complete."""


class _Lines:
    def __init__(self, lines: List[str], source: str) -> None:
        self.lines = lines
        self.source = source
        self.pos = 0

    def next(self) -> Tuple[int, str]:
        if self.pos >= len(self.lines):
            raise _Cut
        self.pos += 1
        return self.pos, self.lines[self.pos - 1]

    def at_end(self) -> bool:
        return self.pos >= len(self.lines)

    def fail(self, lineno: int, message: str) -> ToolOutputError:
        return ToolOutputError(message, source=self.source, line=lineno)


def _number(text: str, lines: _Lines, lineno: int, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise lines.fail(lineno, f"{what} is not a number: {text!r}") from None


def _count(text: str, lines: _Lines, lineno: int, what: str) -> int:
    value = _number(text, lines, lineno, what)
    if value != int(value) or value < 0:
        raise lines.fail(lineno, f"{what} is not a count: {text!r}")
    return int(value)


def _metadata(lines: _Lines, header: str) -> Dict[str, str]:
    start = header.find("<metadata>")
    if start < 0:
        return {}  # TAU before 2.16 wrote no metadata
    parts = [header[start:]]
    while "</metadata>" not in parts[-1]:  # a value with a raw newline spreads the block over lines
        parts.append(lines.next()[1])
    block = "\n".join(parts)
    return {html.unescape(name): html.unescape(value) for name, value in _ATTRIBUTE.findall(block)}


def _function(line: str, lines: _Lines, lineno: int) -> Dict[str, Any]:
    m = _FUNCTION.match(line)
    if not m:
        raise lines.fail(lineno, f"not a TAU function line: {line[:120]!r}")
    return {
        "name": m["name"],
        "calls": _count(m["calls"], lines, lineno, "calls"),
        "subroutines": _count(m["subrs"], lines, lineno, "subrs"),
        "exclusive_us": _number(m["excl"], lines, lineno, "exclusive time"),
        "inclusive_us": _number(m["incl"], lines, lineno, "inclusive time"),
        "group": m["group"],
    }


def _user_event(line: str, lines: _Lines, lineno: int) -> Dict[str, Any]:
    m = _USER_EVENT.match(line)
    if not m:
        raise lines.fail(lineno, f"not a TAU user event line: {line[:120]!r}")
    event: Dict[str, Any] = {"name": m["name"], "count": _count(m["count"], lines, lineno, "numevents")}
    for key in ("max", "min", "mean", "sumsqr"):
        event[key] = _number(m[key], lines, lineno, key)
    return event


def _ids(path: Path) -> Tuple[Optional[int], Optional[int], Optional[int]]:
    m = _FILE_NAME.search(path.name)
    if not m:
        return None, None, None
    return int(m[1]), int(m[2]), int(m[3])


def parse_tau_profile(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Dict[str, Any]:
    """Parse one TAU ``profile.N.C.T`` file.

    Returns ``{"node", "context", "thread", "metric", "functions", "user_events", "metadata", "truncated", "source"}``;
    node/context/thread come from the file name (``None`` when it does not follow TAU's pattern). Each function is
    ``{"name", "calls", "subroutines", "exclusive_us", "inclusive_us", "group"}``; the times are in the metric's
    unit, microseconds for ``TIME`` (a PAPI metric's values are counts). A file larger than ``max_bytes``, or one cut
    mid-write, gives what was read with ``truncated: true``. Garbled input raises ``ToolOutputError`` naming the line.
    """
    path = Path(path)
    source = str(path)
    raw, truncated = read_capped(path, max_bytes)
    if not truncated and not any(line.strip() for line in raw):
        raise ToolOutputError("empty file", source=source)
    lines = _Lines(raw, source)
    node, context, thread = _ids(path)
    result: Dict[str, Any] = {
        "node": node,
        "context": context,
        "thread": thread,
        "metric": None,
        "functions": [],
        "user_events": [],
        "metadata": {},
        "truncated": truncated,
        "source": source,
    }
    try:
        _parse_into(result, lines)
    except _Cut:
        result["truncated"] = True
    return result


def _parse_into(result: Dict[str, Any], lines: _Lines) -> None:
    lineno, first = lines.next()
    m = _FIRST.match(first)
    if not m:
        raise lines.fail(lineno, f"not a TAU profile: expected '<n> templated_functions...', got {first[:80]!r}")
    n_functions = int(m[1])
    result["metric"] = m[2] or "TIME"
    lineno, header = lines.next()
    if not header.startswith("# Name Calls Subrs Excl Incl"):
        raise lines.fail(lineno, f"expected the '# Name Calls Subrs Excl Incl' header, got {header[:80]!r}")
    result["metadata"] = _metadata(lines, header)
    result["metric"] = result["metadata"].get("Metric Name", result["metric"])
    for _ in range(n_functions):
        lineno, line = lines.next()
        result["functions"].append(_function(line, lines, lineno))
    if lines.at_end():
        raise _Cut  # TAU always writes the aggregates line
    sections = {"aggregates": False, "userevents": False}
    while not lines.at_end():
        lineno, line = lines.next()
        if not line.strip():
            continue
        m = _COUNT.match(line)
        if not m or sections[m[2]]:
            raise lines.fail(lineno, f"expected '<k> aggregates' or '<m> userevents', got {line[:80]!r}")
        sections[m[2]] = True
        count = int(m[1])
        if m[2] == "aggregates":
            for _ in range(count):  # TAU writes aggregate lines only for long-gone collection profiling
                lines.next()
            continue
        lineno, line = lines.next()
        if not line.startswith("#"):
            raise lines.fail(lineno, f"expected the '# eventname numevents ...' header, got {line[:80]!r}")
        for _ in range(count):
            lineno, line = lines.next()
            result["user_events"].append(_user_event(line, lines, lineno))


def parse_tau_dir(folder: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Dict[str, Any]:
    """Parse every ``profile.N.C.T`` in ``folder`` and, for multi-metric runs, in its ``MULTI__<metric>`` folders.

    ``max_bytes`` caps each file. Returns ``{"directory", "profiles": [...], "truncated"}``, the profiles ordered by
    (folder, node, context, thread); a folder without profile files raises ``ToolOutputError``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ToolOutputError("not a directory", source=str(folder))
    try:
        folders = [folder, *sorted(p for p in folder.glob("MULTI__*") if p.is_dir())]
        files: List[Path] = []
        for sub in folders:
            found = [p for p in sub.glob("profile.*.*.*") if p.is_file() and _FILE_NAME.search(p.name)]
            files.extend(sorted(found, key=lambda p: _ids(p)))  # numeric: profile.10.0.0 after profile.9.0.0
    except OSError as e:
        raise ToolOutputError(f"cannot list: {e.strerror or e}", source=str(folder)) from e
    if not files:
        raise ToolOutputError("no TAU profile.N.C.T files", source=str(folder))
    profiles = [parse_tau_profile(p, max_bytes=max_bytes) for p in files]
    return {
        "directory": str(folder),
        "profiles": profiles,
        "truncated": any(p["truncated"] for p in profiles),
    }
