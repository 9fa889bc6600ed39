"""The results store (profiler.store, profiler.cli_store) on run directories written by real ``waap run``s: what
``waap run`` records, that the rows equal the run directory's files, idempotent re-ingests, damaged and unfinished
runs, stores that cannot be used, and the ``waap ingest`` / ``waap runs`` commands as a user runs them.

The real runs are made once per module and copied into each test's own folder before anything is changed."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import docker
import pytest

from profiler.identity import LABEL, LABEL_RUN_DIR
from profiler.rundir import read_manifest
from profiler.store import STORE_SCHEMA_VERSION, ResultStore, StoreError, store_path

from .conftest import REPO_ROOT

WAAP = [sys.executable, "-m", "profiler.cli"]
TOOLS_IMAGE = os.environ.get("WAAP_TOOLS_IMAGE", "waap-test-tools:latest")
STAT_FIELDS = ("count", "min", "mean", "p50", "p95", "max", "last", "unit", "kind", "source", "increase",
               "rate_per_s")
NOT_A_RUN_FOLDER = "is not a run directory, a session folder or a results folder"


def waap(*args: str, cwd: Path = REPO_ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([*WAAP, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL)


def run_dirs(root: Path) -> List[Path]:
    """The run directories of a results folder, in name order."""
    return sorted(p.parent for p in root.glob("*/*/manifest.json"))


def copy_results(src: Path, dst: Path) -> Path:
    """A copy of a results folder without its store, to change and ingest."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("waap.db"))
    return dst


def file_values(samples: Path) -> List[Tuple[int, str, str, float, Optional[str]]]:
    """Every finite numeric value of every complete line of samples.jsonl, read independently of the store's code:
    (ts_ns, source, metric, value, labels as sorted JSON)."""
    rows = []
    with open(samples, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # a torn last line
            record = json.loads(line)
            labels = json.dumps(record["labels"], sort_keys=True) if record.get("labels") else None
            for name, value in record["values"].items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    rows.append((record["ts_ns"], record["source"], name, float(value), labels))
    return sorted(rows)


def db_values(db: Path, run_id: str) -> List[Tuple[int, str, str, float, Optional[str]]]:
    with sqlite3.connect(db) as c:
        return sorted(c.execute("SELECT ts_ns, source, metric, value, labels FROM samples WHERE run_id = ?",
                                (run_id,)).fetchall())


def rows(db: Path, sql: str, *args: Any) -> List[Dict[str, Any]]:
    with sqlite3.connect(db) as c:
        cursor = c.execute(sql, args)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r)) for r in cursor.fetchall()]


def table_counts(db: Path) -> Dict[str, int]:
    with ResultStore(db) as s:
        return {t: s.count(t) for t in ("sessions", "runs", "metrics", "samples", "tools")}


def snapshot(db: Path) -> Dict[str, List[Tuple[Any, ...]]]:
    """Every row of every table, the ingest times left out: equal snapshots mean equal stores."""
    with sqlite3.connect(db) as c:
        return {
            "sessions": sorted(c.execute("SELECT session_id, profile_source, image, runs_planned, finished, "
                                         "interrupted, error FROM sessions").fetchall()),
            "runs": sorted(r[:-1] for r in c.execute("SELECT * FROM runs").fetchall()),  # ingested_ns is last
            "metrics": sorted(c.execute("SELECT * FROM metrics").fetchall(), key=repr),
            "samples": sorted(c.execute("SELECT * FROM samples").fetchall(), key=repr),
            "tools": sorted(c.execute("SELECT * FROM tools").fetchall()),
        }


def edit_manifest(run: Path, **changes: Any) -> None:
    m = read_manifest(run)
    m.update(changes)
    (run / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")


def _remove_containers(client: docker.DockerClient, root: Path) -> None:
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        if container.labels.get(LABEL_RUN_DIR, "").startswith(str(root)):
            container.remove(force=True)


@dataclass
class RealRun:
    results: Path  # the results folder `waap run -o` wrote, with its embedded waap.db
    proc: subprocess.CompletedProcess

    @property
    def runs(self) -> List[Path]:
        return run_dirs(self.results)

    @property
    def db(self) -> Path:
        return self.results / "waap.db"


@pytest.fixture(scope="module")
def demo(docker_client: docker.DockerClient, demo_image: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRun]:
    """Two runs of the demo plugin in one session (``--repeat 2``), with system, container and custom metrics, long
    enough (~2 s) for two container samples and so a container.cpu.usage_percent."""
    root = tmp_path_factory.mktemp("demo")
    results = root / "results"
    p = waap("run", "--image", demo_image, "--args", "-interval 0.2 --frames 10", "--metrics",
             "system,container,custom", "--interval", "0.5", "--repeat", "2", "-q", "-o", str(results))
    assert p.returncode == 0, (p.stdout, p.stderr)
    yield RealRun(results, p)
    _remove_containers(docker_client, root)


@pytest.fixture(scope="module")
def tool_run(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRun]:
    """One run under the stand-in TAU of ``waap-test-tools`` (tests/images/tools)."""
    try:
        docker_client.images.get(TOOLS_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {TOOLS_IMAGE} is missing; build it with scripts/build-images.sh")
    root = tmp_path_factory.mktemp("tool")
    results = root / "results"
    p = waap("run", "--image", TOOLS_IMAGE, "--tools", "tau", "--metrics", "system", "-q", "-o", str(results))
    assert p.returncode == 0, (p.stdout, p.stderr)
    yield RealRun(results, p)
    _remove_containers(docker_client, root)


@pytest.fixture(scope="module")
def interrupted(docker_client: docker.DockerClient, base_image: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRun]:
    """A run stopped by Ctrl-C (SIGINT to ``waap run``): finished, status partial."""
    root = tmp_path_factory.mktemp("interrupted")
    results = root / "results"
    code = "import time\nprint(\"ready\", flush=True)\ntime.sleep(300)"
    proc = subprocess.Popen([*WAAP, "run", "--image", base_image, "--args", f"python3 -c '{code}'", "-o",
                             str(results)], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            logs = list(results.glob("*/*/app.log"))
            if logs and "ready" in logs[0].read_text():
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the app did not start")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    yield RealRun(results, subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    _remove_containers(docker_client, root)


# -- what `waap run` records -----------------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_waap_run_records_its_runs_in_the_embedded_store(demo: RealRun) -> None:
    assert demo.db.is_file()
    runs = demo.runs
    assert [r.name for r in runs] == ["target1-r1", "target1-r2"]
    total = sum(len(file_values(r / "samples.jsonl")) for r in runs)
    assert f"Stored 2 run(s), {total} sample value(s), in {demo.db}" in demo.proc.stdout
    for run in runs:
        m = read_manifest(run)
        [row] = rows(demo.db, "SELECT * FROM runs WHERE run_id = ?", m["run_id"])
        assert (row["status"], row["stop_reason"], row["exit_code"]) == ("complete", "exited", 0)
        assert (row["status"], row["stop_reason"], row["exit_code"]) == (m["status"], m["stop_reason"], m["exit_code"])
        assert (row["image"], row["image_id"]) == (m["app"]["image"], m["app"]["image_id"])
        assert (row["target"], row["target_index"], row["repeat_index"]) == (
            m["target"]["name"], m["target"]["index"], m["target"]["repeat_index"])
        assert (row["session_id"], row["dir"], row["tool"]) == (m["session_id"], run.name, None)
        assert (row["start_ns"], row["end_ns"], row["duration_s"]) == (m["start_ns"], m["end_ns"], m["duration_s"])
        assert json.loads(row["args"]) == ["-interval", "0.2", "--frames", "10"]
        assert (row["arch"], row["hostname"], row["profiler_version"]) == (
            m["device"]["arch"], m["device"]["hostname"], m["profiler"]["version"])
        assert json.loads(row["manifest"]) == m
        assert row["samples"] == len(file_values(run / "samples.jsonl")) > 0
    session = json.loads((runs[0].parent / "session.json").read_text())
    [srow] = rows(demo.db, "SELECT * FROM sessions")
    assert srow["session_id"] == session["session_id"] == read_manifest(runs[0])["session_id"]
    assert (srow["profile_source"], srow["image"], srow["runs_planned"], srow["finished"], srow["interrupted"]) == (
        "<command line>", session["image"], 2, 1, 0)


@pytest.mark.docker
@pytest.mark.slow
def test_metric_rows_equal_the_summary(demo: RealRun) -> None:
    for run in demo.runs:
        run_id = read_manifest(run)["run_id"]
        summary = json.loads((run / "summary.json").read_text())["metrics"]
        stored = {r["metric"]: r for r in rows(demo.db, "SELECT * FROM metrics WHERE run_id = ?", run_id)}
        assert set(stored) == set(summary)
        for key, stats in summary.items():
            assert {f: stored[key][f] for f in STAT_FIELDS} == {f: stats.get(f) for f in STAT_FIELDS}, key
        with ResultStore(demo.db) as s:
            frames = s.metric(run_id, "app.frames.total")
            cpu = s.metric(run_id, "container.cpu.usage_percent")
            assert s.metric(run_id, "no.such.metric") is None
        assert frames is not None and cpu is not None
        assert (frames["count"], frames["last"], frames["increase"]) == (
            summary["app.frames.total"]["count"], 10.0, 10.0)
        assert frames["kind"] == "counter" and frames["rate_per_s"] == summary["app.frames.total"]["rate_per_s"] > 0
        assert cpu["mean"] == summary["container.cpu.usage_percent"]["mean"]
        assert cpu["count"] == summary["container.cpu.usage_percent"]["count"] >= 1


@pytest.mark.docker
@pytest.mark.slow
def test_sample_rows_are_the_finite_values_of_samples_jsonl(demo: RealRun) -> None:
    for run in demo.runs:
        run_id = read_manifest(run)["run_id"]
        expected = file_values(run / "samples.jsonl")
        assert len(expected) > 50  # system, container and app values over several ticks
        assert db_values(demo.db, run_id) == expected


@pytest.mark.docker
@pytest.mark.slow
def test_a_run_under_a_tool_stores_the_tool_and_its_highlights(tool_run: RealRun) -> None:
    [run] = tool_run.runs
    m = read_manifest(run)
    [entry] = m["tools"]
    assert entry["name"] == "tau" and entry["status"] == "ok" and entry["highlights"]
    [row] = rows(tool_run.db, "SELECT * FROM tools")
    assert (row["run_id"], row["name"], row["status"], row["error"]) == (m["run_id"], "tau", "ok", None)
    assert json.loads(row["highlights"]) == entry["highlights"]
    assert json.loads(row["highlights"])[0]["table"] == "functions"
    assert json.loads(row["entry"]) == entry
    [run_row] = rows(tool_run.db, "SELECT tool, status FROM runs")
    assert run_row == {"tool": "tau", "status": "complete"}


@pytest.mark.docker
@pytest.mark.slow
def test_an_interrupted_run_is_stored_as_partial(interrupted: RealRun) -> None:
    assert interrupted.proc.returncode == 1, (interrupted.proc.stdout, interrupted.proc.stderr)
    [run] = interrupted.runs
    m = read_manifest(run)
    assert (m["status"], m["stop_reason"], m["finished"]) == ("partial", "interrupted", True)
    assert "Stored 1 run(s)" in interrupted.proc.stdout
    [row] = rows(interrupted.db, "SELECT run_id, status, stop_reason FROM runs")
    assert row == {"run_id": m["run_id"], "status": "partial", "stop_reason": "interrupted"}
    [session] = rows(interrupted.db, "SELECT interrupted FROM sessions")
    assert session["interrupted"] == 1


# -- idempotency -----------------------------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_ingesting_twice_gives_the_same_store(demo: RealRun, tool_run: RealRun, tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with ResultStore(db) as s:
        first = s.ingest([demo.results, tool_run.results], now_ns=1)
    once, rows_once = table_counts(db), snapshot(db)
    with ResultStore(db) as s:
        second = s.ingest([demo.results, tool_run.results], now_ns=2)
    assert first.stored == second.stored and len(first.stored) == 3 and not first.skipped
    assert first.samples == second.samples == once["samples"]
    assert table_counts(db) == once
    assert once["runs"] == 3 and once["sessions"] == 2 and once["tools"] == 1
    assert snapshot(db) == rows_once
    assert {r["ingested_ns"] for r in rows(db, "SELECT ingested_ns FROM runs")} == {2}


@pytest.mark.docker
@pytest.mark.slow
def test_a_changed_run_ingested_again_replaces_its_rows(demo: RealRun, tmp_path: Path) -> None:
    results = copy_results(demo.results, tmp_path / "results")
    run = run_dirs(results)[0]
    run_id = read_manifest(run)["run_id"]
    db = tmp_path / "s.db"
    with ResultStore(db) as s:
        s.ingest([results])
    before = table_counts(db)

    summary = json.loads((run / "summary.json").read_text())
    summary["metrics"]["app.frames.total"]["last"] = 999.0
    del summary["metrics"]["app.objects"]
    (run / "summary.json").write_text(json.dumps(summary))
    lines = (run / "samples.jsonl").read_text().splitlines(keepends=True)
    (run / "samples.jsonl").write_text("".join(lines[:2]))
    edit_manifest(run, exit_code=7)
    with ResultStore(db) as s:
        report = s.ingest([run])
        assert report.stored == [run_id]
        frames = s.metric(run_id, "app.frames.total")
        assert frames is not None and frames["last"] == 999.0
        assert s.metric(run_id, "app.objects") is None
    assert db_values(db, run_id) == file_values(run / "samples.jsonl")
    after = table_counts(db)
    assert after["runs"] == before["runs"] == 2
    assert after["metrics"] == before["metrics"] - 1
    assert after["samples"] == before["samples"] - (len(file_values(demo.runs[0] / "samples.jsonl"))
                                                    - len(file_values(run / "samples.jsonl")))
    [row] = rows(db, "SELECT exit_code, samples FROM runs WHERE run_id = ?", run_id)
    assert row == {"exit_code": 7, "samples": len(file_values(run / "samples.jsonl"))}


# -- damaged, unfinished and foreign input ---------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_a_torn_last_line_keeps_the_complete_lines(demo: RealRun, tmp_path: Path) -> None:
    results = copy_results(demo.results, tmp_path / "results")
    run = run_dirs(results)[0]
    samples = run / "samples.jsonl"
    whole = samples.read_text()
    last = whole.splitlines()[-1]
    samples.write_text(whole[: len(whole) - 1 - len(last) // 2])  # newline dropped, the last line cut mid-way
    assert not samples.read_text().endswith("\n")
    expected = file_values(samples)
    assert 0 < len(expected) < len(file_values(demo.runs[0] / "samples.jsonl"))
    db = tmp_path / "s.db"
    with ResultStore(db) as s:
        report = s.ingest([run])
    run_id = read_manifest(run)["run_id"]
    assert report.stored == [run_id] and not report.skipped and report.samples == len(expected)
    assert db_values(db, run_id) == expected


@pytest.mark.docker
@pytest.mark.slow
def test_labels_and_non_numeric_values_in_samples(demo: RealRun, tmp_path: Path) -> None:
    results = copy_results(demo.results, tmp_path / "results")
    run = run_dirs(results)[0]
    with open(run / "samples.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"ts_ns": 1795309421412000000, "source": "custom",
                             "values": {"app.frames.total": 120, "app.flag": True, "app.name": "x"},
                             "labels": {"camera": "left", "b": "1"}}) + "\n")
        fh.write("not json at all\n")
        fh.write(json.dumps({"ts_ns": "later", "source": "custom", "values": {"app.frames.total": 1}}) + "\n")
    db = tmp_path / "s.db"
    with ResultStore(db) as s:
        s.ingest([run])
    run_id = read_manifest(run)["run_id"]
    stored = db_values(db, run_id)
    labelled = [r for r in stored if r[4] is not None]
    assert labelled == [(1795309421412000000, "custom", "app.frames.total", 120.0, '{"b": "1", "camera": "left"}')]
    assert len(stored) == len(file_values(demo.runs[0] / "samples.jsonl")) + 1


@pytest.mark.docker
@pytest.mark.slow
def test_an_unfinished_run_is_skipped_with_the_reason_and_comes_in_later(demo: RealRun, tmp_path: Path) -> None:
    results = copy_results(demo.results, tmp_path / "results")
    unfinished, done = run_dirs(results)
    edit_manifest(unfinished, finished=False)
    db = tmp_path / "s.db"
    with ResultStore(db) as s:
        report = s.ingest([results])
        assert report.stored == [read_manifest(done)["run_id"]]
        [(path, why)] = report.skipped
        assert path == str(unfinished)
        assert unfinished.name in why and "has not finished" in why
        assert [r["run_id"] for r in s.runs()] == [read_manifest(done)["run_id"]]
    assert rows(db, "SELECT COUNT(*) AS n FROM samples WHERE run_id = ?", read_manifest(unfinished)["run_id"]) == [
        {"n": 0}]
    edit_manifest(unfinished, finished=True)  # the runner finished it
    with ResultStore(db) as s:
        assert s.ingest([results]).stored == [read_manifest(r)["run_id"] for r in (unfinished, done)]
        assert s.count("runs") == 2


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize(("content", "reason"), [
    (b"\x00\xff{garbage", "cannot read"),
    (b"[1, 2, 3]\n", "expected a JSON object"),
    (b'{"finished": true, "status": "complete"}\n', "has no run_id"),
])
def test_a_run_with_a_bad_manifest_is_skipped_with_the_reason(demo: RealRun, tmp_path: Path, content: bytes,
                                                              reason: str) -> None:
    results = copy_results(demo.results, tmp_path / "results")
    bad, good = run_dirs(results)
    (bad / "manifest.json").write_bytes(content)
    with ResultStore(tmp_path / "s.db") as s:
        report = s.ingest([results])
        assert report.stored == [read_manifest(good)["run_id"]]
        [(path, why)] = report.skipped
        assert path == str(bad) and reason in why and "manifest.json" in why
        assert s.count("runs") == 1


def test_a_path_that_holds_no_runs_is_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("hello\n")
    with ResultStore(tmp_path / "s.db") as s:
        for path in (tmp_path / "missing", a_file):
            with pytest.raises(StoreError, match=NOT_A_RUN_FOLDER) as e:
                s.ingest([path])
            assert str(path) in str(e.value)
        assert s.count("runs") == 0


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "waap.db"
    junk = os.urandom(8192)
    db.write_bytes(junk)
    with pytest.raises(StoreError, match="is not a WaAP store") as e:
        ResultStore(db)
    assert str(db) in str(e.value)
    assert db.read_bytes() == junk
    p = waap("runs", "--store", str(db))
    assert p.returncode == 1 and "is not a WaAP store" in p.stderr and "Traceback" not in p.stderr


def test_a_store_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "waap.db"
    ResultStore(db).close()
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(STORE_SCHEMA_VERSION),)
        c.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError) as e:
        ResultStore(db)
    message = str(e.value)
    assert "schema version 99" in message and f"reads version {STORE_SCHEMA_VERSION}" in message
    with sqlite3.connect(db) as c:  # left as it was
        assert c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("99",)


@pytest.mark.parametrize(("value", "path"), [
    ("sqlite:///rel.db", Path("rel.db")),
    ("sqlite:///sub/dir/rel.db", Path("sub/dir/rel.db")),
    ("sqlite:////abs/dir/w.db", Path("/abs/dir/w.db")),
    ("plain/file.db", Path("plain/file.db")),
])
def test_store_paths_and_urls(value: str, path: Path) -> None:
    assert store_path(value) == path


@pytest.mark.parametrize("value", ["postgresql://waap@db.example/waap", "mysql://x/y", "sqlite://rel.db"])
def test_other_stores_are_unsupported(value: str, tmp_path: Path) -> None:
    scheme = value.split("://")[0]
    with pytest.raises(StoreError, match=f"unsupported store {scheme}://"):
        store_path(value)
    p = waap("runs", "--store", value, cwd=tmp_path)
    assert p.returncode == 1 and f"unsupported store {scheme}://" in p.stderr and "Traceback" not in p.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.docker
@pytest.mark.slow
def test_sqlite_urls_on_the_command_line(demo: RealRun, tmp_path: Path) -> None:
    p = waap("ingest", str(demo.results), "--store", "sqlite:///rel/store.db", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert table_counts(tmp_path / "rel" / "store.db")["runs"] == 2
    absolute = tmp_path / "abs.db"
    p = waap("ingest", str(demo.results), "--store", f"sqlite:///{absolute}", cwd=REPO_ROOT)  # sqlite:////tmp/...
    assert p.returncode == 0, p.stderr
    assert table_counts(absolute)["runs"] == 2


@pytest.mark.docker
@pytest.mark.slow
def test_without_samples_runs_and_metrics_are_stored(demo: RealRun, tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    p = waap("ingest", str(demo.results), "--store", str(db), "--no-samples")
    assert p.returncode == 0, p.stderr
    assert "Stored 2 run(s), 0 sample value(s)" in p.stdout
    counts = table_counts(db)
    assert counts["runs"] == 2 and counts["samples"] == 0
    assert counts["metrics"] == sum(len(json.loads((r / "summary.json").read_text())["metrics"]) for r in demo.runs)
    assert {r["samples"] for r in rows(db, "SELECT samples FROM runs")} == {0}



@pytest.mark.docker
@pytest.mark.slow
def test_concurrent_ingests_into_one_new_store_wait_for_each_other(demo: RealRun, tmp_path: Path) -> None:
    """Four `waap ingest`s of the same runs at once, into a store none of them has created yet: each waits for the
    others' transactions (docs/store.md: up to 30 s) and the store ends with each run once."""
    results = copy_results(demo.results, tmp_path / "results")
    for run in run_dirs(results):  # ~0.3 s of ingest per run, so that the transactions overlap
        samples = run / "samples.jsonl"
        samples.write_text(samples.read_text() * 300)
    expected = sum(len(file_values(r / "samples.jsonl")) for r in run_dirs(results))
    db = tmp_path / "shared.db"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [subprocess.Popen([*WAAP, "ingest", str(results), "--store", str(db)], cwd=REPO_ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    assert all(out.startswith(f"Stored 2 run(s), {expected} sample value(s)") for out, _ in outputs), outputs
    counts = table_counts(db)
    assert (counts["runs"], counts["sessions"], counts["samples"]) == (2, 1, expected)

# -- the commands ----------------------------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_waap_ingest_reports_what_it_stored(demo: RealRun, tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    p = waap("ingest", str(demo.results), "--store", str(db))
    assert p.returncode == 0, p.stderr
    total = sum(len(file_values(r / "samples.jsonl")) for r in demo.runs)
    assert p.stdout == f"Stored 2 run(s), {total} sample value(s), in {db}\n"
    assert table_counts(db)["samples"] == total
    [session] = demo.results.glob("*/session.json")  # a session folder, and one run directory, work alike
    p = waap("ingest", str(session.parent), str(demo.runs[0]), "--store", str(db))
    # a run named twice (in its session and by itself) is stored once
    assert p.returncode == 0 and p.stdout == f"Stored 2 run(s), {total} sample value(s), in {db}\n"
    assert table_counts(db)["runs"] == 2


@pytest.mark.docker
@pytest.mark.slow
def test_waap_ingest_fails_when_every_run_is_skipped(demo: RealRun, tmp_path: Path) -> None:
    results = copy_results(demo.results, tmp_path / "results")
    for run in run_dirs(results):
        edit_manifest(run, finished=False)
    db = tmp_path / "s.db"
    p = waap("ingest", str(results), "--store", str(db))
    assert p.returncode == 1, p.stdout
    lines = p.stdout.splitlines()
    assert lines[-1] == f"Stored 0 run(s), 0 sample value(s), in {db}"
    assert [line.split(":")[0] for line in lines[:-1]] == [f"  skipped {r}" for r in run_dirs(results)]
    assert all("has not finished" in line for line in lines[:-1])
    p = waap("ingest", str(tmp_path / "missing"), "--store", str(db))
    assert p.returncode == 1 and NOT_A_RUN_FOLDER in p.stderr and "Traceback" not in p.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_waap_runs_lists_the_newest_first(demo: RealRun, tool_run: RealRun, interrupted: RealRun,
                                          tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    p = waap("ingest", str(demo.results), str(tool_run.results), str(interrupted.results), "--store", str(db))
    assert p.returncode == 0, p.stderr
    dirs = {read_manifest(r)["run_id"]: r for real in (demo, tool_run, interrupted) for r in real.runs}
    manifests = {run_id: read_manifest(r) for run_id, r in dirs.items()}
    newest_first = sorted(dirs, key=lambda run_id: -manifests[run_id]["start_ns"])
    p = waap("runs", "--store", str(db))
    assert p.returncode == 0, p.stderr
    header, *lines = p.stdout.splitlines()
    assert header.split() == ["run", "image", "tool", "status", "stop", "reason", "exit", "duration", "samples"]
    assert [line.split()[0] for line in lines] == newest_first
    by_id = {line.split()[0]: line.split() for line in lines}
    tool_id = read_manifest(tool_run.runs[0])["run_id"]
    assert by_id[tool_id][1:6] == [TOOLS_IMAGE, "tau", "complete", "exited", "0"]
    partial_id = read_manifest(interrupted.runs[0])["run_id"]
    assert by_id[partial_id][2:5] == ["-", "partial", "interrupted"]
    for run_id, m in manifests.items():
        cells = by_id[run_id]
        assert cells[-2:] == [f"{m['duration_s']:.1f}s", str(len(file_values(dirs[run_id] / "samples.jsonl")))]

    image = read_manifest(demo.runs[0])["app"]["image"]
    p = waap("runs", "--store", str(db), "--image", image, "--limit", "1")
    assert p.returncode == 0
    [_, only] = p.stdout.splitlines()
    assert only.split()[0] == read_manifest(demo.runs[1])["run_id"]  # r2 started after r1
    p = waap("runs", "--store", str(db), "--image", "no/such:image")
    assert p.returncode == 0 and p.stdout == f"no runs in {db}\n"


def test_waap_runs_without_a_store_fails_and_creates_none(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    p = waap("runs", "--store", str(missing))
    assert p.returncode == 1
    assert f"no store at {missing}" in p.stderr and "Traceback" not in p.stderr
    assert not missing.exists()


@pytest.mark.docker
@pytest.mark.slow
def test_waap_run_no_store_writes_no_store(base_image: str, results: Path) -> None:
    p = waap("run", "--image", base_image, "--args", "true", "--no-store", "-q", "-o", str(results))
    assert p.returncode == 0, p.stderr
    [run] = run_dirs(results)
    assert read_manifest(run)["status"] == "complete"
    assert not (results / "waap.db").exists() and list(results.rglob("*.db")) == []
    assert "Stored" not in p.stdout and "Not stored" not in p.stdout


@pytest.mark.docker
@pytest.mark.slow
def test_waap_run_with_a_store_it_cannot_write_still_succeeds(base_image: str, results: Path,
                                                              tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    p = waap("run", "--image", base_image, "--args", "true", "--store", str(blocker / "x.db"), "-q", "-o",
             str(results))
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "Not stored:" in p.stdout and str(blocker / "x.db") in p.stdout and "waap ingest" in p.stdout
    assert "Traceback" not in p.stderr
    [run] = run_dirs(results)
    assert read_manifest(run)["status"] == "complete"
    assert not (results / "waap.db").exists()
    # the run directories are complete: `waap ingest` records them later
    p = waap("ingest", str(results), "--store", str(tmp_path / "later.db"))
    assert p.returncode == 0 and p.stdout.startswith("Stored 1 run(s)")


@pytest.mark.docker
@pytest.mark.slow
def test_waap_run_with_a_sqlite_url_store(base_image: str, results: Path, tmp_path: Path) -> None:
    db = tmp_path / "elsewhere" / "runs.db"
    p = waap("run", "--image", base_image, "--args", "true", "--store", f"sqlite:///{db}", "-q", "-o", str(results))
    assert p.returncode == 0, p.stderr
    assert "Stored 1 run(s), " in p.stdout and str(db) in p.stdout
    assert not (results / "waap.db").exists()
    with ResultStore(db) as s:
        [row] = s.runs()
    assert row["run_id"] == read_manifest(run_dirs(results)[0])["run_id"] and row["status"] == "complete"


# -- defects found while writing these tests, now fixed: each failed before the fix -----------------------------


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("damage", ["huge_ts_ns", "huge_value", "huge_exit_code", "tools_not_a_list"])
def test_damaged_numbers_never_crash_ingest(demo: RealRun, tmp_path: Path, damage: str) -> None:
    results = copy_results(demo.results, tmp_path / "results")
    bad, good = run_dirs(results)
    if damage == "huge_ts_ns":
        with open(bad / "samples.jsonl", "a", encoding="utf-8") as fh:
            fh.write('{"ts_ns": 18446744073709551616, "source": "custom", "values": {"app.x": 1}}\n')
    elif damage == "huge_value":
        with open(bad / "samples.jsonl", "a", encoding="utf-8") as fh:
            fh.write('{"ts_ns": 1, "source": "custom", "values": {"app.x": 1' + "0" * 400 + "}}\n")
    elif damage == "huge_exit_code":
        edit_manifest(bad, exit_code=10 ** 20)
    else:
        edit_manifest(bad, tools=5)
    p = waap("ingest", str(results), "--store", str(tmp_path / "s.db"))
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 0 and read_manifest(good)["run_id"] in {r["run_id"] for r in
                                                                    rows(tmp_path / "s.db", "SELECT run_id FROM runs")}


def test_waap_ingest_of_a_folder_without_runs_fails(tmp_path: Path) -> None:
    empty = tmp_path / "results"
    empty.mkdir()
    p = waap("ingest", str(empty), "--store", str(tmp_path / "s.db"))
    assert p.returncode == 1, p.stdout


@pytest.mark.docker
@pytest.mark.slow
def test_an_app_output_named_manifest_json_is_not_a_run(base_image: str, results: Path) -> None:
    p = waap("run", "--image", base_image, "--args",
             "python3 -c 'import json, os; json.dump({\"model\": \"yolo\"}, "
             "open(os.environ[\"WAAP_OUTPUT_DIR\"] + \"/manifest.json\", \"w\"))'", "-q", "-o", str(results))
    assert p.returncode == 0, p.stderr
    [run] = run_dirs(results)
    assert json.loads((run / "output" / "manifest.json").read_text()) == {"model": "yolo"}
    assert "Stored 1 run(s)" in p.stdout
    assert "skipped" not in p.stdout, p.stdout


@pytest.mark.docker
@pytest.mark.slow
def test_an_app_cannot_overwrite_its_run_in_the_store(base_image: str, results: Path) -> None:
    code = ("import json, os; json.dump({\"run_id\": os.environ[\"WAAP_RUN_ID\"], \"finished\": True, "
            "\"status\": \"complete\", \"exit_code\": 42}, open(os.environ[\"WAAP_OUTPUT_DIR\"] + \"/manifest.json\", "
            "\"w\"))")
    p = waap("run", "--image", base_image, "--args", f"python3 -c '{code}'", "-q", "-o", str(results))
    assert p.returncode == 0, p.stderr
    [run] = run_dirs(results)
    m = read_manifest(run)
    assert json.loads((run / "output" / "manifest.json").read_text())["run_id"] == m["run_id"]
    [row] = rows(results / "waap.db", "SELECT dir, exit_code, samples FROM runs")
    assert row == {"dir": run.name, "exit_code": 0, "samples": len(file_values(run / "samples.jsonl"))}
