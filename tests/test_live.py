"""The live endpoint: Prometheus text over HTTP on loopback, fed by samples, scraped with urllib."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, Mapping, Optional, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from profiler.collectors import Collector, MetricInfo, RunContext, Sample
from profiler.errors import WaapError
from profiler.live import LiveEndpointError, LiveMetrics, parse_address, prometheus_name
from profiler.sampler import Sampler

CATALOG = [
    MetricInfo("container.cpu.usage_percent", "percent", "gauge", "CPU used by the app's container"),
    MetricInfo("system.cpu.core.<n>.percent", "percent", "gauge", "busy share of core n"),
    MetricInfo("system.disk.read_bytes_total", "bytes", "counter", "bytes read"),
    MetricInfo("app.<name>.total", "", "counter", "an app's counter"),
]

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def scrape(url: str) -> Dict[str, Tuple[str, str, Dict[Tuple[Tuple[str, str], ...], float]]]:
    """family name -> (type, help, {sorted labels: value})"""
    with NO_PROXY.open(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    families = {}
    for family in text_string_to_metric_families(text):
        series = {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        families[family.name] = (family.type, family.documentation, series)
    return families


@pytest.fixture
def live() -> Iterator[LiveMetrics]:
    metrics = LiveMetrics("run-1", catalog=CATALOG)
    yield metrics
    metrics.close()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("localhost:0", ("localhost", 0)),
        (":9464", ("0.0.0.0", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        (" 10.0.0.2:80 ", ("10.0.0.2", 80)),
    ],
)
def test_parse_address(address: str, expected: Tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("", "empty"),
        ("9464", "no port"),
        ("127.0.0.1:", "port must be a number"),
        ("127.0.0.1:http", "port must be a number"),
        ("127.0.0.1:70000", "port must be a number"),
        ("127.0.0.1:-1", "port must be a number"),
        ("::1:9464", "brackets"),
        ("[::1]9464", "bad live endpoint address"),
        ("ho st:80", "not a host name"),
        ("http://127.0.0.1:80", "no scheme or path"),
    ],
)
def test_bad_addresses_say_what_is_wrong(address: str, message: str) -> None:
    with pytest.raises(LiveEndpointError, match=message) as info:
        parse_address(address)
    assert isinstance(info.value, WaapError) and isinstance(info.value, ValueError)
    assert "host:port" in str(info.value) or "host name" in str(info.value)


def test_prometheus_names() -> None:
    assert prometheus_name("container.cpu.usage_percent") == "waap_container_cpu_usage_percent"
    assert prometheus_name("system.cpu.core.0.percent") == "waap_system_cpu_core_0_percent"
    assert prometheus_name("app.my-metric.total") == "waap_app_my_metric_total"


def test_scraped_values(live: LiveMetrics) -> None:
    host, port = live.serve("127.0.0.1:0")
    assert host == "127.0.0.1" and port > 0
    assert live.url == f"http://127.0.0.1:{port}/metrics"
    live(Sample(1_700_000_000 * 10**9, "container", {"container.cpu.usage_percent": 12.5}))
    live(Sample(1_700_000_001 * 10**9, "container", {"container.cpu.usage_percent": 37.5}))  # the latest wins
    live(
        Sample(
            1_700_000_001 * 10**9, "system", {"system.cpu.core.1.percent": 99.0, "system.disk.read_bytes_total": 4096.0}
        )
    )
    live(
        Sample(
            1_700_000_001 * 10**9,
            "custom",
            {"app.frames.total": 300.0, "app.fps": 29.5},
            {"camera": "top", "source": "app"},
        )
    )
    families = scrape(live.url)

    kind, doc, series = families["waap_container_cpu_usage_percent"]
    assert kind == "gauge"
    assert doc == "container.cpu.usage_percent: CPU used by the app's container [percent]"
    assert series == {(("run_id", "run-1"), ("source", "container")): 37.5}

    kind, doc, series = families["waap_system_cpu_core_1_percent"]
    assert (kind, doc) == ("gauge", "system.cpu.core.1.percent: busy share of core n [percent]")

    kind, _, series = families["waap_system_disk_read_bytes"]
    assert kind == "counter"
    assert list(series.values()) == [4096.0]

    labels = (("camera", "top"), ("exported_source", "app"), ("run_id", "run-1"), ("source", "custom"))
    assert families["waap_app_frames"][0] == "counter"
    assert families["waap_app_frames"][2] == {labels: 300.0}
    assert families["waap_app_fps"][:2] == ("gauge", "app.fps from the custom collector")
    assert families["waap_live_samples"][2] == {(("run_id", "run-1"),): 4.0}
    assert families["waap_live_last_sample_timestamp_seconds"][2] == {(("run_id", "run-1"),): 1_700_000_001.0}


def test_text_format_names(live: LiveMetrics) -> None:
    live.serve("127.0.0.1:0")
    live(Sample(1, "system", {"system.disk.read_bytes_total": 1.0}))
    with NO_PROXY.open(live.url, timeout=10) as response:
        text = response.read().decode()
    assert "# TYPE waap_system_disk_read_bytes_total counter" in text
    assert 'waap_system_disk_read_bytes_total{run_id="run-1",source="system"} 1.0' in text


def test_a_new_run_forgets_the_last(live: LiveMetrics) -> None:
    live.serve("127.0.0.1:0")
    live(Sample(1, "container", {"container.cpu.usage_percent": 50.0}))
    live.begin_run("run-2")
    live(Sample(2, "system", {"system.cpu.core.0.percent": 5.0}))
    families = scrape(live.url)
    assert "waap_container_cpu_usage_percent" not in families
    assert families["waap_system_cpu_core_0_percent"][2] == {(("run_id", "run-2"), ("source", "system")): 5.0}


def test_own_registry_not_the_global_one(live: LiveMetrics) -> None:
    from prometheus_client import REGISTRY

    live(Sample(1, "container", {"container.cpu.usage_percent": 50.0}))
    assert (
        REGISTRY.get_sample_value("waap_container_cpu_usage_percent", {"run_id": "run-1", "source": "container"})
        is None
    )
    assert (
        live.registry.get_sample_value("waap_container_cpu_usage_percent", {"run_id": "run-1", "source": "container"})
        == 50.0
    )


def test_a_port_in_use_is_a_clear_error(live: LiveMetrics) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(LiveEndpointError, match=f"cannot serve live metrics on 127.0.0.1:{port}"):
            live.serve(f"127.0.0.1:{port}")
    assert live.address is None


def test_serving_twice_and_closing(live: LiveMetrics) -> None:
    live.serve("127.0.0.1:0")
    url = live.url
    with pytest.raises(LiveEndpointError, match="already listens"):
        live.serve("127.0.0.1:0")
    live.close()
    live.close()
    assert live.url == ""
    with pytest.raises(OSError):
        NO_PROXY.open(url, timeout=2)


class Counting(Collector):
    name = "container"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def sample(self, ts_ns: int) -> Optional[Mapping[str, float]]:
        self.calls += 1
        return {"container.cpu.usage_percent": float(self.calls)}


def test_scraped_during_a_sampled_run(tmp_path: Path, live: LiveMetrics) -> None:
    """A sampler at 0.05 s feeds the endpoint; scrapes during the run see the values move."""
    collector = Counting()
    live.serve("127.0.0.1:0")
    sampler = Sampler([collector], interval_s=0.05, samples_path=tmp_path / "samples.jsonl", listeners=[live])
    sampler.start(RunContext("run-1", "cid", 0, tmp_path, tmp_path, 0.05))
    try:
        key = (("run_id", "run-1"), ("source", "container"))
        first = scrape(live.url)["waap_container_cpu_usage_percent"][2][key]
        deadline = time.monotonic() + 5
        later = first
        while later <= first and time.monotonic() < deadline:
            time.sleep(0.05)
            later = scrape(live.url)["waap_container_cpu_usage_percent"][2][key]
    finally:
        sampler.stop()
    assert first >= 1.0
    assert later > first
    assert scrape(live.url)["waap_container_cpu_usage_percent"][2][key] == collector.calls
