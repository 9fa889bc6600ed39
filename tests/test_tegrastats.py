"""The tegrastats parser on recorded lines (tests/data/tegrastats, with expected.json), and the collector end to end
with a stand-in ``tegrastats`` that prints those recorded lines."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from profiler.collectors.base import RunContext, Sample, Unavailable
from profiler.collectors.tegrastats import CATALOG, TegrastatsCollector
from profiler.tegrastats import MIB, parse_fields, parse_line

DATA = Path(__file__).parent / "data" / "tegrastats"
EXPECTED: Dict[str, Any] = json.loads((DATA / "expected.json").read_text())
FILES = sorted(name for name in EXPECTED if not name.startswith("_"))


def _line(name: str) -> str:
    return (DATA / name).read_text().strip()


def _metrics(expected: Dict[str, Any]) -> Dict[str, float]:
    """expected.json's record of a line, in the parser's metric names and units."""
    v: Dict[str, float] = {}
    ram, swap = expected["ram"], expected["swap"]
    v["jetson.ram.used_bytes"] = ram["used_mb"] * MIB
    v["jetson.ram.total_bytes"] = ram["total_mb"] * MIB
    v["jetson.ram.lfb_blocks"] = ram["lfb_blocks"]
    v["jetson.ram.lfb_block_bytes"] = ram["lfb_block_mb"] * MIB
    v["jetson.swap.used_bytes"] = swap["used_mb"] * MIB
    v["jetson.swap.total_bytes"] = swap["total_mb"] * MIB
    v["jetson.swap.cached_bytes"] = swap["cached_mb"] * MIB
    if "iram" in expected:
        v["jetson.iram.used_bytes"] = expected["iram"]["used_kb"] * 1024
        v["jetson.iram.total_bytes"] = expected["iram"]["total_kb"] * 1024
        v["jetson.iram.lfb_bytes"] = expected["iram"]["lfb_kb"] * 1024
    for n, core in enumerate(expected["cpu"]):
        v[f"jetson.cpu.core.{n}.online"] = 1
        v[f"jetson.cpu.core.{n}.percent"] = core["util"]
        v[f"jetson.cpu.core.{n}.mhz"] = core["mhz"]
    v["jetson.emc.percent"] = expected["emc"]["util"]
    v["jetson.emc.mhz"] = expected["emc"]["mhz"]
    v["jetson.gpu.percent"] = expected["gpu"]["util"]
    gpc = expected["gpu"]["mhz"]
    v["jetson.gpu.mhz"] = gpc[0]
    if len(gpc) > 1:
        v.update({f"jetson.gpu.gpc.{i}.mhz": mhz for i, mhz in enumerate(gpc)})
    engines = dict(expected.get("engines_mhz", {}), APE=expected["ape_mhz"])
    for engine, mhz in engines.items():
        v[f"jetson.engine.{engine.lower()}.on"] = 1
        v[f"jetson.engine.{engine.lower()}.mhz"] = mhz
    if "mts" in expected:
        v["jetson.mts.foreground_percent"] = expected["mts"]["fg"]
        v["jetson.mts.background_percent"] = expected["mts"]["bg"]
    for sensor, celsius in expected["temperature_c"].items():
        v[f"jetson.temperature.{sensor.lower()}.celsius"] = celsius
    for rail, (now, average) in expected["power_mw"].items():
        v[f"jetson.power.{rail.lower()}.milliwatts"] = now
        v[f"jetson.power.{rail.lower()}.average_milliwatts"] = average
    return {k: float(x) for k, x in v.items()}


# -- parser ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_recorded_line_matches_expected(name: str) -> None:
    values, unknown = parse_fields(_line(name))
    assert values == _metrics(EXPECTED[name])
    assert unknown == []  # the JetPack 5 date prefix included


def test_every_metric_is_in_the_catalog() -> None:
    def pattern(name: str) -> re.Pattern[str]:
        parts = re.split(r"(<[a-z]+>)", name)
        return re.compile("".join("[a-z0-9_]+" if p.startswith("<") else re.escape(p) for p in parts))

    patterns = [pattern(m.name) for m in CATALOG]
    for name in FILES:
        for metric in parse_line(_line(name)):
            assert any(p.fullmatch(metric) for p in patterns), metric


def test_fields_are_found_wherever_they_stand() -> None:
    fields = _line("xavier-nx-jetpack5.txt").split(" ")
    shuffled = " ".join([*fields[2:], *fields[:2]])  # the date (two tokens) moved to the end
    assert parse_line(shuffled) == parse_line(_line("xavier-nx-jetpack5.txt"))
    assert parse_line("GPU@40C RAM 10/20MB") == {
        "jetson.temperature.gpu.celsius": 40.0,
        "jetson.ram.used_bytes": 10.0 * MIB,
        "jetson.ram.total_bytes": 20.0 * MIB,
    }


def test_engines_and_cores_that_print_off() -> None:
    line = "CPU [12%@1190,off,off,3%] NVDEC off NVENC 1075 NVDLA0_FREQ off GR3D_FREQ 5%@[305,0]"
    values, unknown = parse_fields(line)
    assert unknown == []
    assert values == {
        "jetson.cpu.core.0.online": 1.0,
        "jetson.cpu.core.0.percent": 12.0,
        "jetson.cpu.core.0.mhz": 1190.0,
        "jetson.cpu.core.1.online": 0.0,
        "jetson.cpu.core.2.online": 0.0,
        "jetson.cpu.core.3.online": 1.0,
        "jetson.cpu.core.3.percent": 3.0,
        "jetson.engine.nvdec.on": 0.0,
        "jetson.engine.nvenc.on": 1.0,
        "jetson.engine.nvenc.mhz": 1075.0,
        "jetson.engine.nvdla0.on": 0.0,
        "jetson.gpu.percent": 5.0,
        "jetson.gpu.mhz": 305.0,
        "jetson.gpu.gpc.0.mhz": 305.0,
        "jetson.gpu.gpc.1.mhz": 0.0,
    }


def test_power_rails_with_two_or_three_values_with_or_without_mw() -> None:
    values, unknown = parse_fields("VDD_IN 6140/5510 VDD_SOC 650mW/711mW GPU 311/311/400 CV 1mW/2mW/3mW")
    assert unknown == []
    assert values == {
        "jetson.power.vdd_in.milliwatts": 6140.0,
        "jetson.power.vdd_in.average_milliwatts": 5510.0,
        "jetson.power.vdd_soc.milliwatts": 650.0,
        "jetson.power.vdd_soc.average_milliwatts": 711.0,
        "jetson.power.gpu.milliwatts": 311.0,
        "jetson.power.gpu.average_milliwatts": 311.0,
        "jetson.power.cv.milliwatts": 1.0,
        "jetson.power.cv.average_milliwatts": 2.0,
    }


def test_negative_temperatures_are_kept_and_the_no_reading_marker_dropped() -> None:
    values, unknown = parse_fields("AO@-12.5C PMIC@-40C CV0@-256C Tboard@0C")
    assert unknown == []
    assert values == {
        "jetson.temperature.ao.celsius": -12.5,
        "jetson.temperature.pmic.celsius": -40.0,
        "jetson.temperature.tboard.celsius": 0.0,
    }


@pytest.mark.parametrize("line", ["", "   ", "\n"])
def test_empty_line(line: str) -> None:
    assert parse_fields(line) == ({}, [])


@pytest.mark.parametrize("name", FILES)
def test_lines_cut_anywhere_never_crash_nor_misread(name: str) -> None:
    line = _line(name)
    whole = parse_line(line)
    for cut in range(len(line) + 1):
        text = line[:cut]
        values, _ = parse_fields(text)
        changed = [m for m in values if m in whole and values[m] != whole[m]]
        # the one misreading a cut can cause without a trace: the number that ends the text (VDD_SOC 1074/10);
        # the collector leaves out a last line without its newline for that reason
        assert not changed or (len(changed) == 1 and text[-1].isdigit()), (text, changed)


def test_cut_fields_are_unknown_not_misread() -> None:
    values, unknown = parse_fields("RAM 1923/39")
    assert values == {}
    assert unknown == ["RAM", "1923/39"]
    values, unknown = parse_fields("GPU@45.5C VDD_IN 2763mW/28")
    assert values == {"jetson.temperature.gpu.celsius": 45.5}
    assert unknown == ["VDD_IN", "2763mW/28"]
    assert parse_fields("CPU [23%@1397,17%@11")[0] == {}
    assert parse_fields("EMC_FREQ 2%@204 GR3D_FREQ 0%@[11")[0] == {"jetson.emc.percent": 2.0, "jetson.emc.mhz": 204.0}
    assert parse_fields("AUX@45C CPU@46.")[0] == {"jetson.temperature.aux.celsius": 45.0}


def test_unknown_boards_and_fields_cost_only_themselves() -> None:
    line = "RAM 10/20MB FOO_BAR 1/2/3/4 weird%token NEWTHING@ CPU [x,5%@100] GR3D_FREQ 7%"
    values, unknown = parse_fields(line)
    assert values == {
        "jetson.ram.used_bytes": 10.0 * MIB,
        "jetson.ram.total_bytes": 20.0 * MIB,
        "jetson.cpu.core.1.online": 1.0,
        "jetson.cpu.core.1.percent": 5.0,
        "jetson.cpu.core.1.mhz": 100.0,
        "jetson.gpu.percent": 7.0,
    }
    assert unknown == ["FOO_BAR", "1/2/3/4", "weird%token", "NEWTHING@", "CPU[0]=x"]
    # an unknown board's rails and sensors follow the same patterns under their own names
    assert parse_line("VDDQ_VDD2_1V8AO 120mW/119mW Tdiode@38.25C") == {
        "jetson.power.vddq_vdd2_1v8ao.milliwatts": 120.0,
        "jetson.power.vddq_vdd2_1v8ao.average_milliwatts": 119.0,
        "jetson.temperature.tdiode.celsius": 38.25,
    }


# -- collector -------------------------------------------------------------------------------------------------


def _stand_in(tmp_path: Path, lines: List[str], *, exit_code: int = 0, forever: bool = False) -> Path:
    """A ``tegrastats`` that prints the recorded lines every --interval ms, then exits (or keeps printing)."""
    data = tmp_path / "lines.json"
    data.write_text(json.dumps(lines))
    runs = tmp_path / "runs"
    script = tmp_path / "tegrastats"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys, time\n"
        f"open({str(runs)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "assert sys.argv[1] == '--interval'\n"
        "interval = int(sys.argv[2]) / 1000\n"
        f"lines = json.load(open({str(data)!r}))\n"
        "while True:\n"
        "    for line in lines:\n"
        "        print(line, flush=True)\n"
        "        time.sleep(interval)\n"
        f"    if not {forever!r}:\n"
        f"        sys.exit({exit_code})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def _ctx(tmp_path: Path) -> RunContext:
    return RunContext("run", "cid", 0, tmp_path, tmp_path / "out", interval_s=0.01)


class _Sink:
    def __init__(self) -> None:
        self.samples: List[Sample] = []
        self.lock = threading.Lock()

    def __call__(self, sample: Sample) -> None:
        with self.lock:
            self.samples.append(sample)


def _wait(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_missing_binary_is_unavailable(tmp_path: Path) -> None:
    collector = TegrastatsCollector(binary=str(tmp_path / "nope"))
    with pytest.raises(Unavailable, match=r"tegrastats not found at .*nope: not a Jetson, or mount the host's"):
        collector.start(_ctx(tmp_path), _Sink())


def test_binary_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAAP_TEGRASTATS", "/opt/tegrastats")
    assert TegrastatsCollector().binary == "/opt/tegrastats"
    monkeypatch.delenv("WAAP_TEGRASTATS")
    assert TegrastatsCollector().binary == "/usr/bin/tegrastats"


def test_recorded_lines_become_samples_and_an_exit_is_restarted_once(tmp_path: Path) -> None:
    lines = [_line(name) for name in FILES]
    lines.insert(1, "")  # an empty line is skipped
    lines.append("RAM 1/2MB SOMETHING_NEW ???")  # two unknown fields
    binary = _stand_in(tmp_path, lines, exit_code=3)
    sink = _Sink()
    collector = TegrastatsCollector(binary=str(binary), interval_ms=5, clock_ns=lambda: 42)
    collector.start(_ctx(tmp_path), sink)
    _wait(lambda: collector.status.status == "failed")
    collector.stop()

    assert (tmp_path / "runs").read_text() == "--interval 5\n--interval 5\n"  # the first run and one restart
    assert collector.status.counters == {
        "lines": 8,
        "unparsed_fields": 4,
        "unparsed_lines": 0,
        "cut_lines": 0,
        "exits": 2,
        "restarts": 1,
    }
    assert "exited with status 3; restarted" in collector.status.reason
    assert "not restarted again" in collector.status.reason
    assert len(sink.samples) == 8
    first = sink.samples[0]
    assert (first.ts_ns, first.source) == (42, "tegrastats")
    assert dict(first.values) == _metrics(EXPECTED[FILES[0]])
    assert [dict(s.values) for s in sink.samples[:3]] == [_metrics(EXPECTED[n]) for n in FILES]
    assert collector.sample(0) is None


def test_interval_defaults_to_the_run_and_stop_ends_a_running_tegrastats(tmp_path: Path) -> None:
    binary = _stand_in(tmp_path, [_line(FILES[0])], forever=True)
    sink = _Sink()
    collector = TegrastatsCollector(binary=str(binary))
    collector.start(_ctx(tmp_path), sink)  # interval_s=0.01
    _wait(lambda: len(sink.samples) >= 3)
    proc = collector._proc
    assert proc is not None
    collector.stop()
    assert proc.returncode is not None
    assert (tmp_path / "runs").read_text() == "--interval 10\n"
    assert collector.status.status == "ok"
    assert collector.status.counters["exits"] == 0 and collector.status.counters["restarts"] == 0


def test_stop_kills_a_tegrastats_that_ignores_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "tegrastats"
    script.write_text(
        f"#!{sys.executable}\n"
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('RAM 1/2MB', flush=True)\n"
        "time.sleep(60)\n"
    )
    script.chmod(0o755)
    sink = _Sink()
    collector = TegrastatsCollector(binary=str(script), interval_ms=10, stop_timeout_s=0.5)
    collector.start(_ctx(tmp_path), sink)
    _wait(lambda: len(sink.samples) == 1)
    proc = collector._proc
    assert proc is not None
    collector.stop()
    assert proc.returncode == -9
    assert collector.status.status == "ok"


def test_an_error_message_and_a_cut_last_line_are_counted(tmp_path: Path) -> None:
    script = tmp_path / "tegrastats"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"print({_line(FILES[0])!r})\n"
        "print('Error: permission denied', file=sys.stderr, flush=True)\n"
        "sys.stdout.write('RAM 1923/39')\n"
        "sys.exit(1)\n"
    )
    script.chmod(0o755)
    sink = _Sink()
    collector = TegrastatsCollector(binary=str(script), interval_ms=10, max_restarts=0)
    collector.start(_ctx(tmp_path), sink)
    _wait(lambda: collector.status.status == "failed")
    collector.stop()
    assert len(sink.samples) == 1
    counters = collector.status.counters
    assert (counters["lines"], counters["unparsed_lines"], counters["cut_lines"]) == (2, 1, 1)
    assert counters["unparsed_fields"] == 3  # "Error:", "permission", "denied"
    assert "status 1 (Error: permission denied)" in collector.status.reason


@pytest.mark.skipif(not os.path.exists("/usr/bin/tegrastats"), reason="not a Jetson: no /usr/bin/tegrastats")
def test_real_tegrastats(tmp_path: Path) -> None:
    sink = _Sink()
    collector = TegrastatsCollector(binary="/usr/bin/tegrastats", interval_ms=100)
    collector.start(_ctx(tmp_path), sink)
    try:
        _wait(lambda: len(sink.samples) >= 2)
    finally:
        collector.stop()
    assert any(k.startswith("jetson.ram.") for k in sink.samples[0].values)
