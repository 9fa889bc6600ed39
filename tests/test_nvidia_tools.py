"""The tool wrappers on NVIDIA's real profilers: Nsight Systems 2022.4.2 and nvprof 11.8 from Debian bookworm's
non-free section, in ``waap-test-nvidia`` (tests/images/nvidia: the demo plugin with the tools installed), built by
``scripts/build-images.sh nvidia``. This machine has no GPU: the demo app is CPU-only, nsys traces its OS runtime
calls, nvprof finds no CUDA driver and says so. What is checked is WaAP's side: the command under the tool, the stop
at the timeout reaching the app through the tool, the tool flushing its output, ``nsys stats`` after the run, and
the post-processing of what the real tools wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import docker
import pytest

from profiler.profile import Profile, Target
from profiler.runner import RunResult

from .conftest import run_one

METRICS = ("system", "container", "custom")

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _run(client: docker.DockerClient, results: Path, image: str, tool: str, args: Tuple[str, ...],
         timeout: float, grace_s: float = 20) -> Tuple[RunResult, Dict[str, Any]]:
    profile = Profile(image=image, targets=(Target(args=args, timeout_s=timeout, name="t"),), metrics=METRICS,
                      tools=(tool,), interval_s=0.5, grace_s=grace_s)
    return run_one(client, results, profile)


def _events(run: RunResult) -> List[str]:
    return [json.loads(line)["event"] for line in (run.info.path / "events.jsonl").read_text().splitlines()]


def _app_metrics(run: RunResult) -> Dict[str, Any]:
    summary = json.loads((run.info.path / "summary.json").read_text())
    return {k: v for k, v in summary["metrics"].items() if k.startswith("app.")}


def _run_to_timeout(client: docker.DockerClient, results: Path, image: str, tool: str,
                    command: List[str]) -> Tuple[RunResult, Dict[str, Any]]:
    """Run the demo under ``tool`` to its timeout; check that the stop reached the app through the tool: SIGINT
    alone (no SIGTERM needed), the app's own handler ran and flushed its summary into the output folder."""
    run, manifest = _run(client, results, image, tool, ("-interval", "0.2"), timeout=4)
    assert run.status == "complete" and run.stop_reason == "timeout" and run.exit_code == 0
    assert manifest["app"]["tool_command"][: len(command)] == command
    assert manifest["signals_sent"] == ["SIGINT"]
    assert "stopping on SIGINT" in (run.info.path / "app.log").read_text()
    assert (run.info.path / "output/objcounter-summary.json").is_file()
    return run, manifest


def test_nsys_profiles_the_app_to_its_timeout_and_its_reports_are_parsed(
    docker_client: docker.DockerClient, nvidia_image: str, results: Path
) -> None:
    run, manifest = _run_to_timeout(docker_client, results, nvidia_image, "nsys", ["nsys", "profile"])
    assert (run.info.path / "output/tools/nsys/report.nsys-rep").is_file()
    assert "tool_stats" in _events(run)
    [entry] = manifest["tools"]
    assert entry["name"] == "nsys" and entry["status"] == "ok", entry
    osrt = json.loads((run.info.path / "tools/nsys/osrt_sum.json").read_text())
    assert osrt["report"] == "osrt_sum" and osrt["rows"], osrt
    assert all(isinstance(row["Num Calls"], int) and row["Num Calls"] > 0 for row in osrt["rows"])
    assert {"Name", "Total Time (ns)"} <= set(osrt["columns"])
    # where the time went, in the manifest and the summary: the top OS runtime calls
    [block] = [b for b in entry["highlights"] if b["table"] == "osrt_sum"]
    assert block["rows"] and block["rows"][0]["seconds"] > 0 and block["rows"][0]["calls"] > 0
    summary_tools = json.loads((run.info.path / "summary.json").read_text())["tools"]
    assert summary_tools[0]["highlights"] == entry["highlights"]
    # without a GPU the CUDA reports have nothing in them: named as empty, not failures
    assert "cuda_gpu_kern_sum" in entry["empty"], entry
    # the app's own metrics still came through the metrics socket under the tool
    assert _app_metrics(run), "no app.* metric in summary.json"


def test_nsys_on_an_app_that_ends_by_itself(
    docker_client: docker.DockerClient, nvidia_image: str, results: Path
) -> None:
    run, manifest = _run(docker_client, results, nvidia_image, "nsys", ("-interval", "0", "--frames", "5"),
                         timeout=120)
    assert run.status == "complete" and run.stop_reason == "exited" and run.exit_code == 0
    assert manifest["signals_sent"] == []
    [entry] = manifest["tools"]
    assert entry["status"] == "ok", entry
    assert "tools/nsys/osrt_sum.json" in entry["files"]


def test_nsys_stopped_before_it_wrote_its_report_fails_the_tool_saying_to_give_it_more_grace(
    docker_client: docker.DockerClient, nvidia_image: str, results: Path
) -> None:
    # grace 0: SIGTERM follows SIGINT at once, and nsys ends without writing its report (seen with 2022.4.2)
    run, manifest = _run(docker_client, results, nvidia_image, "nsys", ("-interval", "0.2"), timeout=3, grace_s=0)
    assert run.status == "complete" and run.stop_reason == "timeout"
    assert manifest["signals_sent"][:2] == ["SIGINT", "SIGTERM"]
    [entry] = manifest["tools"]
    assert entry["status"] == "failed" and entry["files"] == []
    assert "a longer grace" in entry["error"] and "0 s now" in entry["error"], entry
    assert manifest["collectors"] and (run.info.path / "samples.jsonl").stat().st_size > 0  # the samples are kept


def test_nvprof_passes_the_stop_on_to_the_app_and_reports_that_it_found_no_cuda_driver(
    docker_client: docker.DockerClient, nvidia_image: str, results: Path
) -> None:
    # nvprof does not forward SIGINT itself: the container's init signals the process group, as Ctrl-C would
    run, manifest = _run_to_timeout(docker_client, results, nvidia_image, "nvprof", ["nvprof", "--csv"])
    [entry] = manifest["tools"]
    assert entry["status"] == "ok", entry
    assert any("unable to locate cuda driver library" in m for m in entry["messages"]), entry
    assert _app_metrics(run)


def test_waap_run_prints_what_the_tool_left(nvidia_image: str, results: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "profiler.cli", "run", "--image", nvidia_image, "--args", "-interval 0 --frames 3",
         "--tools", "nsys", "--timeout", "120", "-q", "-o", str(results)],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    line = next(line for line in p.stdout.splitlines() if "tool nsys:" in line)
    assert "tool nsys: ok" in line and "in tools/nsys/" in line and "with no data of their kind" in line, line
    assert "osrt_sum, by total time:" in p.stdout
