"""summary.json: statistics per metric, counter rates, catalog kinds, the printed table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from profiler import summary as summary_module
from profiler.collectors import MetricInfo, Sample
from profiler.rundir import SAMPLES
from profiler.summary import (
    MetricCatalog,
    Summarizer,
    default_catalog,
    default_keys,
    format_table,
    kind_of,
    metric_key,
    summarize,
    write_summary,
)

S = 1_000_000_000
T0 = 1_700_000_000 * S

CATALOG = [
    MetricInfo("system.cpu.percent", "percent", "gauge", "cpu"),
    MetricInfo("system.cpu.core.<n>.percent", "percent", "gauge", "a core"),
    MetricInfo("system.disk.read_bytes_total", "bytes", "counter", "read"),
    MetricInfo("system.temperature.<sensor>.celsius", "celsius", "gauge", "temperature"),
    MetricInfo("app.<name>", "", "gauge", "an app's value"),
    MetricInfo("app.<name>.total", "", "counter", "an app's counter"),
]


def record(i: int, source: str, values: Dict[str, float], **extra: Any) -> Dict[str, Any]:
    return {"ts_ns": T0 + i * S, "source": source, "values": values, **extra}


def test_kind_of_uses_the_catalog_and_its_families() -> None:
    assert kind_of("system.cpu.percent", CATALOG) == "gauge"
    assert kind_of("system.disk.read_bytes_total", CATALOG) == "counter"
    assert kind_of("system.cpu.core.11.percent", CATALOG) == "gauge"
    assert kind_of("app.frames.total", CATALOG) == "counter"  # the more specific family wins
    assert kind_of("app.detector.frames.total", CATALOG) == "counter"  # a placeholder may hold dots
    assert kind_of("app.queue_length", CATALOG) == "gauge"
    catalog = MetricCatalog(CATALOG)
    info = catalog.info("system.temperature.cpu_therm.celsius")
    assert info is not None and info.unit == "celsius"
    assert catalog.info("system.temperature.celsius") is None  # a placeholder is never empty


def test_kind_of_without_a_catalog_row() -> None:
    assert kind_of("app.frames.total", []) == "counter"
    assert kind_of("custom.bytes_total", []) == "counter"
    assert kind_of("app.fps", []) == "gauge"
    assert kind_of("app.totally", []) == "gauge"


def test_the_registered_catalogs() -> None:
    catalog = default_catalog()
    assert kind_of("system.disk.read_bytes_total", catalog) == "counter"
    assert kind_of("system.cpu.core.3.percent", catalog) == "gauge"


def test_statistics_of_a_gauge() -> None:
    records = [record(i, "system", {"system.cpu.percent": float(i + 1)}) for i in range(100)]
    m = summarize(records, CATALOG)["metrics"]["system.cpu.percent"]
    assert m["count"] == 100
    assert (m["min"], m["max"], m["last"]) == (1.0, 100.0, 100.0)
    assert m["mean"] == pytest.approx(50.5)
    assert m["p50"] == pytest.approx(50.5)
    assert m["p95"] == pytest.approx(95.05)  # linear interpolation, as numpy's default
    assert (m["kind"], m["unit"], m["source"]) == ("gauge", "percent", "system")
    assert "rate_per_s" not in m


def test_a_frame_counter_gives_fps() -> None:
    records = [record(i, "custom", {"app.frames.total": 30.0 * i}) for i in range(11)]  # 30 frames a second
    m = summarize(records, CATALOG)["metrics"]["app.frames.total"]
    assert m["kind"] == "counter"
    assert m["rate_per_s"] == pytest.approx(30.0)
    assert m["increase"] == 300.0


def test_a_counter_that_restarts_still_gives_its_rate() -> None:
    values = [0, 10, 20, 5, 15]  # the app restarted its counter between the third and the fourth sample
    records = [record(i, "custom", {"app.frames.total": float(v)}) for i, v in enumerate(values)]
    m = summarize(records, CATALOG)["metrics"]["app.frames.total"]
    assert m["increase"] == 10 + 10 + 5 + 10  # from zero to 5 after the restart
    assert m["rate_per_s"] == pytest.approx(35 / 4)


def test_a_counter_seen_once_has_no_rate() -> None:
    m = summarize([record(0, "custom", {"app.frames.total": 3.0})], CATALOG)["metrics"]["app.frames.total"]
    assert m["rate_per_s"] is None


def test_labels_make_their_own_series() -> None:
    records = [
        record(0, "custom", {"app.latency_s": 1.0}, labels={"stage": "detect"}),
        record(1, "custom", {"app.latency_s": 3.0}, labels={"stage": "track"}),
        record(2, "custom", {"app.latency_s": 2.0}, labels={"stage": "detect"}),
    ]
    metrics = summarize(records, CATALOG)["metrics"]
    key = metric_key("app.latency_s", {"stage": "detect"})
    assert key == 'app.latency_s{stage="detect"}'
    assert metrics[key]["count"] == 2 and metrics[key]["labels"] == {"stage": "detect"}
    assert metrics['app.latency_s{stage="track"}']["max"] == 3.0


def test_records_that_are_not_samples_are_skipped() -> None:
    records: List[Dict[str, Any]] = [
        {"ts_ns": "yesterday", "source": "x", "values": {"a": 1}},
        {"ts_ns": T0, "source": "x", "values": "no"},
        {"ts_ns": T0, "source": "x", "values": {"a": "1", "b": True, "c": 2}},
    ]
    result = summarize(records, CATALOG)
    assert list(result["metrics"]) == ["c"]
    assert result["skipped"] == 4
    assert summarize([], CATALOG) == {}


def test_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summary_module, "MAX_VALUES", 64)
    summarizer = Summarizer(CATALOG)
    n = 10_000
    for i in range(n):
        summarizer.add(T0 + i, "system", {"system.cpu.percent": float(i)}, {})
    kept = summarizer._stats["system.cpu.percent"].values
    assert len(kept) < 64
    m = summarizer.result()["metrics"]["system.cpu.percent"]
    assert m["count"] == n and m["max"] == n - 1 and m["mean"] == pytest.approx((n - 1) / 2)  # exact
    assert m["p50"] == pytest.approx(n / 2, rel=0.05)  # from an evenly spread subsample
    assert m["p95"] == pytest.approx(0.95 * n, rel=0.05)


def test_a_listener_gives_what_the_file_gives() -> None:
    samples = [Sample(T0 + i * S, "system", {"system.cpu.percent": float(i % 7)}) for i in range(50)]
    streamed = Summarizer(CATALOG)
    for sample in samples:
        streamed(sample)
    assert streamed.result() == summarize([s.to_json() for s in samples], CATALOG)


def test_write_summary(tmp_path: Path) -> None:
    lines = [json.dumps(record(i, "system", {"system.cpu.percent": 10.0 * i})) for i in range(3)]
    (tmp_path / SAMPLES).write_text("\n".join(lines) + '\n{"ts_ns": 1, "sou')  # killed mid-line
    result = write_summary(tmp_path, catalog=CATALOG)
    assert result["metrics"]["system.cpu.percent"]["count"] == 3
    assert result["samples"] == 3 and result["schema_version"] == 1
    assert (result["start_ns"], result["end_ns"]) == (T0, T0 + 2 * S)
    assert json.loads((tmp_path / "summary.json").read_text()) == result


def test_write_summary_without_samples(tmp_path: Path) -> None:
    assert write_summary(tmp_path, catalog=CATALOG) == {}
    assert not (tmp_path / "summary.json").exists()


def test_format_table_defaults() -> None:
    records = [
        record(i, "system", {"system.cpu.percent": 12.5, "system.memory.used_bytes": 3 * 2**30, "system.load.1m": 1})
        for i in range(5)
    ] + [record(i, "custom", {"app.frames.total": 30.0 * i, "app.queue": 2.0}) for i in range(5)]
    catalog = [*CATALOG, MetricInfo("system.memory.used_bytes", "bytes", "gauge", "used")]
    summary = summarize(records, catalog)
    assert default_keys(summary) == ["system.cpu.percent", "system.memory.used_bytes", "app.frames.total", "app.queue"]
    table = format_table(summary)
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "count", "mean", "p50", "p95", "max", "last", "rate"]
    assert lines[1].startswith("system.cpu.percent") and "12.5%" in lines[1]
    assert "3.0 GiB" in lines[2]
    assert lines[3].startswith("app.frames.total") and lines[3].endswith("30/s")
    assert "system.load.1m" not in table
    assert format_table(summary, ["system.load.1m", "nope"]).splitlines()[1].startswith("system.load.1m")
    assert format_table(summary, ["nope"]) == ""
    assert format_table({}) == ""


def test_no_infinity_in_the_json(tmp_path: Path) -> None:
    records = [record(i, "custom", {"app.huge": 1.5e308}) for i in range(2)]  # the running sum overflows
    result = write_summary_of(tmp_path, records)
    assert result["metrics"]["app.huge"]["mean"] is None
    assert result["metrics"]["app.huge"]["max"] == 1.5e308
    json.loads((tmp_path / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))


def write_summary_of(run_dir: Path, records: List[Dict[str, Any]]) -> Dict[str, Any]:
    (run_dir / SAMPLES).write_text("".join(json.dumps(r) + "\n" for r in records))
    return write_summary(run_dir, catalog=CATALOG)


def test_table_shows_counters_by_their_last_value_and_rate_and_seconds_readably():
    summary = {
        "metrics": {
            "app.frames.total": {"kind": "counter", "unit": "count", "count": 3, "mean": 33.0, "p50": 49.0,
                                 "p95": 49.9, "max": 50.0, "last": 50.0, "rate_per_s": 49.57},
            "app.infer.mean_seconds": {"kind": "gauge", "unit": "seconds", "count": 2, "mean": 0.0201, "p50": 0.0201,
                                       "p95": 0.0202, "max": 0.0202, "last": 0.0201},
        }
    }
    lines = format_table(summary).splitlines()
    frames = next(line for line in lines if line.startswith("app.frames.total"))
    assert frames.split()[1:] == ["3", "50", "49.57/s"]  # no mean/p50/p95/max of a running total
    infer = next(line for line in lines if line.startswith("app.infer.mean_seconds"))
    assert "20.1 ms" in infer
