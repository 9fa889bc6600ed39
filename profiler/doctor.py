"""``waap doctor``: what this machine can profile, each finding with a hint to fix it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from .engine import connect, engine_address
from .errors import DockerUnavailable

__all__ = ["Finding", "check_cgroups", "check_docker", "check_nvml", "check_tau", "check_tegrastats", "diagnose"]

Which = Callable[[str], Optional[str]]


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool
    detail: str
    hint: str = ""
    required: bool = False  # profiling cannot work at all without it


def check_docker(base_url: Optional[str] = None) -> Finding:
    try:
        client = connect(base_url, timeout=10)
        version = client.version()
    except DockerUnavailable as e:
        return Finding("docker", False, str(e).split(";")[0],
                       "install docker.io (or Docker CE ≥ 19) and start dockerd; the user needs access to the socket",
                       required=True)
    client.close()
    return Finding("docker", True,
                   f"Docker {version.get('Version')} (API {version.get('ApiVersion')}) at {engine_address(base_url)}",
                   required=True)


def check_cgroups(sys_fs: Path = Path("/sys/fs/cgroup")) -> Finding:
    if (sys_fs / "cgroup.controllers").exists():
        return Finding("cgroups", True, "cgroup v2 (unified)")
    if (sys_fs / "memory").is_dir() or (sys_fs / "cpuacct").is_dir():
        hybrid = " with a v2 hierarchy beside it (hybrid)" if (sys_fs / "unified").is_dir() else ""
        return Finding("cgroups", True, f"cgroup v1{hybrid}")
    return Finding("cgroups", False, f"no cgroup hierarchy under {sys_fs}",
                   "mount cgroups (systemd does this by default); container metrics need them")


def check_tegrastats(which: Which = shutil.which, candidates: Tuple[str, ...] = ("/usr/bin/tegrastats",)) -> Finding:
    path = which("tegrastats") or next((c for c in candidates if Path(c).is_file()), None)
    if path:
        return Finding("tegrastats", True, f"found at {path}")
    return Finding("tegrastats", False, "not found: not a Jetson, or tegrastats is not installed",
                   "on a Jetson it ships with JetPack in /usr/bin; Jetson GPU/power metrics need it")


def check_nvml() -> Finding:
    try:
        import pynvml  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return Finding("nvml", False, "nvidia-ml-py is not installed",
                       "pip install 'waap[gpu]' on machines with a discrete NVIDIA GPU (Jetsons use tegrastats)")
    try:
        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
            driver = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError as e:
        return Finding("nvml", False, f"NVML did not start: {e}",
                       "install the NVIDIA driver, or ignore this on machines without an NVIDIA GPU")
    driver_text = driver.decode() if isinstance(driver, bytes) else str(driver)
    return Finding("nvml", True, f"{count} GPU(s), driver {driver_text}")


def check_tau(which: Which = shutil.which) -> Finding:
    path = which("tau_exec")
    if path:
        return Finding("tau", True, f"tau_exec at {path}")
    return Finding("tau", False, "tau_exec not on PATH here",
                   "TAU is not packaged for PyPI or Debian: build it into the app image or mount a toolbox folder")


def diagnose(base_url: Optional[str] = None) -> List[Finding]:
    return [check_docker(base_url), check_cgroups(), check_tegrastats(), check_nvml(), check_tau()]
