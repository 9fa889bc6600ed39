"""pywaggle apps, unchanged: following the data.ndjson pywaggle writes with PYWAGGLE_LOG_DIR (profiler/collectors/
pywaggle.py). Unit tests read lines the real pywaggle wrote (tests/data/pywaggle/README.md); the Docker test runs the
real pywaggle from PyPI in waap-test-pywaggle:latest and follows it live."""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Tuple

import docker
import pytest

from profiler.collectors.base import MetricInfo, Sample
from profiler.collectors.pywaggle import (
    PYWAGGLE_APP_DIR,
    PYWAGGLE_CATALOG,
    PYWAGGLE_DATA_FILE,
    PYWAGGLE_DIR_NAME,
    PywaggleFollower,
    parse_timestamp,
    prepare_pywaggle_dir,
    pywaggle_env,
)

DATA = Path(__file__).resolve().parent / "data" / "pywaggle"
PYWAGGLE_IMAGE = os.environ.get("WAAP_PYWAGGLE_IMAGE", "waap-test-pywaggle:latest")
NON_NUMERIC = {"test.nan", "test.inf", "test.huge_int", "test.text", "upload"}  # in the recorded files
FIXED_TS_NS = 1700000000123456789  # tests/images/pywaggle/app.py publishes test.fixed at this time

# a line as pywaggle 0.56.3 writes it (from tests/data/pywaggle/utc/data.ndjson)
LINE = b'{"meta":{"camera":"left"},"name":"test.fps","timestamp":"2023-11-14T22:13:20.123457789","value":30.5}\n'


@pytest.fixture(scope="session")
def pywaggle_image(docker_client: docker.DockerClient) -> str:
    try:
        docker_client.images.get(PYWAGGLE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {PYWAGGLE_IMAGE} is missing; build it with scripts/build-images.sh pywaggle")
    return PYWAGGLE_IMAGE


class Collected:
    """A sample sink that remembers each sample and the wall-clock time it arrived."""

    def __init__(self) -> None:
        self.samples: List[Sample] = []
        self.arrived_ns: List[int] = []
        self.lock = threading.Lock()

    def __call__(self, sample: Sample) -> None:
        with self.lock:
            self.samples.append(sample)
            self.arrived_ns.append(time.time_ns())

    def values(self) -> List[Tuple[str, float]]:
        return [next(iter(s.values.items())) for s in self.samples]


def follow(path: Path, **kw: Any) -> Tuple[PywaggleFollower, Collected]:
    sink = Collected()
    return PywaggleFollower(path, sink, **kw), sink


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def pywaggle_format(ns: int) -> str:
    """pywaggle's isoformat_time_ns, in UTC whatever this machine's zone."""
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).replace(tzinfo=None).isoformat() + f"{ns % 1000:03d}"


# -- what the runner needs ----------------------------------------------------------------------------------------
def test_env_points_pywaggle_into_the_output_mount_and_sets_utc() -> None:
    from profiler.app import APP_OUTPUT_DIR

    assert f"{APP_OUTPUT_DIR}/{PYWAGGLE_DIR_NAME}" == PYWAGGLE_APP_DIR
    assert pywaggle_env() == {"PYWAGGLE_LOG_DIR": PYWAGGLE_APP_DIR, "TZ": "UTC"}


def test_prepare_creates_a_folder_any_app_user_can_write(tmp_path: Path) -> None:
    path = prepare_pywaggle_dir(tmp_path)
    assert path == tmp_path / PYWAGGLE_DIR_NAME / PYWAGGLE_DATA_FILE
    assert (path.parent.stat().st_mode & 0o777) == 0o777
    assert prepare_pywaggle_dir(tmp_path) == path  # again: no error


def test_catalog() -> None:
    assert PYWAGGLE_CATALOG and all(isinstance(m, MetricInfo) for m in PYWAGGLE_CATALOG)
    assert [(m.name, m.kind) for m in PYWAGGLE_CATALOG] == [("app.<name>", "gauge")]


# -- recorded lines ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("folder", "tz"), [("utc", timezone.utc), ("minus5", timezone(timedelta(hours=-5)))])
def test_recorded_pywaggle_lines(tmp_path: Path, folder: str, tz: timezone) -> None:
    path = tmp_path / "data.ndjson"
    shutil.copyfile(DATA / folder / "data.ndjson", path)
    expected = json.loads((DATA / folder / "expected.json").read_text())["lines"]
    follower, sink = follow(path, tz=tz)
    follower.poll()
    follower.stop()

    numeric = [e for e in expected if e["name"] not in NON_NUMERIC]
    assert follower.counters == {
        "accepted": len(numeric), "non_numeric": len(NON_NUMERIC), "rejected": 0, "oversize": 0, "torn": 0,
        "future": 0, "sink_errors": 0,
    }
    assert len(sink.samples) == len(numeric)
    for sample, want in zip(sink.samples, numeric):
        assert sample.source == "pywaggle"
        ((metric, value),) = sample.values.items()
        assert metric == "app." + want["name"]
        if "ts_ns" in want:
            assert sample.ts_ns == want["ts_ns"], want["name"]  # exact, across roundings and carries
        else:
            assert want["before_ns"] <= sample.ts_ns <= want["after_ns"], want["name"]
        if want["name"] == "test.inference":  # timeit: the duration in nanoseconds
            assert value >= want["min_value"]
        else:
            assert value == float(want["value"]) and type(value) is float  # True -> 1.0, 42 -> 42.0
    labels = {next(iter(s.values)): dict(s.labels) for s in sink.samples}
    assert labels["app.test.fps"] == {"camera": "left", "note": "ünï"}
    assert labels["app.test.int"] == {}


def test_naive_times_are_local_time_of_the_app_container() -> None:
    """The same publish recorded under TZ=UTC and TZ=<-05>5: read with the wrong zone it is five hours off."""
    utc = json.loads((DATA / "utc" / "data.ndjson").read_text().splitlines()[0])
    minus5 = json.loads((DATA / "minus5" / "data.ndjson").read_text().splitlines()[0])
    assert utc["timestamp"] == "2023-11-14T22:13:20.123457789"
    assert minus5["timestamp"] == "2023-11-14T17:13:20.123457789"
    assert parse_timestamp(minus5["timestamp"], timezone(timedelta(hours=-5))) == parse_timestamp(utc["timestamp"])
    assert parse_timestamp(utc["timestamp"]) - parse_timestamp(minus5["timestamp"]) == 5 * 3600 * 10**9


# -- timestamps -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2023-11-14T22:13:20.123457789", 1700000000123456789),  # pywaggle: microseconds rounded up
        ("2023-11-14T22:13:20.123456123", 1700000000123456123),
        ("2023-11-14T22:13:20123", 1700000000000000123),  # pywaggle: zero microseconds, no dot
        ("2023-11-14T22:13:21789", 1700000000999999789),  # ... rounded into the next second
        ("2023-11-14T22:13:20.5", 1700000000500000000),  # other writers: a plain fraction
        ("2023-11-14T22:13:20", 1700000000000000000),
        ("2023-11-14 22:13:20.25", 1700000000250000000),
        ("2023-11-14T22:13:20.123456789Z", 1700000000123456789),  # with a zone: as written
        ("2023-11-15T03:43:20.123456789+05:30", 1700000000123456789),
        ("2023-11-14T17:13:20.1-0500", 1700000000100000000),
        ("2023-11-14T22:13:20123Z", 1700000000000000123),
    ],
)
def test_parse_timestamp(text: str, ns: int) -> None:
    assert parse_timestamp(text) == ns


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "2023-11-14", "2023-11-14T22:13", "2023-13-14T22:13:20", "2023-11-14T25:13:20.1",
     "2023-11-14T22:13:20.1234567890", "2023-11-14T22:13:2012", "2023-11-14T22:13:20+24:00",
     "2023-11-14T22:13:20.5 ", "٢٠٢٣-11-14T22:13:20", "0000-01-01T00:00:00"],
)
def test_parse_timestamp_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_parse_inverts_pywaggle_rounding() -> None:
    """pywaggle prints float-rounded microseconds: read plainly, half of all times are 1 µs off. Inverted, all but the
    times its format cannot tell apart come back exact, and none is more than 1 µs off."""
    rng = random.Random(7)
    stamps = [rng.randrange(1_577_836_800 * 10**9, 2_082_758_400 * 10**9) for _ in range(20000)]
    stamps += [s // 10**6 * 10**6 + rng.randrange(-1500, 1500) for s in stamps[:5000]]  # near µs and s boundaries
    errors = [parse_timestamp(pywaggle_format(ns)) - ns for ns in stamps]
    assert all(abs(e) in (0, 1000) for e in errors)
    assert sum(e == 0 for e in errors) / len(errors) > 0.9


# -- following --------------------------------------------------------------------------------------------------
def test_torn_last_line_is_kept_until_completed(tmp_path: Path) -> None:
    path = tmp_path / "data.ndjson"
    follower, sink = follow(path)
    append(path, LINE + LINE[:40])
    follower.poll()
    assert sink.values() == [("app.test.fps", 30.5)]
    follower.poll()
    assert len(sink.samples) == 1
    append(path, LINE[40:70])
    follower.poll()
    assert len(sink.samples) == 1
    append(path, LINE[70:] + LINE)
    follower.stop()
    assert sink.values() == [("app.test.fps", 30.5)] * 3
    assert sink.samples[1] == sink.samples[0]
    assert follower.counters["accepted"] == 3 and follower.counters["rejected"] == 0


def test_torn_line_at_stop_is_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "data.ndjson"
    append(path, LINE + LINE[:-1])  # the last one complete but for its newline: still torn
    follower, sink = follow(path)
    follower.stop()
    assert len(sink.samples) == 1
    assert follower.counters["torn"] == 1 and follower.counters["rejected"] == 1
    follower.poll()  # after stop: nothing more
    assert len(sink.samples) == 1


def test_file_and_folder_created_late(tmp_path: Path) -> None:
    path = tmp_path / "pywaggle" / "data.ndjson"
    follower, sink = follow(path, poll_s=0.02)
    follower.start()
    time.sleep(0.1)
    path.parent.mkdir()
    time.sleep(0.1)
    append(path, LINE)
    deadline = time.monotonic() + 5
    while not sink.samples and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.values() == [("app.test.fps", 30.5)]
    follower.stop()
    assert follower.error is None


def test_stop_reads_what_was_written_since_the_last_poll(tmp_path: Path) -> None:
    path = tmp_path / "data.ndjson"
    append(path, LINE)
    follower, sink = follow(path, poll_s=60)
    follower.start()
    deadline = time.monotonic() + 5
    while not sink.samples and time.monotonic() < deadline:
        time.sleep(0.01)
    append(path, LINE * 3)
    t0 = time.monotonic()
    follower.stop()
    assert time.monotonic() - t0 < 2  # the thread's wait ends at once
    assert len(sink.samples) == 4
    follower.stop()  # again: nothing happens
    with pytest.raises(RuntimeError):
        follower.start()


def test_garbage_never_crashes_and_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "data.ndjson"
    ok = '{"meta":{},"name":"ok","timestamp":"2023-11-14T22:13:20.123457789","value":%s}\n'
    garbage = [
        b"\x00\xff\xfe binary\n",
        b'{"name":"ok","timestamp":"2023-11-14T22:13:20.1","value":"\xff"}\n',  # not UTF-8
        b"not json\n",
        b"[1, 2]\n",
        b"{}\n",
        b"[" * 50000 + b"\n",  # too deep for json
        b'{"name":"ok","timestamp":"2023-11-14T22:13:20.1","value":' + b"9" * 5000 + b"}\n",  # too many digits
        b'{"name":"Bad Name","timestamp":"2023-11-14T22:13:20.1","value":1}\n',
        b'{"name":"a..b","timestamp":"2023-11-14T22:13:20.1","value":1}\n',
        b'{"name":"' + b"a" * 129 + b'","timestamp":"2023-11-14T22:13:20.1","value":1}\n',
        b'{"name":7,"timestamp":"2023-11-14T22:13:20.1","value":1}\n',
        b'{"name":"ok","timestamp":"soon","value":1}\n',
        b'{"name":"ok","timestamp":1700000000,"value":1}\n',
        b'{"name":"ok","value":1}\n',
        b'{"name":"ok","timestamp":"2023-11-14T22:13:20.1","value":null}\n',
        b'{"name":"ok","timestamp":"2023-11-14T22:13:20.1","value":[1]}\n',
        b'{"name":"ok","timestamp":"2023-11-14T22:13:20.1","value":{"a":1}}\n',
        b'{"name":"ok","timestamp":"9999-12-31T23:59:59.9999999999","value":1}\n',
    ]
    data = b"".join(garbage) + b"\n   \n" + (ok % "1.5").encode()  # blank lines are skipped, not counted
    data += b'{"meta":[1],"name":"ok","timestamp":"2023-11-14T22:13:20.1","value":2}\n'  # bad meta: no labels
    data += b'{"meta":{"a":"x","b":1,"c":null},"name":"ok","timestamp":"2023-11-14T22:13:20.1","value":1e400}\n'
    data += b'{"meta":{"a":"x","b":1,"c":null},"name":"ok","timestamp":"2023-11-14T22:13:20.1","value":-0.0}\n'
    append(path, data)
    follower, sink = follow(path)
    follower.stop()
    assert sink.values() == [("app.ok", 1.5), ("app.ok", 2.0), ("app.ok", -0.0)]
    assert [dict(s.labels) for s in sink.samples] == [{}, {}, {"a": "x"}]
    assert follower.counters == {
        "accepted": 3, "non_numeric": 1, "rejected": len(garbage), "oversize": 0, "torn": 0, "future": 0,
        "sink_errors": 0,
    }
    assert follower.error is None


def test_line_length_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "data.ndjson"
    long_line = b'{"name":"ok","timestamp":"2023-11-14T22:13:20.1","value":1,"meta":{"x":"' + b"y" * 500 + b'"}}\n'
    follower, sink = follow(path, max_line_bytes=200)
    append(path, long_line + LINE)  # complete in one read
    follower.poll()
    append(path, long_line[:150])  # a torn line under the cap...
    follower.poll()
    append(path, long_line[150:300])  # ...grows over it: dropped at once, the rest skipped up to its newline
    follower.poll()
    append(path, long_line[300:] + LINE)
    follower.stop()
    assert sink.values() == [("app.test.fps", 30.5)] * 2
    assert follower.counters["oversize"] == 2 and follower.counters["rejected"] == 2
    assert follower.counters["torn"] == 0


def test_labels_and_distinct_names_are_capped(tmp_path: Path) -> None:
    path = tmp_path / "data.ndjson"
    meta = {f"k{i:02d}": "v" * 300 for i in range(40)}
    meta["k" * 65] = "long key"
    lines = [{"meta": meta, "name": f"m{i}", "timestamp": "2023-11-14T22:13:20.1", "value": i} for i in range(4)]
    lines.append({"meta": {}, "name": "m0", "timestamp": "2023-11-14T22:13:20.1", "value": 9})
    append(path, "".join(json.dumps(r) + "\n" for r in lines).encode())
    follower, sink = follow(path, max_names=2, max_labels=5)
    follower.stop()
    assert sink.values() == [("app.m0", 0.0), ("app.m1", 1.0), ("app.m0", 9.0)]
    assert dict(sink.samples[0].labels) == {f"k{i:02d}": "v" * 256 for i in range(5)}
    assert follower.counters["rejected"] == 2


def test_future_timestamps_are_counted(tmp_path: Path) -> None:
    """A zone east of UTC makes naive local times look ahead of the runner's clock."""
    path = tmp_path / "data.ndjson"
    append(path, LINE)
    follower, sink = follow(path, clock_ns=lambda: 1700000000123456789 - 3600 * 10**9)
    follower.stop()
    assert len(sink.samples) == 1 and follower.counters["future"] == 1
    follower, sink = follow(path, clock_ns=lambda: 1700000000123456789 + 10**9)
    follower.stop()
    assert follower.counters["future"] == 0


def test_a_failing_sink_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "data.ndjson"
    append(path, LINE * 2)
    calls: List[Sample] = []

    def sink(sample: Sample) -> None:
        calls.append(sample)
        raise OSError("disk full")

    follower = PywaggleFollower(path, sink)
    follower.stop()
    assert len(calls) == 2
    assert follower.counters["sink_errors"] == 2 and follower.counters["accepted"] == 0
    assert follower.error is not None and "disk full" in follower.error


def test_truncated_or_replaced_file_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "data.ndjson"
    append(path, LINE * 2)
    follower, sink = follow(path)
    follower.poll()
    path.write_bytes(LINE)  # truncated and rewritten: shorter than what was read
    follower.poll()
    assert len(sink.samples) == 3
    append(path, LINE)
    follower.poll()
    assert len(sink.samples) == 4
    (tmp_path / "new").write_bytes(LINE * 5)
    os.replace(tmp_path / "new", path)  # replaced by another file
    follower.poll()
    follower.stop()
    assert len(sink.samples) == 9
    assert follower.counters["rejected"] == 0


def test_links_and_special_files_are_not_read(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.ndjson"
    elsewhere.write_bytes(LINE)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "data.ndjson").symlink_to(elsewhere)
    follower, sink = follow(tmp_path / "a" / "data.ndjson")
    follower.stop()
    (tmp_path / "b").mkdir()
    os.mkfifo(tmp_path / "b" / "data.ndjson")  # would block a plain open
    follower2, sink2 = follow(tmp_path / "b" / "data.ndjson")
    follower2.stop()
    (tmp_path / "c").symlink_to(tmp_path / "a", target_is_directory=True)  # a linked folder
    follower3, sink3 = follow(tmp_path / "c" / "data.ndjson")
    follower3.stop()
    assert sink.samples == sink2.samples == sink3.samples == []
    assert follower.error is None and follower2.error is None


def test_poll_s_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        PywaggleFollower(tmp_path / "x", lambda s: None, poll_s=0)


# -- the real pywaggle, live ------------------------------------------------------------------------------------
@pytest.mark.docker
def test_unchanged_pywaggle_app_is_followed_live(
    docker_client: docker.DockerClient, pywaggle_image: str, tmp_path: Path
) -> None:
    output = tmp_path / "output"
    output.mkdir()
    output.chmod(0o777)
    path = prepare_pywaggle_dir(output)
    follower, sink = follow(path, poll_s=0.05)
    follower.start()
    count = 15
    container = docker_client.containers.run(
        pywaggle_image,
        ["--count", str(count), "--interval", "0.05"],
        name=f"waap-test-pywaggle-{uuid.uuid4().hex[:12]}",
        environment=pywaggle_env(),
        volumes={str(output): {"bind": "/app/profiling_output", "mode": "rw"}},
        user=f"{os.getuid()}:{os.getgid()}",
        network_mode="none",
        detach=True,
    )
    try:
        status = container.wait(timeout=120)
        exited_ns = time.time_ns()
        logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
        follower.stop()
    assert status["StatusCode"] == 0, logs
    published: List[Dict[str, Any]] = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert published[-1] == {"done": True}, logs
    published = published[:-1]
    numeric = [p for p in published if p["name"] != "upload"]
    assert len(numeric) == 1 + 3 * count

    assert follower.error is None
    assert follower.counters == {
        "accepted": len(numeric), "non_numeric": 1, "rejected": 0, "oversize": 0, "torn": 0, "future": 0,
        "sink_errors": 0,
    }
    assert len(sink.samples) == len(numeric)
    for want, sample, arrived in zip(numeric, sink.samples, sink.arrived_ns):
        ((metric, value),) = sample.values.items()
        assert (sample.source, metric) == ("pywaggle", "app." + want["name"])
        if want["name"] == "test.fixed":  # an explicit timestamp, exact
            assert sample.ts_ns == FIXED_TS_NS and value == 1.5
            assert dict(sample.labels) == {"kind": "fixed"}
            continue
        # the app's clock is this machine's: the time pywaggle took lies within the app's window around the call
        # (at most 1 µs off, the resolution of pywaggle's format), and the follower had it within a second or so
        assert want["before_ns"] - 1000 <= sample.ts_ns <= want["after_ns"] + 1000, want
        assert 0 <= arrived - sample.ts_ns < 2 * 10**9
        if want["name"] == "test.inference":
            assert 10**7 <= value < 10**9  # timeit: a 10 ms sleep, in nanoseconds
        else:
            assert value == float(want["value"])
        assert dict(sample.labels) == ({"camera": "left"} if want["name"] == "test.fps" else {})
    during_run = sum(arrived < exited_ns for arrived in sink.arrived_ns)
    assert during_run >= len(numeric) // 2, "the follower should read while the app runs, not only at stop"
    # the upload lands in the output mount too
    uploads = list((path.parent / "uploads").iterdir())
    assert len(uploads) == 1 and uploads[0].read_text() == "hello from pywaggle\n"
