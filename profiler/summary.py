"""``summary.json``: per-metric statistics over a run's samples (count, min, mean, p50, p95, max, last), and for
counters their rate per second, so that an app's frame counter gives its FPS.

Whether a metric is a counter comes from the collectors' catalogs (``MetricInfo.kind``, family names with
``<placeholder>`` parts included); a name no catalog knows is a counter when it ends in ``.total`` or ``_total``
(``app.frames.total``) and a gauge otherwise (``app.queue_length``).

Memory stays bounded per metric: the exact statistics are running values, and the percentiles come from at most
``MAX_VALUES`` values kept in an ``array('d')``; past that, every other value is dropped and from then on only
every second (fourth, …) value is kept — an evenly spread subsample of the whole run.
"""

from __future__ import annotations

import math
import re
from array import array
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Pattern, Sequence, Tuple

from .collectors import REGISTRY, MetricInfo, Sample, collector_class
from .rundir import SAMPLES, read_jsonl, write_json_atomic

__all__ = [
    "DEFAULT_KEYS",
    "MAX_VALUES",
    "SUMMARY",
    "SUMMARY_VERSION",
    "MetricCatalog",
    "Summarizer",
    "default_catalog",
    "default_keys",
    "format_highlights",
    "format_table",
    "kind_of",
    "metric_key",
    "summarize",
    "write_summary",
]

SUMMARY = "summary.json"
SUMMARY_VERSION = 1
MAX_VALUES = 65536

# what `waap run` prints after a run, when present (then every app.* metric)
DEFAULT_KEYS: Tuple[str, ...] = (
    "container.cpu.usage_percent",
    "container.memory.working_set_bytes",
    "system.cpu.percent",
    "system.memory.used_bytes",
)


def default_catalog() -> List[MetricInfo]:
    """Every registered collector's catalog; a collector whose module cannot be imported here is left out."""
    infos: List[MetricInfo] = []
    for name in REGISTRY:
        try:
            infos.extend(collector_class(name).catalog)
        except (ImportError, AttributeError, TypeError):
            continue
    return infos


class MetricCatalog:
    """Looks metric names up in catalog rows: exact names first, then ``<placeholder>`` families, the most specific
    (most literal characters) first, so ``app.frames.total`` is ``app.<name>.total`` rather than ``app.<name>``."""

    def __init__(self, infos: Iterable[MetricInfo]) -> None:
        self._exact: Dict[str, MetricInfo] = {}
        families: List[Tuple[int, Pattern[str], MetricInfo]] = []
        for info in infos:
            if "<" in info.name:
                parts = re.split(r"<[^<>]*>", info.name)
                pattern = re.compile(".+".join(re.escape(p) for p in parts) + r"\Z")
                families.append((sum(len(p) for p in parts), pattern, info))
            else:
                self._exact.setdefault(info.name, info)
        families.sort(key=lambda f: -f[0])
        self._families = [(pattern, info) for _, pattern, info in families]
        self._cache: Dict[str, Optional[MetricInfo]] = {}

    def info(self, name: str) -> Optional[MetricInfo]:
        if name in self._cache:
            return self._cache[name]
        found = self._exact.get(name)
        if found is None:
            found = next((info for pattern, info in self._families if pattern.match(name)), None)
        if len(self._cache) < 100_000:
            self._cache[name] = found
        return found

    def kind_of(self, name: str) -> str:
        """``counter`` or ``gauge``."""
        info = self.info(name)
        if info is not None:
            return info.kind
        return "counter" if name.endswith((".total", "_total")) else "gauge"


def kind_of(name: str, catalog: Iterable[MetricInfo]) -> str:
    """``counter`` or ``gauge`` for one name (use ``MetricCatalog`` for many)."""
    return MetricCatalog(catalog).kind_of(name)


def metric_key(name: str, labels: Mapping[str, str]) -> str:
    """The summary's key: the name, with labels Prometheus-style when there are any (``app.latency_s{stage="a"}``)."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{labels[k]}"' for k in sorted(labels))
    return f"{name}{{{inner}}}"


class _Stats:
    """Running statistics of one metric, in bounded memory."""

    __slots__ = (
        "count",
        "first",
        "first_ts",
        "increase",
        "last",
        "last_ts",
        "max",
        "min",
        "skip",
        "stride",
        "total",
        "values",
    )

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.first = self.last = 0.0
        self.first_ts = self.last_ts = 0
        self.increase = 0.0
        self.values = array("d")
        self.stride = 1
        self.skip = 0

    def add(self, ts_ns: int, value: float) -> None:
        if self.count == 0:
            self.first, self.first_ts = value, ts_ns
        else:
            delta = value - self.last
            self.increase += delta if delta >= 0 else value  # a counter that went back restarted from zero
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        self.last, self.last_ts = value, ts_ns
        if self.skip:
            self.skip -= 1
            return
        self.values.append(value)
        self.skip = self.stride - 1
        if len(self.values) >= MAX_VALUES:
            self.values = self.values[::2]
            self.stride *= 2
            self.skip = self.stride - 1

    def to_json(self, kind: str) -> Dict[str, Any]:
        ordered = sorted(self.values)
        record: Dict[str, Any] = {
            "count": self.count,
            "min": self.min,
            "mean": self.total / self.count,
            "p50": _percentile(ordered, 0.50),
            "p95": _percentile(ordered, 0.95),
            "max": self.max,
            "last": self.last,
            "first_ts_ns": self.first_ts,
            "last_ts_ns": self.last_ts,
        }
        if kind == "counter":
            record["increase"] = self.increase
            seconds = (self.last_ts - self.first_ts) / 1e9
            record["rate_per_s"] = self.increase / seconds if self.count > 1 and seconds > 0 else None
        # sums of huge values can overflow; JSON has no infinity
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class Summarizer:
    """Builds a summary from samples, one at a time: feed it records (``add_record``) or use it as a sampler
    listener (``summarizer(sample)``), then ``result()``."""

    def __init__(self, catalog: Optional[Iterable[MetricInfo]] = None) -> None:
        self.catalog = MetricCatalog(default_catalog() if catalog is None else catalog)
        self._stats: Dict[str, _Stats] = {}
        self._meta: Dict[str, Tuple[str, str, Dict[str, str]]] = {}  # key -> (name, source, labels)
        self.samples = 0
        self.skipped = 0  # records that are not samples, and values that are not numbers
        self._start_ns: Optional[int] = None
        self._end_ns: Optional[int] = None

    def __call__(self, sample: Sample) -> None:
        self.add(sample.ts_ns, sample.source, sample.values, sample.labels)

    def add_record(self, record: Mapping[str, Any]) -> None:
        """One line of samples.jsonl; a record that is not a sample is counted in ``skipped``."""
        ts, source, values, labels = (record.get(k) for k in ("ts_ns", "source", "values", "labels"))
        if type(ts) is not int or not isinstance(values, Mapping):
            self.skipped += 1
            return
        if not isinstance(labels, Mapping):
            labels = {}
        self.add(ts, source if isinstance(source, str) else "", values, {str(k): str(v) for k, v in labels.items()})

    def add(self, ts_ns: int, source: str, values: Mapping[str, Any], labels: Mapping[str, str]) -> None:
        self.samples += 1
        self._start_ns = ts_ns if self._start_ns is None else min(self._start_ns, ts_ns)
        self._end_ns = ts_ns if self._end_ns is None else max(self._end_ns, ts_ns)
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                self.skipped += 1
                continue
            key = metric_key(name, labels)
            stats = self._stats.get(key)
            if stats is None:
                stats = self._stats[key] = _Stats()
                self._meta[key] = (name, source, dict(labels))
            stats.add(ts_ns, float(value))

    def result(self) -> Dict[str, Any]:
        """The summary document; ``{}`` when there was no sample."""
        if not self._stats:
            return {}
        metrics: Dict[str, Any] = {}
        for key in sorted(self._stats):
            name, source, labels = self._meta[key]
            info = self.catalog.info(name)
            kind = self.catalog.kind_of(name)
            record: Dict[str, Any] = {"name": name, "source": source, "kind": kind}
            if info is not None:
                record["unit"] = info.unit
            if labels:
                record["labels"] = labels
            record.update(self._stats[key].to_json(kind))
            metrics[key] = record
        return {
            "schema_version": SUMMARY_VERSION,
            "samples": self.samples,
            "skipped": self.skipped,
            "start_ns": self._start_ns,
            "end_ns": self._end_ns,
            "metrics": metrics,
        }


def summarize(records: Iterable[Mapping[str, Any]], catalog: Optional[Iterable[MetricInfo]] = None) -> Dict[str, Any]:
    """The summary of samples.jsonl records (``{}`` when there is none)."""
    summarizer = Summarizer(catalog)
    for record in records:
        summarizer.add_record(record)
    return summarizer.result()


def write_summary(run_dir: Path, *, catalog: Optional[Iterable[MetricInfo]] = None) -> Dict[str, Any]:
    """Summarize ``run_dir/samples.jsonl`` into ``run_dir/summary.json`` (written atomically) and return it.
    Returns ``{}`` and writes nothing when there are no samples. Raises ``RunDirError`` when it cannot write."""
    summary = summarize(read_jsonl(run_dir / SAMPLES), catalog)
    if summary:
        write_json_atomic(run_dir / SUMMARY, summary)
    return summary


def default_keys(summary: Mapping[str, Any]) -> List[str]:
    """The keys worth printing: those of ``DEFAULT_KEYS`` the run has, then every app.* metric."""
    metrics = summary.get("metrics", {})
    keys = [k for k in DEFAULT_KEYS if k in metrics]
    keys += sorted(k for k in metrics if k.startswith("app."))
    return keys


_COLUMNS = ("metric", "count", "mean", "p50", "p95", "max", "last", "rate")


def format_table(summary: Mapping[str, Any], keys: Optional[Sequence[str]] = None) -> str:
    """A plain-text table of some metrics (``default_keys`` when ``keys`` is None); keys the summary lacks are
    left out; ``""`` when none is left."""
    metrics = summary.get("metrics", {})
    chosen = default_keys(summary) if keys is None else [k for k in keys if k in metrics]
    if not chosen:
        return ""
    rows: List[Tuple[str, ...]] = [_COLUMNS]
    for key in chosen:
        m = metrics[key]
        unit = m.get("unit", "")
        cells = [key, str(m.get("count", ""))]
        # a counter is a running total: its level statistics say nothing, its last value and rate do
        levels = ("last",) if m.get("kind") == "counter" else ("mean", "p50", "p95", "max", "last")
        cells += [_human(m.get(c), unit) if c in levels else "" for c in ("mean", "p50", "p95", "max", "last")]
        rate = m.get("rate_per_s")
        cells.append(_human(rate, unit) + "/s" if m.get("kind") == "counter" and rate is not None else "")
        rows.append(tuple(cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = []
    for row in rows:
        first = row[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join([first, *rest]).rstrip())
    return "\n".join(lines)


def format_highlights(highlights: Iterable[Mapping[str, Any]], max_name: int = 60) -> str:
    """A profiling tool's highlights (``profiler.tools.highlights``) as text: per table, its top rows by time."""
    lines: List[str] = []
    for block in highlights:
        rows = [r for r in block.get("rows") or [] if isinstance(r, Mapping)]
        if not rows:
            continue
        lines.append(f"{block.get('table', '?')}, by {block.get('ranked_by', 'time')}:")
        cells = [(_human(r.get("percent"), "percent"), _human(r.get("seconds"), "seconds"),
                  "" if r.get("calls") is None else f"{r['calls']}x", _short(str(r.get("name", "")), max_name))
                 for r in rows]
        widths = [max(len(c[i]) for c in cells) for i in range(3)]
        lines += ["  " + "  ".join([c[0].rjust(widths[0]), c[1].rjust(widths[1]), c[2].rjust(widths[2]), c[3]])
                  for c in cells]
    return "\n".join(lines)


def _short(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def _human(value: Any, unit: str) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return ""
    if unit == "bytes":
        size = float(value)
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(size) < 1024 or suffix == "TiB":
                return f"{size:.0f} {suffix}" if suffix == "B" else f"{size:.1f} {suffix}"
            size /= 1024
    if unit == "percent":
        return f"{value:.1f}%"
    if unit == "seconds" and abs(value) < 1:
        return f"{value * 1000:.3g} ms"
    text = f"{value:.4g}"
    if unit == "seconds":
        return f"{text} s"
    return f"{text} {unit}" if unit and unit not in ("1", "count") and " " not in unit else text
