"""Parsing of NVIDIA ``tegrastats`` lines into dotted metric names that carry their unit (``jetson.gpu.percent``).

The format changed between JetPack releases (a date prefix and ``mW`` on power rails from JetPack 5, bracketed GPU
frequencies, engines that print ``off``) and power rails are named per board, so fields are recognised by their
own pattern wherever they stand in the line, never by position. A field no pattern recognises (a new board, a
line cut mid-field) is returned as unknown and costs only itself.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Dict, List, Tuple

__all__ = ["KIB", "MIB", "UNAVAILABLE_CELSIUS", "parse_fields", "parse_line"]

MIB = 1024 * 1024  # tegrastats prints MB meaning MiB (it divides kernel kB by 1024)
KIB = 1024

# tegrastats prints -256C for a thermal zone that has no reading (switched-off sensors on Orin boards): that is a
# marker for "no value", not a temperature, so it is left out; real readings below 0 C are kept.
UNAVAILABLE_CELSIUS = -256.0

# Keywords of fields that have their own pattern. Rails and engines are "NAME number" with board-specific names,
# so these words are kept out of them: a field cut to "RAM 1923/39" must not read as a power rail named RAM.
_KEYWORDS = r"(?!(?:RAM|SWAP|IRAM|CPU|MTS|EMC|GR3D|EMC_FREQ|GR3D_FREQ)\s)"
_END = r"(?=\s|$)"

# Each alternative is wrapped in a group named after its kind: that group closes last, so ``Match.lastgroup`` names
# the kind without probing every group.
_ALTERNATIVES = (
    ("date", r"\d\d-\d\d-\d{4} \d\d:\d\d:\d\d"),
    ("ram", r"RAM (?P<ram_used>\d+)/(?P<ram_total>\d+)MB(?: ?\(lfb (?P<lfb_n>\d+)x(?P<lfb_mb>\d+)MB\))?"),
    ("swap", r"SWAP (?P<swap_used>\d+)/(?P<swap_total>\d+)MB(?: ?\(cached (?P<swap_cached>\d+)MB\))?"),
    ("iram", r"IRAM (?P<iram_used>\d+)/(?P<iram_total>\d+)kB ?\(lfb (?P<iram_lfb>\d+)kB\)"),
    ("cpu", r"CPU \[(?P<cores>[^\]\s]*)\]"),
    ("mts", r"MTS fg (?P<mts_fg>\d+)% bg (?P<mts_bg>\d+)%"),
    # EMC_FREQ 2%@1600, GR3D_FREQ 0%@[114] or 0%@[305,305] (one per GPC), VIC_FREQ 115, NVDLA0_FREQ off
    (
        "freq",
        r"(?P<freq_name>[A-Z][A-Z0-9]*)_FREQ (?:(?P<freq_off>off)|(?:(?P<freq_pct>\d+)%)?"
        r"(?:@?(?:\[(?P<freq_list>\d+(?:,\d+)*)\]|(?P<freq_mhz>\d+)))?)",
    ),
    # VDD_IN 6140/5510 (JetPack 4) or 2763mW/2846mW (JetPack 5); some releases print a third value, not read
    (
        "rail",
        _KEYWORDS + r"(?P<rail_name>[A-Z][A-Z0-9_]*) (?P<rail_now>\d+)(?P<mw>mW)?/(?P<rail_avg>\d+)(?(mw)mW)"
        r"(?:/\d+(?(mw)mW))?",
    ),
    # APE 150, NVENC 1075, NVDEC off
    ("engine", _KEYWORDS + r"(?P<engine_name>[A-Z][A-Z0-9_]*) (?:(?P<engine_mhz>\d+)|(?P<engine_off>off))"),
    ("sensor", r"(?P<sensor_name>[A-Za-z][A-Za-z0-9_.-]*)@(?P<celsius>-?\d+(?:\.\d+)?)C"),
)
_FIELD = re.compile("|".join(f"(?P<{kind}>{pattern}{_END})" for kind, pattern in _ALTERNATIVES) + r"|(?P<unknown>\S+)")
_CORE = re.compile(r"(?:(?P<pct>\d+)%(?:@(?P<mhz>\d+))?|(?P<off>off))\Z")
_NAME = re.compile(r"[^a-z0-9]+")


@lru_cache(maxsize=1024)
def _name(text: str) -> str:
    return _NAME.sub("_", text.lower()).strip("_")


# Metric names built once per sensor, rail, engine or core: a line repeats the same ones every tick.
@lru_cache(maxsize=1024)
def _temperature_key(sensor: str) -> str:
    return f"jetson.temperature.{_name(sensor)}.celsius"


@lru_cache(maxsize=1024)
def _rail_keys(rail: str) -> Tuple[str, str]:
    name = _name(rail)
    return f"jetson.power.{name}.milliwatts", f"jetson.power.{name}.average_milliwatts"


@lru_cache(maxsize=1024)
def _engine_keys(engine: str) -> Tuple[str, str]:
    name = _name(engine)
    return f"jetson.engine.{name}.on", f"jetson.engine.{name}.mhz"


@lru_cache(maxsize=1024)
def _core_keys(n: int) -> Tuple[str, str, str]:
    return f"jetson.cpu.core.{n}.online", f"jetson.cpu.core.{n}.percent", f"jetson.cpu.core.{n}.mhz"


def parse_fields(line: str) -> Tuple[Dict[str, float], List[str]]:
    """The metrics of one tegrastats line, and the fields (whitespace-separated text) no pattern recognised."""
    values: Dict[str, float] = {}
    unknown: List[str] = []
    for m in _FIELD.finditer(line):
        kind = m.lastgroup
        if kind == "sensor":
            celsius = float(m["celsius"])
            if celsius > UNAVAILABLE_CELSIUS:
                values[_temperature_key(m["sensor_name"])] = celsius
        elif kind == "rail":
            now, average = _rail_keys(m["rail_name"])
            values[now] = float(m["rail_now"])
            values[average] = float(m["rail_avg"])
        elif kind == "cpu":
            _cores(m["cores"], values, unknown)
        elif kind == "freq":
            _frequency(m, values, unknown)
        elif kind == "engine":
            on, mhz = _engine_keys(m["engine_name"])
            if m["engine_off"] is not None:
                values[on] = 0.0
            else:
                values[on] = 1.0
                values[mhz] = float(m["engine_mhz"])
        elif kind == "ram":
            values["jetson.ram.used_bytes"] = float(m["ram_used"]) * MIB
            values["jetson.ram.total_bytes"] = float(m["ram_total"]) * MIB
            if m["lfb_n"] is not None:
                values["jetson.ram.lfb_blocks"] = float(m["lfb_n"])
                values["jetson.ram.lfb_block_bytes"] = float(m["lfb_mb"]) * MIB
        elif kind == "swap":
            values["jetson.swap.used_bytes"] = float(m["swap_used"]) * MIB
            values["jetson.swap.total_bytes"] = float(m["swap_total"]) * MIB
            if m["swap_cached"] is not None:
                values["jetson.swap.cached_bytes"] = float(m["swap_cached"]) * MIB
        elif kind == "iram":
            values["jetson.iram.used_bytes"] = float(m["iram_used"]) * KIB
            values["jetson.iram.total_bytes"] = float(m["iram_total"]) * KIB
            values["jetson.iram.lfb_bytes"] = float(m["iram_lfb"]) * KIB
        elif kind == "mts":
            values["jetson.mts.foreground_percent"] = float(m["mts_fg"])
            values["jetson.mts.background_percent"] = float(m["mts_bg"])
        elif kind == "unknown":
            unknown.append(m.group())
        # "date" (JetPack 5's prefix) is recognised and skipped: samples carry the collector's own clock
    return values, unknown


def _cores(text: str, values: Dict[str, float], unknown: List[str]) -> None:
    for n, item in enumerate(text.split(",")):
        core = _CORE.match(item)
        if core is None:
            unknown.append(f"CPU[{n}]={item}")
            continue
        online, percent, mhz = _core_keys(n)
        if core["off"] is not None:
            values[online] = 0.0
        else:
            values[online] = 1.0
            values[percent] = float(core["pct"])
            if core["mhz"] is not None:
                values[mhz] = float(core["mhz"])


def _frequency(m: re.Match[str], values: Dict[str, float], unknown: List[str]) -> None:
    g = m.group
    name = g("freq_name")
    prefix = {"EMC": "jetson.emc", "GR3D": "jetson.gpu"}.get(name) or f"jetson.engine.{_name(name)}"
    mhz_list = [int(x) for x in g("freq_list").split(",")] if g("freq_list") is not None else []
    if g("freq_mhz") is not None:
        mhz_list = [int(g("freq_mhz"))]
    pct = g("freq_pct")
    if g("freq_off") is not None:
        if prefix.startswith("jetson.engine."):
            values[f"{prefix}.on"] = 0.0
        else:
            unknown.append(m.group())
        return
    if (pct is None and not mhz_list) or (pct is None and not prefix.startswith("jetson.engine.")):
        unknown.append(m.group())  # EMC and GR3D always print a load: without one the field was cut
        return
    if prefix.startswith("jetson.engine."):
        values[f"{prefix}.on"] = 1.0
    if pct is not None:
        values[f"{prefix}.percent"] = float(pct)
    if mhz_list:
        values[f"{prefix}.mhz"] = float(mhz_list[0])
        if len(mhz_list) > 1:  # Orin prints one frequency per GPC
            for i, mhz in enumerate(mhz_list):
                values[f"{prefix}.gpc.{i}.mhz"] = float(mhz)


def parse_line(line: str) -> Dict[str, float]:
    """The metrics of one tegrastats line (unknown fields are skipped; ``parse_fields`` names them)."""
    return parse_fields(line)[0]
