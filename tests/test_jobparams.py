"""The Jenkins job's parameter contract and ``waap agent``, which runs what the parameters describe."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from profiler.errors import SpecError
from profiler.pipeline.params import DEFAULTS, PARAMETERS, build_budget_s, check_parameters, profile_from_parameters
from profiler.rundir import read_manifest

from .conftest import REPO_ROOT
from .test_cli import run_dirs

SEED = {  # the seed README's curl call, as Jenkins receives it
    "app_name": "waggle/plugin-objectcounter:0.0.0",
    "app_args": "-stream top_live -object car -interval 1",
}


def test_the_seed_parameters_keep_their_names_and_meaning():
    assert [p.name for p in PARAMETERS][:3] == ["app_name", "app_args", "app_docker_args"]
    profile = profile_from_parameters(SEED)
    assert profile.image == "waggle/plugin-objectcounter:0.0.0"
    assert profile.targets[0].args == ("-stream", "top_live", "-object", "car", "-interval", "1")
    assert profile.targets[0].timeout_s == float(DEFAULTS["timeout"])


@pytest.mark.parametrize(
    ("values", "field", "words"),
    [
        ({"app_name": "x", "timout": "3"}, "timout", ["unknown parameter", "did you mean 'timeout'", "silently drop"]),
        ({"app_name": "x", "app_args": "a\nb"}, "app_args", ["single line"]),
        ({"app_name": "x", "app_args": "a" * 9000}, "app_args", ["too long"]),
        ({"app_name": "x", "app_args": "a\x00"}, "app_args", ["NUL"]),
        ({"app_args": "x"}, "app_name", ["app image"]),
        ({"app_name": "x", "timeout": "abc"}, "--timeout", ["abc"]),
        ({"app_name": "x", "app_args": "'unbalanced"}, "--args", ["unbalanced quotes"]),
        ({"profile": "image: x\ntargets: [{args: a}]\n", "app_args": "b"}, "app_args", ["cannot be combined"]),
        ({"profile": "image: x\ntargets: [{args: a, timout: 3}]\n"}, "targets[0].timout", ["did you mean"]),
    ],
)
def test_bad_parameters_are_refused_with_the_parameter_named(values, field, words):
    with pytest.raises(SpecError) as info:
        profile_from_parameters(values)
    assert info.value.field == field, str(info.value)
    for word in words:
        assert word in str(info.value)


def test_a_64_kb_profile_parameter_is_accepted():
    filler = "# " + "x" * 120 + "\n"
    text = "image: waap-demo-objcounter:latest\ntargets:\n  - {args: '--frames 5', timeout: 30}\n"
    text += filler * (64 * 1024 // len(filler) + 1)
    assert len(text) > 64 * 1024
    assert profile_from_parameters({"profile": text}).targets[0].timeout_s == 30
    assert check_parameters({"profile": text})["profile"] == text


def test_the_build_budget_covers_every_run_and_a_margin():
    profile = profile_from_parameters({"profile": "image: x\nrepeat: 2\ngrace: 5\ntargets:\n"
                                                  "  - {timeout: 60}\n  - {timeout: 0}\n"})
    budget = build_budget_s(profile, no_timeout_s=1000, margin_s=100)
    assert budget >= 2 * (60 + 5 + 1000 + 5) + 100
    assert budget < 2 * (60 + 1000 + 200) + 100
    # each target runs once under each tool: three tools, three times the runs
    with_tools = profile_from_parameters({"profile": "image: x\nrepeat: 2\ngrace: 5\ntools: [tau, nvprof, nsys]\n"
                                                     "targets:\n  - {timeout: 60}\n  - {timeout: 0}\n"})
    assert build_budget_s(with_tools, no_timeout_s=1000, margin_s=100) - 100 == 3 * (budget - 100)


def test_the_metrics_parameter_may_name_profiling_tools_as_the_seed_did():
    profile = profile_from_parameters({"app_name": "x", "metrics": "system,nvprof"})
    assert (profile.metrics, profile.tools) == (("system",), ("nvprof",))


def _agent(env: dict, *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
    return subprocess.run([sys.executable, "-m", "profiler.cli", "agent", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=180, env={**clean, **env}, stdin=subprocess.DEVNULL)


def test_agent_plan_validates_and_writes_the_budget(tmp_path):
    plan = tmp_path / "budget"
    p = _agent({"app_name": "waap-base:bookworm", "timeout": "30"}, "--output", str(tmp_path), "--plan", str(plan))
    assert p.returncode == 0, p.stderr
    assert int(plan.read_text()) >= 30
    p = _agent({"app_name": "waap-base:bookworm", "timeout": "-1"}, "--output", str(tmp_path), "--plan", str(plan))
    assert p.returncode == 2 and "timeout" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.docker
def test_agent_exit_codes_tell_an_app_failure_from_a_profiling_failure(base_image, results):
    p = _agent({"app_name": base_image, "app_args": "python3 -c 'print(42)'", "metrics": "system"},
               "--output", str(results))
    assert p.returncode == 0, p.stderr
    p = _agent({"app_name": base_image, "app_args": "sh -c 'exit 3'", "metrics": "system"}, "--output", str(results))
    assert p.returncode == 4, p.stderr + p.stdout  # profiled fine; the app failed
    runs = run_dirs(results)
    assert sorted(read_manifest(r)["exit_code"] for r in runs) == [0, 3]
    p = _agent({"app_name": "127.0.0.1:1/waap-test/none:1", "app_args": "x"}, "--output", str(results))
    assert p.returncode == 1 and "Traceback" not in p.stderr  # the profiler could not do its job


def test_docker_args_are_judged_by_form_off_the_device_and_fully_on_it(tmp_path):
    from profiler.dockerargs import DockerPolicy

    data = tmp_path / "data"
    (data / "cfg").mkdir(parents=True)
    values = {**SEED, "app_docker_args": f"-e MODE=fast -v {data}/cfg:/run/waggle:ro --memory 256m"}
    # waap-submit: the device's folders are not here; the form is checked, the device checks the rest
    off = profile_from_parameters({**SEED, "app_docker_args": "-v /home/nvidia/cfg:/run/waggle"}, on_device=False)
    assert off.docker.data_mounts == (("/home/nvidia/cfg", "/run/waggle"),)
    with pytest.raises(SpecError, match="privileged"):
        profile_from_parameters({**SEED, "app_docker_args": "--privileged"}, on_device=False)
    with pytest.raises(SpecError, match="/etc"):
        profile_from_parameters({**SEED, "app_docker_args": "-v /etc:/x:ro"}, on_device=False)
    # on the device: its data roots and ceilings
    policy = DockerPolicy(data_roots=(str(data),), max_memory_bytes=1 << 30, max_cpus=2.0)
    on = profile_from_parameters(values, docker_policy=policy)
    assert on.docker.env["MODE"] == "fast" and on.env["MODE"] == "fast"
    assert on.docker.data_mounts == ((str(data / "cfg"), "/run/waggle"),)
    assert (on.limits.memory_bytes, on.limits.cpus) == (256 << 20, 2.0)  # asked for memory; cpus at the ceiling
    with pytest.raises(SpecError, match="data root"):
        profile_from_parameters(values, docker_policy=DockerPolicy())
