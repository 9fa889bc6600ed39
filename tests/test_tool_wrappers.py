"""Tool wrappers (TAU, nvprof, Nsight Systems): command rewriting on real image metadata, the profile's ``tools`` key,
and runs end to end on the local engine with ``waap-test-tools`` (tests/images/tools), whose tools are stand-ins that
run the app and write recorded real dumps."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List

import docker
import pytest

from profiler.errors import SpecError
from profiler.profile import Profile, Target
from profiler.runner import Runner
from profiler.spec import parse_profile, profile_from_args
from profiler.tools.postprocess import postprocess_tool
from profiler.tools.wrap import (
    TOOLBOX_DIR,
    ToolError,
    image_command,
    nsys_stats_command,
    plan_tool_run,
    toolbox_path,
    wrap_command,
)

from .conftest import REPO_ROOT, _require_image, run_one

TOOLS_IMAGE = os.environ.get("WAAP_TOOLS_IMAGE", "waap-test-tools:latest")
OUT = "/app/profiling_output/tools"


@pytest.fixture(scope="session")
def tools_image(docker_client: docker.DockerClient) -> str:
    return _require_image(docker_client, TOOLS_IMAGE)


def _meta(client: docker.DockerClient, image: str) -> Any:
    return image_command(client.images.get(image).attrs)


# -- rewriting ----------------------------------------------------------------------------------------------------


def test_no_tool_keeps_docker_semantics() -> None:
    assert wrap_command(["python3", "-u", "/app/app.py"], [], ["--n", "3"], ()) == (
        ["python3", "-u", "/app/app.py"], ["--n", "3"])
    assert wrap_command([], ["/bin/bash"], [], ()) == ([], ["/bin/bash"])


@pytest.mark.docker
def test_tau_on_a_python_entrypoint_uses_tau_python(docker_client: docker.DockerClient, demo_image: str) -> None:
    entrypoint, cmd = _meta(docker_client, demo_image)
    assert entrypoint == ["python3", "-u", "/app/app.py"]
    plan = plan_tool_run(entrypoint, cmd, ["--count", "2"], ["tau"])
    assert plan is not None
    assert (plan.entrypoint, plan.command) == (["tau_python"], ["/app/app.py", "--count", "2"])
    # -u survives as the environment; the init signals the tool's whole process group (Ctrl-C semantics)
    assert plan.env == {"PROFILEDIR": f"{OUT}/tau", "PYTHONUNBUFFERED": "1", "TINI_KILL_PROCESS_GROUP": "1"}


@pytest.mark.docker
def test_args_replace_cmd_not_entrypoint(docker_client: docker.DockerClient, base_image: str) -> None:
    entrypoint, cmd = _meta(docker_client, base_image)
    assert (entrypoint, cmd) == ([], ["/bin/bash"])
    assert wrap_command(entrypoint, cmd, [], ["tau"]) == (["tau_exec"], ["-T", "serial", "/bin/bash"])
    assert wrap_command(entrypoint, cmd, ["/bin/sleep", "1"], ["nvprof"]) == (
        ["nvprof"],
        ["--csv", "--log-file", f"{OUT}/nvprof/summary.csv", "--export-profile", f"{OUT}/nvprof/profile.nvvp",
         "/bin/sleep", "1"],
    )
    assert wrap_command(entrypoint, cmd, ["/bin/true"], ["nsys"]) == (
        ["nsys"], ["profile", "--output", f"{OUT}/nsys/report", "--force-overwrite", "true", "/bin/true"])


@pytest.mark.docker
def test_tools_image_entrypoint_and_cmd(docker_client: docker.DockerClient, tools_image: str) -> None:
    entrypoint, cmd = _meta(docker_client, tools_image)
    assert wrap_command(entrypoint, cmd, [], ["tau"]) == (["tau_exec"], ["-T", "serial", "/app/app.py", "1"])
    assert wrap_command(entrypoint, cmd, ["5"], ["tau"]) == (["tau_exec"], ["-T", "serial", "/app/app.py", "5"])


def test_rewriting_refusals() -> None:
    with pytest.raises(ToolError, match="only one tool"):
        plan_tool_run(["a"], [], [], ["tau", "nsys"])
    with pytest.raises(ToolError, match="unknown tool"):
        plan_tool_run(["a"], [], [], ["vtune"])
    with pytest.raises(ToolError, match="nothing to run"):
        plan_tool_run([], [], [], ["nvprof"])


def test_helpers() -> None:
    assert toolbox_path({"PATH": "/usr/bin"}) == f"{TOOLBOX_DIR}/bin:{TOOLBOX_DIR}:/usr/bin"
    assert nsys_stats_command(f"{OUT}/nsys/report.nsys-rep")[:5] == [
        "stats", "--format", "csv", "--output", f"{OUT}/nsys/stats"]


# -- spec -------------------------------------------------------------------------------------------------------


def _spec(tools: str) -> Profile:
    return parse_profile(f"image: x/y:1\ntargets: [{{args: '1'}}]\ntools: {tools}\n", source="p.yaml")


def test_spec_tools() -> None:
    assert _spec("[tau]").tools == ("tau",)
    assert _spec("nsys").tools == ("nsys",)
    assert _spec("[tau, nvprof, nsys]").tools == ("tau", "nvprof", "nsys")  # one run under each
    assert parse_profile("image: x/y:1\ntargets: [{args: '1'}]\n", source="p.yaml").tools == ()


def test_tools_may_be_named_in_metrics_as_the_seeds_do() -> None:
    p = parse_profile("image: x/y:1\ntargets: [{args: '1'}]\nmetrics: [system, nvprof]\n", source="p.yaml")
    assert (p.metrics, p.tools) == (("system",), ("nvprof",))
    # both places: each tool once, tools: first
    p = parse_profile("image: x/y:1\ntargets: [{args: '1'}]\nmetrics: [nsys, container, tau]\ntools: [tau]\n",
                      source="p.yaml")
    assert (p.metrics, p.tools) == (("container",), ("tau", "nsys"))
    # only a tool named: the default collectors measure the run
    p = parse_profile("image: x/y:1\ntargets: [{args: '1'}]\nmetrics: nsys\n", source="p.yaml")
    assert (p.metrics, p.tools) == (("system", "container", "custom"), ("nsys",))
    p = profile_from_args(image="a", metrics="system,nsys", tools="tau")
    assert (p.metrics, p.tools) == (("system",), ("tau", "nsys"))
    with pytest.raises(SpecError) as info:
        parse_profile("image: x/y:1\ntargets: [{args: '1'}]\nmetrics: [system, nsyss]\n", source="p.yaml")
    assert "unknown metric 'nsyss' (did you mean 'nsys'?)" in str(info.value)
    assert "or a profiling tool: tau, nvprof, nsys" in str(info.value)
    with pytest.raises(SpecError, match="nsys: a profiling tool, not a collector"):
        parse_profile("image: x/y:1\ntargets: [{args: '1'}]\nmetrics: [system, nsys]\nrequired: [nsys]\n",
                      source="p.yaml")


def test_runs_are_planned_per_target_tool_and_repeat() -> None:
    p = parse_profile("image: x/y:1\ntargets: [{args: '1'}, {args: '2'}]\nrepeat: 2\ntools: [tau, nsys]\n",
                      source="p.yaml")
    assert p.tool_passes == ("tau", "nsys") and p.runs_per_target == 4
    plain = parse_profile("image: x/y:1\ntargets: [{args: '1'}]\nrepeat: 3\n", source="p.yaml")
    assert plain.tool_passes == (None,) and plain.runs_per_target == 3


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ("[tua]", "p.yaml:3: tools[0]: unknown tool 'tua' (did you mean 'tau'?)"),
        ("[tau, tau]", "listed twice"),
        ("{tau: 1}", "expected a list of tool names"),
        ("[3]", "expected a list of tool names"),
    ],
)
def test_spec_tools_errors(tools: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        _spec(tools)
    assert message in str(info.value)


# -- post-processing without Docker -------------------------------------------------------------------------------


def test_postprocess_without_dump_fails(tmp_path: Path) -> None:
    report = postprocess_tool("nvprof", tmp_path, tmp_path / "output", exit_code=3)
    assert report.status == "failed" and "left no output" in (report.error or "") and "code 3" in (report.error or "")


def test_postprocess_big_dump_is_truncated(tmp_path: Path) -> None:
    folder = tmp_path / "output" / "tools" / "nvprof"
    folder.mkdir(parents=True)
    with open(folder / "summary.csv", "wb") as fh:
        fh.truncate(2048)  # sparse; over a small cap
    report = postprocess_tool("nvprof", tmp_path, tmp_path / "output", exit_code=0, max_bytes=1024)
    assert report.truncated and report.skipped == ["output/tools/nvprof/summary.csv"]
    assert report.status == "failed" and report.files == []


# -- end to end ---------------------------------------------------------------------------------------------------


def _run(client: docker.DockerClient, results: Path, image: str, tool: str, *, args: tuple[str, ...] = (),
         timeout: float = 0, env: Dict[str, str] | None = None, toolbox: str | None = None,
         metrics: tuple[str, ...] = ()) -> Any:
    profile = Profile(image=image, targets=(Target(args=args, timeout_s=timeout, name="t"),), metrics=metrics,
                      tools=(tool,), env=env or {}, grace_s=10)
    return run_one(client, results, profile, toolbox=toolbox)


def _containers(client: docker.DockerClient, image: str) -> List[str]:
    wanted = client.images.get(image).id
    return [c.id for c in client.containers.list(all=True) if c.image is not None and c.image.id == wanted]


@pytest.mark.docker
@pytest.mark.slow
def test_tau_end_to_end(docker_client: docker.DockerClient, tools_image: str, results: Path) -> None:
    run, manifest = _run(docker_client, results, tools_image, "tau", metrics=("system",))
    assert run.status == "complete" and run.exit_code == 0
    assert manifest["app"]["tool_command"] == ["tau_exec", "-T", "serial", "/app/app.py", "1"]
    [entry] = manifest["tools"]
    assert entry["status"] == "ok", entry
    assert entry["files"] == ["tools/tau/profile.json"] and entry["dumps"] == ["output/tools/tau/profile.0.0.0"]
    assert entry["highlights"][0]["table"] == "functions" and entry["highlights"][0]["rows"], entry
    parsed = json.loads((run.info.path / "tools/tau/profile.json").read_text())
    assert "2.24.1-git" in json.dumps(parsed)  # the recorded dump's TAU version, through the parser
    assert "app: done" in (run.info.path / "app.log").read_text()
    summary = json.loads((run.info.path / "summary.json").read_text())
    assert summary["tools"] == [{"name": "tau", "status": "ok", "files": ["tools/tau/profile.json"],
                                 "truncated": False, "highlights": entry["highlights"]}]


@pytest.mark.docker
@pytest.mark.slow
def test_several_tools_give_one_run_each(docker_client: docker.DockerClient, tools_image: str, results: Path) -> None:
    profile = Profile(image=tools_image, targets=(Target(name="t"),), metrics=("system",),
                      tools=("tau", "nvprof", "nsys"), grace_s=10)
    session = Runner(docker_client, output_root=results, pull_policy="never").run_session(profile)
    assert [r.info.path.name for r in session.runs] == ["t-tau-r1", "t-nvprof-r1", "t-nsys-r1"]
    for run, tool in zip(session.runs, ("tau", "nvprof", "nsys")):
        manifest = json.loads((run.info.path / "manifest.json").read_text())
        assert run.info.tool == tool and manifest["status"] == "complete"
        [entry] = manifest["tools"]
        assert (entry["name"], entry["status"]) == (tool, "ok"), entry
        assert manifest["app"]["tool_command"][0] == {"tau": "tau_exec", "nvprof": "nvprof", "nsys": "nsys"}[tool]
    planned = json.loads((session.path / "session.json").read_text())
    assert planned["runs_planned"] == 3 and [r["dir"] for r in planned["runs"]] == ["t-tau-r1", "t-nvprof-r1",
                                                                                    "t-nsys-r1"]


@pytest.mark.docker
@pytest.mark.slow
def test_nvprof_stopped_at_timeout_still_flushes(
    docker_client: docker.DockerClient, tools_image: str, results: Path
) -> None:
    run, manifest = _run(docker_client, results, tools_image, "nvprof", args=("60",), timeout=2)
    assert run.stop_reason == "timeout" and run.exit_code == 130  # SIGINT reached the app through the tool
    [entry] = manifest["tools"]
    assert entry["status"] == "ok", entry
    assert entry["files"] == ["tools/nvprof/summary.json"]
    assert sorted(entry["dumps"]) == ["output/tools/nvprof/profile.nvvp", "output/tools/nvprof/summary.csv"]
    assert "cudaMemcpyAsync" in (run.info.path / "tools/nvprof/summary.json").read_text()


@pytest.mark.docker
@pytest.mark.slow
def test_nsys_profile_then_stats(docker_client: docker.DockerClient, tools_image: str, results: Path) -> None:
    before = _containers(docker_client, tools_image)
    run, manifest = _run(docker_client, results, tools_image, "nsys")
    assert run.status == "complete"
    [entry] = manifest["tools"]
    assert entry["status"] == "ok", entry
    assert entry["files"] == ["tools/nsys/cuda_gpu_kern_sum.json"]
    assert "output/tools/nsys/report.nsys-rep" in entry["dumps"]
    assert "flash_attention_prefill_f16" in (run.info.path / "tools/nsys/cuda_gpu_kern_sum.json").read_text()
    assert _containers(docker_client, tools_image) == before  # the stats container is gone too


@pytest.mark.docker
def test_missing_tool_is_a_clear_error(docker_client: docker.DockerClient, demo_image: str, results: Path) -> None:
    before = _containers(docker_client, demo_image)
    with pytest.raises(ToolError) as info:
        _run(docker_client, results, demo_image, "nvprof")
    message = str(info.value)
    assert f"nvprof is not in the image {demo_image}" in message and "WAAP_TOOLBOX" in message
    assert _containers(docker_client, demo_image) == before


@pytest.mark.docker
@pytest.mark.slow
def test_tool_from_a_toolbox(docker_client: docker.DockerClient, demo_image: str, results: Path,
                             tmp_path: Path) -> None:
    toolbox = tmp_path / "toolbox"
    (toolbox / "bin").mkdir(parents=True)
    standin = REPO_ROOT / "tests/images/tools"
    shutil.copy(standin / "standin.py", toolbox / "bin/tau_python")
    shutil.copytree(standin / "dumps", toolbox / "bin/dumps")
    (toolbox / "bin/tau_python").chmod(0o755)
    run, manifest = _run(docker_client, results, demo_image, "tau", args=("--help",), toolbox=str(toolbox))
    assert run.status == "complete"
    assert manifest["app"]["tool_command"][:2] == ["tau_python", "/app/app.py"]
    assert manifest["app"]["env"]["PATH"].startswith(f"{TOOLBOX_DIR}/bin:")
    assert manifest["tools"][0]["files"] == ["tools/tau/profile.json"], manifest["tools"]


@pytest.mark.docker
@pytest.mark.slow
def test_crashing_tool(docker_client: docker.DockerClient, tools_image: str, results: Path) -> None:
    run, manifest = _run(docker_client, results, tools_image, "tau", env={"WAAP_STANDIN": "crash"})
    assert run.status == "complete" and run.exit_code == 134  # SIGABRT; the run itself is complete
    [entry] = manifest["tools"]
    assert entry["status"] == "failed" and entry["exit_code"] == 134
    assert "left no output" in entry["error"]


@pytest.mark.docker
@pytest.mark.slow
def test_gigabyte_dump_is_not_parsed(docker_client: docker.DockerClient, tools_image: str, results: Path) -> None:
    run, manifest = _run(docker_client, results, tools_image, "nvprof", env={"WAAP_STANDIN": "big"})
    assert run.status == "complete"
    [entry] = manifest["tools"]
    assert entry["truncated"] is True and entry["skipped"] == ["output/tools/nvprof/summary.csv"]
    assert entry["files"] == [] and entry["status"] == "failed"
    assert (run.info.path / "output/tools/nvprof/summary.csv").stat().st_size > 1024**3
