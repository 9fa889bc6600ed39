"""The live endpoint: the latest value of every metric of the run in progress, in Prometheus text format over HTTP,
so that a scheduler can watch a run while it happens.

``LiveMetrics`` is a sampler listener (it keeps the latest value per metric and label set) and a prometheus_client
collector on its own ``CollectorRegistry``, never the process-wide one. Names become Prometheus names
(``container.cpu.usage_percent`` → ``waap_container_cpu_usage_percent``; a counter ``app.frames.total`` →
``waap_app_frames_total``), each series labelled with ``run_id`` and ``source``; HELP comes from the catalog.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric

from .collectors import MetricInfo, Sample
from .errors import WaapError
from .summary import MetricCatalog, default_catalog

__all__ = ["LiveEndpointError", "LiveMetrics", "parse_address", "prometheus_name"]

_LabelKey = Tuple[Tuple[str, str], ...]


class LiveEndpointError(WaapError, ValueError):
    """The live endpoint's address is malformed, or nothing can listen there (in use, no such host)."""


def parse_address(address: str) -> Tuple[str, int]:
    """``host:port`` → (host, port). ``[::1]:9100`` for IPv6; ``:9100`` means every interface (0.0.0.0);
    port 0 lets the system choose. Raises ``LiveEndpointError`` (also a ``ValueError``) with what is wrong."""
    text = address.strip() if isinstance(address, str) else ""
    hint = "expected host:port, e.g. 127.0.0.1:9464, [::1]:9464, or :9464 for every interface"
    if not text:
        raise LiveEndpointError(f"empty live endpoint address: {hint}")
    if "/" in text:
        raise LiveEndpointError(f"bad live endpoint address {address!r}: no scheme or path; {hint}")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":") or not host:
            raise LiveEndpointError(f"bad live endpoint address {address!r}: {hint}")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise LiveEndpointError(f"bad live endpoint address {address!r}: no port; {hint}")
        if ":" in host:
            raise LiveEndpointError(f"bad live endpoint address {address!r}: put an IPv6 address in brackets; {hint}")
        if host and not re.fullmatch(r"[A-Za-z0-9.\-]+", host):
            raise LiveEndpointError(f"bad live endpoint address {address!r}: {host!r} is not a host name or address")
        host = host or "0.0.0.0"
    if not port_text.isdigit() or not port_text.isascii() or int(port_text) > 65535:
        raise LiveEndpointError(f"bad live endpoint address {address!r}: port must be a number 0-65535; {hint}")
    return host, int(port_text)


def prometheus_name(name: str, namespace: str = "waap") -> str:
    """``system.cpu.core.0.percent`` → ``waap_system_cpu_core_0_percent``; anything not allowed becomes ``_``."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return f"{namespace}_{base}" if namespace else (base if re.match(r"[A-Za-z_]", base) else f"_{base}")


def _label_name(key: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", key).lstrip("_") or "label"
    if name[0].isdigit():
        name = f"l_{name}"
    if name in ("run_id", "source"):
        name = f"exported_{name}"  # ours win; the sample's are kept under Prometheus's usual prefix
    return name


class LiveMetrics:
    """Latest values, served on demand. Use as a listener (``live(sample)``), ``serve("127.0.0.1:9464")``, and
    ``begin_run(run_id)`` when a new run starts (the values of the previous one are dropped). Thread-safe."""

    def __init__(
        self, run_id: str = "", *, catalog: Optional[Iterable[MetricInfo]] = None, namespace: str = "waap"
    ) -> None:
        self.namespace = namespace
        self.catalog = MetricCatalog(default_catalog() if catalog is None else catalog)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._run_id = run_id
        self._lock = threading.Lock()
        self._families: Dict[str, Tuple[str, str]] = {}  # prometheus name -> (kind, help)
        self._values: Dict[str, Dict[_LabelKey, float]] = {}
        self._samples = 0
        self._last_ts_ns = 0
        self._server: Optional[WSGIServer] = None
        self._thread: Optional[threading.Thread] = None
        self._bound: Optional[Tuple[str, int]] = None

    # -- the listener side -------------------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self._run_id

    def begin_run(self, run_id: str) -> None:
        """A new run: label what follows with ``run_id`` and forget the previous run's values."""
        with self._lock:
            self._run_id = run_id
            self._values.clear()
            self._families.clear()

    def __call__(self, sample: Sample) -> None:
        with self._lock:
            base = {"run_id": self._run_id, "source": sample.source}
            for key, text in sample.labels.items():
                base[_label_name(key)] = str(text)
            labels: _LabelKey = tuple(sorted(base.items()))
            for name, value in sample.values.items():
                pname = prometheus_name(name, self.namespace)
                if pname not in self._families:
                    self._families[pname] = (self.catalog.kind_of(name), self._help(name, sample.source))
                self._values.setdefault(pname, {})[labels] = float(value)
            self._samples += 1
            self._last_ts_ns = max(self._last_ts_ns, sample.ts_ns)

    def _help(self, name: str, source: str) -> str:
        info = self.catalog.info(name)
        if info is None:
            return f"{name} from the {source} collector"
        unit = f" [{info.unit}]" if info.unit else ""
        return f"{name}: {info.meaning}{unit}"

    # -- the prometheus_client collector side ------------------------------------------------------------------

    def describe(self) -> List[Metric]:
        return []  # names change during a run; nothing to reserve in the registry

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            families = dict(self._families)
            values = {name: dict(series) for name, series in self._values.items()}
            samples, last_ts_ns, run_id = self._samples, self._last_ts_ns, self._run_id
        for pname in sorted(values):
            kind, doc = families[pname]
            if kind == "counter":
                family = pname[: -len("_total")] if pname.endswith("_total") else pname
                metric = Metric(family, doc, "counter")
                sample_name = f"{family}_total"
            else:
                metric = Metric(pname, doc, "gauge")
                sample_name = pname
            for labels, value in sorted(values[pname].items()):
                metric.add_sample(sample_name, dict(labels), value)
            yield metric
        own = {"run_id": run_id}
        received = Metric(f"{self.namespace}_live_samples", "samples received by the live endpoint", "counter")
        received.add_sample(f"{self.namespace}_live_samples_total", own, float(samples))
        yield received
        if last_ts_ns:
            last = Metric(
                f"{self.namespace}_live_last_sample_timestamp_seconds",
                "Unix time of the newest sample received",
                "gauge",
            )
            last.add_sample(last.name, own, last_ts_ns / 1e9)
            yield last

    # -- the HTTP side -----------------------------------------------------------------------------------------

    def serve(self, address: str) -> Tuple[str, int]:
        """Listen on ``address`` (``host:port``) on a daemon thread; returns the bound (host, port), which tells
        the port chosen for port 0. Raises ``LiveEndpointError`` for a bad address or when it cannot listen."""
        host, port = parse_address(address)
        if self._server is not None:
            raise LiveEndpointError(f"the live endpoint already listens on {self.url}")
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:  # in use, no such address on this machine, unknown host name
            raise LiveEndpointError(f"cannot serve live metrics on {address}: {e.strerror or e}") from e
        self._server, self._thread = server, thread
        self._bound = (host, int(server.server_address[1]))
        return self._bound

    @property
    def address(self) -> Optional[Tuple[str, int]]:
        return self._bound

    @property
    def url(self) -> str:
        if self._bound is None:
            return ""
        host, port = self._bound
        return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"

    def close(self) -> None:
        """Stop serving (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        self._bound = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> LiveMetrics:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
