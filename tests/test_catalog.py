"""The metric catalog: generated from the collectors, in sync with docs/metrics.md, and well formed."""

from __future__ import annotations

import re

from profiler.catalog import render_markdown
from profiler.collectors import REGISTRY, catalog, collector_class

from .conftest import REPO_ROOT

NAME = re.compile(r"[a-z0-9_]+(\.([a-z0-9_]+|<[a-z_]+>))+")


def test_docs_metrics_md_is_the_rendered_catalog():
    doc = (REPO_ROOT / "docs" / "metrics.md").read_text()
    assert doc == render_markdown(), "docs/metrics.md is stale: run `python -m profiler.catalog > docs/metrics.md`"


def test_every_registered_collector_loads_and_its_metrics_are_well_formed():
    seen = set()
    for name in REGISTRY:
        assert collector_class(name).name == name
    for collector, info in catalog():
        assert NAME.fullmatch(info.name), (collector, info.name)
        assert info.kind in ("gauge", "counter"), info
        assert info.unit and info.meaning, info
        assert (info.name not in seen), f"{info.name} is declared twice"
        seen.add(info.name)
        if info.kind == "counter":
            assert info.name.endswith("_total") or info.name.endswith(".total") or "_total" in info.name, info.name
