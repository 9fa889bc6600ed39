"""After a run under a tool: turn what the tool left in ``output/tools/<name>/`` into JSON in ``tools/<name>/`` of
the run directory, and say in the manifest how it went (``tools: [{name, status, files, error, ...}]``).

The parsers (``profiler.tools.tau_profile``, ``profiler.tools.nvidia_csv``) are imported when needed: a run does
not fail because one is absent, its entry says so. Files above ``MAX_DUMP_BYTES`` are not parsed: the entry is
marked ``truncated`` and names them. Nothing here raises for a bad dump; a run under a broken tool still completes.

Nsight Systems leaves one ``stats_<report>.csv`` per report, each handled on its own (``ToolReport`` says how):
parsed into ``<report>.json`` (the current report name, e.g. ``osrt_sum.json`` from ``stats_osrtsum.csv``), empty
(nsys writes a 0-byte file for a report with no data of its kind: no JSON, listed in ``empty``), or unparsable
(listed in ``report_errors``; the others are kept). The tool fails only when no report could be parsed and at least
one could not (or nsys left no report at all).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set

from ..rundir import write_json_atomic
from .highlights import tool_highlights

__all__ = ["MAX_DUMP_BYTES", "MAX_MESSAGES", "TOOLS_DIR", "ToolReport", "postprocess_tool"]

MAX_DUMP_BYTES = 256 * 1024 * 1024
TOOLS_DIR = "tools"  # in the run directory, beside output/
MAX_MESSAGES = 20  # of a tool's own messages in its manifest entry, after removing repeats
_NSYS_STATS = re.compile(r"stats_(?P<report>[A-Za-z0-9_]+)\.csv")


@dataclasses.dataclass
class ToolReport:
    """The manifest's entry for one tool.

    ``status`` is ``failed`` (with ``error`` saying why) when the tool's output gave nothing usable: no output, no
    parser, nothing parsable. For nsys, whose reports are separate files, a report that cannot be parsed does not
    fail the tool while another one could be parsed: it is named in ``report_errors`` and the status stays ``ok``.
    Reports that are only empty (no errors) are ``ok`` too: nsys worked and found no data of those kinds.
    """

    name: str
    status: str = "ok"  # ok, failed
    files: List[str] = dataclasses.field(default_factory=list)  # JSON written, relative to the run directory
    dumps: List[str] = dataclasses.field(default_factory=list)  # what the tool left, relative to the run directory
    truncated: bool = False
    skipped: List[str] = dataclasses.field(default_factory=list)  # dumps over the size cap, not parsed
    # nsys: report (current name, e.g. cuda_api_sum) -> why it has no data, as nsys stats said ("does not contain
    # CUDA trace data"), or None when its output was not given or did not say. A 0-byte stats CSV, or a report
    # nsys stats said it skipped and left no CSV of; no JSON is written for it.
    empty: Dict[str, Optional[str]] = dataclasses.field(default_factory=dict)
    # nsys: report (current name) -> why its CSV could not be parsed; no JSON is written for it
    report_errors: Dict[str, str] = dataclasses.field(default_factory=dict)
    # what the tool itself said that a reader should see, one line each, prefixed with the tool's name: nvprof's
    # warnings and errors ("nvprof: Warning: unable to locate cuda driver library, GPU profiling skipped")
    messages: List[str] = dataclasses.field(default_factory=list)
    # where the time went: the top rows of each parsed table by time (profiler.tools.highlights)
    highlights: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    exit_code: Optional[int] = None
    error: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def fail(self, message: str) -> None:
        self.status = "failed"
        self.error = f"{self.error}; {message}" if self.error else message


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def _parser(module: str, name: str) -> Callable[..., Any]:
    """A parser function, imported now; ImportError/AttributeError when it is not there (yet)."""
    mod = importlib.import_module(f"profiler.tools.{module}")
    func = getattr(mod, name)
    if not callable(func):
        raise AttributeError(f"profiler.tools.{module}.{name} is not callable")
    return func  # type: ignore[no-any-return]


def _files(folder: Path) -> List[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _add_messages(report: ToolReport, tool: str, messages: List[str], where: str) -> None:
    """The tool's own messages into the entry, each once, at most ``MAX_MESSAGES`` (all of them are in ``where``)."""
    unique = list(dict.fromkeys(messages))
    report.messages.extend(f"{tool}: {message}" for message in unique[:MAX_MESSAGES])
    if len(unique) > MAX_MESSAGES:
        report.messages.append(f"{tool}: {len(unique) - MAX_MESSAGES} more messages in {where}")


def _nsys(
    report: ToolReport,
    dumps: List[Path],
    big: List[Path],
    write: Callable[[str, Any], None],
    tool_output: Optional[str],
) -> None:
    """The ``stats_<report>.csv`` files, one report at a time: parsed, empty, or in ``report_errors``."""
    skipped: Dict[str, str] = {}
    if tool_output:
        try:
            skipped = _parser("nvidia_csv", "nsys_skipped_reports")(tool_output)
        except Exception as e:  # the reasons are a courtesy: without them the reports are still read
            report.messages.append(f"nsys stats output not understood: {type(e).__name__}: {e}")
    canonical = _parser("nvidia_csv", "canonical_nsys_report")
    parse = _parser("nvidia_csv", "parse_nsys_csv")
    stats = sorted((p, m.group("report")) for p in dumps if (m := _NSYS_STATS.fullmatch(p.name)))
    seen: Set[str] = set()
    for path, requested in stats:
        name = str(canonical(requested))
        if name in seen:  # both generations' files of one report: keep the second under the name nsys gave it
            name = requested
        seen.add(name)
        if path in big:
            continue  # named in `skipped`, `truncated` is set
        if path.stat().st_size == 0:
            report.empty[name] = skipped.get(name)
            continue
        try:
            write(name, parse(path, requested))
        except Exception as e:  # one broken report does not lose the others
            report.report_errors[name] = f"{type(e).__name__}: {e}"
    for name, reason in skipped.items():  # newer nsys versions may write no file at all for a skipped report
        if name not in seen:
            report.empty[name] = reason
    report.empty = dict(sorted(report.empty.items()))
    too_big = [path.name for path, _ in stats if path in big]
    if (report.report_errors or too_big) and not report.files:
        errors = [f"{name}: {message}" for name, message in sorted(report.report_errors.items())]
        errors += [f"{name}: over the size cap, not parsed" for name in too_big]
        report.fail(f"no nsys report could be parsed: {'; '.join(errors)}")
    elif not stats and not report.empty:
        report.fail("nsys stats wrote no CSV report")


def postprocess_tool(
    tool: str,
    run_path: Path,
    output_dir: Path,
    *,
    exit_code: Optional[int] = None,
    max_bytes: int = MAX_DUMP_BYTES,
    tool_output: Optional[str] = None,
) -> ToolReport:
    """Parse what ``tool`` left under ``output_dir/tools/<tool>/``; write JSON under ``run_path/tools/<tool>/``.

    ``tool_output`` is what the tool's own post-processing step printed, for nsys the output of ``nsys stats``: it
    says why a report is empty (``ToolReport.empty``). Other tools ignore it.
    """
    report = ToolReport(name=tool, exit_code=exit_code)
    dump_dir = output_dir / "tools" / tool
    json_dir = run_path / TOOLS_DIR / tool
    dumps = _files(dump_dir)
    report.dumps = [os.path.relpath(p, run_path) for p in dumps]
    big = [p for p in dumps if p.stat().st_size > max_bytes]
    if big:
        report.truncated = True
        report.skipped = [os.path.relpath(p, run_path) for p in big]
    if not dumps:
        code = "" if exit_code is None else f"; the app exited with code {exit_code}"
        report.fail(f"{tool} left no output in {os.path.relpath(dump_dir, run_path)}{code}")
        return report

    def write(stem: str, data: Any) -> None:
        json_dir.mkdir(parents=True, exist_ok=True)
        target = json_dir / f"{stem}.json"
        plain = json.loads(json.dumps(data, default=_jsonable))
        write_json_atomic(target, plain)
        report.files.append(os.path.relpath(target, run_path))
        report.highlights.extend(tool_highlights(tool, stem, plain))

    try:
        if tool == "tau":
            profiles = [p for p in dumps if p.name.startswith("profile.")]
            if not profiles:
                report.fail(f"TAU left no profile.* file (only {', '.join(p.name for p in dumps)})")
            elif any(p in big for p in profiles):
                report.fail(f"TAU profile files over the {max_bytes}-byte cap: not parsed")
            else:
                write("profile", _parser("tau_profile", "parse_tau_dir")(dump_dir))
        elif tool == "nvprof":
            summary = dump_dir / "summary.csv"
            if not summary.is_file():
                report.fail("nvprof wrote no summary.csv (its --log-file)")
            elif summary in big:
                report.fail(f"summary.csv is over the {max_bytes}-byte cap: not parsed")
            elif summary.stat().st_size == 0:
                code = "" if exit_code is None else f" (the app exited with code {exit_code})"
                report.fail(
                    "nvprof wrote an empty summary.csv: it was probably killed before it could write; it writes "
                    f"its summary only when the app has ended and nvprof itself exits normally{code}"
                )
            else:
                parsed = _parser("nvidia_csv", "parse_nvprof_csv")(summary)
                write("summary", parsed)
                _add_messages(report, "nvprof", parsed.get("messages", []), report.files[-1])
        elif tool == "nsys":
            _nsys(report, dumps, big, write, tool_output)
        else:
            report.fail(f"no post-processing for the tool {tool!r}")
    except (ImportError, AttributeError) as e:
        report.fail(f"the {tool} parser is not available: {e}")
    except Exception as e:  # a parser's failure on a hostile or broken dump is the tool's entry, not the run's
        report.fail(f"parsing the {tool} output failed: {type(e).__name__}: {e}")
    if report.status == "ok" and exit_code not in (None, 0) and not report.files:
        report.fail(f"the app exited with code {exit_code}")
    return report
