"""The NVML collector, ``gpu-summary`` and ``waap doctor`` against NVIDIA's real NVML library and the real
nvidia-ml-py, on a machine without the NVIDIA kernel driver: what a user sees on a host with the library but no
driver (a container image with the CUDA user space, a machine whose driver failed to load).

The library is libnvidia-ml.so.1 of Debian bookworm's ``libnvidia-ml1`` (535 series), which
``scripts/build-images.sh nvidia`` unpacks into ``$WAAP_CACHE/nvml`` (``~/.cache/waap/nvml``) without installing it.
Each check runs in a child process whose ``LD_LIBRARY_PATH`` points there: pynvml loads the library by its soname.
The tests on a real GPU are in the device notes of docs/benchmarks.md; the fake in tests/test_nvml.py covers the
readings.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict

import pytest

pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed (pip install -e '.[test]')")

CACHE = Path(os.environ.get("WAAP_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "waap")
NVML_DIR = CACHE / "nvml"
WAAP = [sys.executable, "-m", "profiler.cli"]


def _has_driver() -> bool:
    return Path("/proc/driver/nvidia/version").exists()


@pytest.fixture(scope="module")
def nvml_env() -> Dict[str, str]:
    if not (NVML_DIR / "libnvidia-ml.so.1").exists():
        pytest.skip(f"NVIDIA's NVML library is not unpacked in {NVML_DIR}: run scripts/build-images.sh nvidia")
    if _has_driver():
        pytest.skip("this machine has the NVIDIA kernel driver: these tests are about a machine without one")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(NVML_DIR), env.get("LD_LIBRARY_PATH", "")) if p)
    return env


def _collector_status(name: str, env: Dict[str, str]) -> Dict[str, str]:
    """Start the collector ``name`` (``nvml``: the NVML collector itself) in a child process; its outcome."""
    code = textwrap.dedent(
        f"""
        import json, pathlib, tempfile
        from profiler.collectors import RunContext, Unavailable, collector_class
        from profiler.collectors.nvml import NvmlCollector
        tmp = pathlib.Path(tempfile.mkdtemp())
        ctx = RunContext(run_id="r", container_id="c" * 64, container_pid=0, run_dir=tmp, output_dir=tmp,
                         interval_s=1.0)
        collector = NvmlCollector() if {name!r} == "nvml" else collector_class({name!r})()
        try:
            collector.start(ctx, lambda *a, **k: None)
        except Unavailable as e:
            print(json.dumps({{"status": "unavailable", "reason": str(e)}}))
        else:
            collector.stop()
            print(json.dumps({{"status": "ok", "reason": ""}}))
        """
    )
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    result: Dict[str, str] = json.loads(p.stdout)
    return result


def test_the_real_library_without_a_driver_makes_nvml_unavailable_naming_the_nvml_error(
    nvml_env: Dict[str, str],
) -> None:
    outcome = _collector_status("nvml", nvml_env)
    assert outcome["status"] == "unavailable"
    assert "NVML could not start: Driver Not Loaded [NVML error 9]" in outcome["reason"]


def test_without_the_library_nvml_is_unavailable_saying_the_library_is_not_found() -> None:
    if ctypes.util.find_library("nvidia-ml") or _has_driver():
        pytest.skip("this machine has an NVML library of its own")
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    outcome = _collector_status("nvml", env)
    assert outcome["status"] == "unavailable"
    assert "NVML Shared Library Not Found [NVML error 12]" in outcome["reason"]


def test_gpu_summary_gives_both_sources_reasons_with_the_real_nvml_error(nvml_env: Dict[str, str]) -> None:
    outcome = _collector_status("gpu-summary", nvml_env)
    assert outcome["status"] == "unavailable"
    assert "tegrastats" in outcome["reason"]
    assert "Driver Not Loaded" in outcome["reason"]


def test_waap_doctor_reports_the_driver_as_not_loaded(nvml_env: Dict[str, str]) -> None:
    p = subprocess.run([*WAAP, "doctor"], env=nvml_env, capture_output=True, text=True, timeout=120)
    nvml_lines = [line for line in p.stdout.splitlines() if "nvml" in line]
    assert nvml_lines and "NVML did not start: Driver Not Loaded" in nvml_lines[0], p.stdout


def test_a_run_with_gpu_summary_goes_on_without_it_and_records_why(
    nvml_env: Dict[str, str], demo_image: str, results: Path
) -> None:
    p = subprocess.run(
        [*WAAP, "run", "--image", demo_image, "--args", "-interval 0 --frames 3", "--metrics", "system,gpu-summary",
         "--timeout", "60", "-q", "-o", str(results)],
        env=nvml_env, capture_output=True, text=True, timeout=180,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    (manifest_path,) = results.glob("*/*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["status"] == "complete"
    entry = next(c for c in manifest["collectors"] if c["name"] == "gpu-summary")
    assert entry["status"] == "unavailable"
    assert "Driver Not Loaded [NVML error 9]" in entry["reason"]


def test_a_run_that_requires_gpu_summary_fails_before_the_app_starts(
    nvml_env: Dict[str, str], demo_image: str, results: Path, tmp_path: Path
) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        f"image: {demo_image}\n"
        "targets: [{args: '-interval 0 --frames 3', timeout: 60}]\n"
        "metrics: [system, gpu-summary]\n"
        "required: [gpu-summary]\n"
    )
    p = subprocess.run([*WAAP, "run", "--profile", str(profile), "-q", "-o", str(results)],
                       env=nvml_env, capture_output=True, text=True, timeout=180)
    assert p.returncode != 0
    assert "Driver Not Loaded" in p.stdout + p.stderr
    (manifest_path,) = results.glob("*/*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["status"] == "failed"
