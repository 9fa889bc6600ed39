"""After a run under a tool: turn what the tool left in ``output/tools/<name>/`` into JSON in ``tools/<name>/`` of
the run directory, and say in the manifest how it went (``tools: [{name, status, files, error, ...}]``).

The parsers (``profiler.tools.tau_profile``, ``profiler.tools.nvidia_csv``) are imported when needed: a run does
not fail because one is absent, its entry says so. Files above ``MAX_DUMP_BYTES`` are not parsed: the entry is
marked ``truncated`` and names them. Nothing here raises for a bad dump; a run under a broken tool still completes.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..rundir import write_json_atomic

__all__ = ["MAX_DUMP_BYTES", "TOOLS_DIR", "ToolReport", "postprocess_tool"]

MAX_DUMP_BYTES = 256 * 1024 * 1024
TOOLS_DIR = "tools"  # in the run directory, beside output/
_NSYS_STATS = re.compile(r"stats_(?P<report>[A-Za-z0-9_]+)\.csv")


@dataclasses.dataclass
class ToolReport:
    """The manifest's entry for one tool."""

    name: str
    status: str = "ok"  # ok, failed
    files: List[str] = dataclasses.field(default_factory=list)  # JSON written, relative to the run directory
    dumps: List[str] = dataclasses.field(default_factory=list)  # what the tool left, relative to the run directory
    truncated: bool = False
    skipped: List[str] = dataclasses.field(default_factory=list)  # dumps over the size cap, not parsed
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


def postprocess_tool(
    tool: str,
    run_path: Path,
    output_dir: Path,
    *,
    exit_code: Optional[int] = None,
    max_bytes: int = MAX_DUMP_BYTES,
) -> ToolReport:
    """Parse what ``tool`` left under ``output_dir/tools/<tool>/``; write JSON under ``run_path/tools/<tool>/``."""
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
        write_json_atomic(target, json.loads(json.dumps(data, default=_jsonable)))
        report.files.append(os.path.relpath(target, run_path))

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
            else:
                write("summary", _parser("nvidia_csv", "parse_nvprof_csv")(summary))
        elif tool == "nsys":
            stats = [(p, m.group("report")) for p in dumps if (m := _NSYS_STATS.fullmatch(p.name))]
            if not stats:
                report.fail("nsys stats wrote no CSV report")
            parse = _parser("nvidia_csv", "parse_nsys_csv") if stats else None
            for path, name in stats:
                if path in big:
                    continue
                assert parse is not None
                write(name, parse(path, name))
        else:
            report.fail(f"no post-processing for the tool {tool!r}")
    except (ImportError, AttributeError) as e:
        report.fail(f"the {tool} parser is not available: {e}")
    except Exception as e:  # a parser's failure on a hostile or broken dump is the tool's entry, not the run's
        report.fail(f"parsing the {tool} output failed: {type(e).__name__}: {e}")
    if report.status == "ok" and exit_code not in (None, 0) and not report.files:
        report.fail(f"the app exited with code {exit_code}")
    return report
