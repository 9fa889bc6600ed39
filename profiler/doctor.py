"""``waap doctor``: what this machine can profile, each finding with a hint to fix it."""

from __future__ import annotations

import glob
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Tuple

from .engine import connect, engine_address
from .errors import DockerUnavailable

__all__ = [
    "TOOL_PLACES",
    "Finding",
    "check_cgroups",
    "check_docker",
    "check_nvml",
    "check_profiling_tool",
    "check_tegrastats",
    "diagnose",
]

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


# tool -> (its program, where installers put it besides PATH: JetPack/NVIDIA's packages, the CUDA toolkit)
TOOL_PLACES: Mapping[str, Tuple[str, Tuple[str, ...]]] = {
    "tau": ("tau_exec", ()),
    "nvprof": ("nvprof", ("/usr/local/cuda/bin/nvprof", "/usr/local/cuda-*/bin/nvprof")),
    "nsys": ("nsys", ("/opt/nvidia/nsight-systems/*/bin/nsys", "/opt/nvidia/nsight-systems-cli/*/bin/nsys",
                      "/usr/local/cuda/bin/nsys")),
}
_TOOL_HINTS = {
    "tau": "TAU is not packaged for PyPI or Debian: build it from source (tau_exec, and tau_python for Python apps)",
    "nvprof": "nvprof comes with JetPack 4's CUDA toolkit (/usr/local/cuda/bin); GPUs of compute capability 8.0 "
              "and later need nsys",
    "nsys": "nsys comes with JetPack 5 (/opt/nvidia/nsight-systems) and NVIDIA's CUDA packages",
}


def check_profiling_tool(
    tool: str,
    which: Which = shutil.which,
    env: Optional[Mapping[str, str]] = None,
    places: Optional[Tuple[str, ...]] = None,
) -> Finding:
    """Whether ``tool`` (tau, nvprof, nsys) can reach the app containers: the app image must hold it, or the toolbox
    folder (``WAAP_TOOLBOX``) mounted into them. A copy on this machine's PATH or in its usual place is reported
    with how to lend it to the apps as a toolbox."""
    from .tools.wrap import TOOLBOX_ENV

    binary, default_places = TOOL_PLACES[tool]
    env = os.environ if env is None else env
    toolbox = env.get(TOOLBOX_ENV)
    if toolbox:
        for folder in (Path(toolbox) / "bin", Path(toolbox)):
            if os.access(folder / binary, os.X_OK) and (folder / binary).is_file():
                return Finding(tool, True, f"{binary} in the toolbox {TOOLBOX_ENV}={toolbox} (lent to every app)")
    found = which(binary) or next(
        (hit for pattern in (default_places if places is None else places) for hit in sorted(glob.glob(pattern))
         if os.access(hit, os.X_OK)), None)
    in_toolbox = f" and not in the toolbox {TOOLBOX_ENV}={toolbox}" if toolbox else ""
    if found:
        home = Path(found).parent.parent if Path(found).parent.name == "bin" else Path(found).parent
        return Finding(tool, True, f"{binary} at {found} on this machine{in_toolbox}: an app can use it only if its "
                                   f"image has it too, or with {TOOLBOX_ENV}={home} (docs/tools.md)")
    return Finding(tool, False, f"{binary} not found here{in_toolbox}",
                   f"{_TOOL_HINTS[tool]}; the app image must hold it, or a toolbox folder ({TOOLBOX_ENV}, "
                   f"docs/tools.md)")


def diagnose(base_url: Optional[str] = None) -> List[Finding]:
    return [check_docker(base_url), check_cgroups(), check_tegrastats(), check_nvml(),
            *(check_profiling_tool(tool) for tool in TOOL_PLACES)]
