"""The agent half of the pipeline for real: the exact scripts the rendered Jenkinsfile hands to ``sh`` (plan, run,
release), run as Jenkins runs them (a file with a ``#!`` line, in the workspace, the build parameters in the
environment) with the profiler image on the local engine, the Docker socket bound in and the app as a sibling
container. The image must hold the current code: ``bash scripts/build-images.sh profiler`` rebuilds it."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import docker
import pytest

from profiler.pipeline.params import PARAMETERS
from profiler.pipeline.render import BUDGET_FILE, Deployment, agent_script, render_jenkinsfile
from profiler.rundir import read_manifest

pytestmark = [pytest.mark.docker, pytest.mark.slow]

INJECTIONS = ["'; touch PWNED; '", "$(touch PWNED)", "`touch PWNED`", "${env.PATH}", "'''", '"""', "{{ 7*7 }}",
              "]]>", '"; touch PWNED; "', "\\u0027", "&& touch PWNED", "$HOME"]


class Agent:
    """A Jenkins agent's view: a workspace, the build's environment, and the scripts of one deployment."""

    def __init__(self, root: Path, image: str, tag: str) -> None:
        self.workspace = root / "workspace"
        self.workspace.mkdir(parents=True)
        self.deployment = Deployment(profiler_image=image)
        self.tag = tag
        self.pwned = root / "pwned"

    def env(self, params: Dict[str, str], policy: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
               "WORKSPACE": str(self.workspace), "BUILD_TAG": self.tag}
        if "DOCKER_HOST" in os.environ:
            env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
        # Jenkins exports every build parameter, the defaults included
        env.update({p.name: p.default for p in PARAMETERS})
        env.update(params)
        env.update(policy or {})
        return env

    def step(self, step: str, env: Dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
        script = self.workspace.parent / f"{step}.sh"
        script.write_text(agent_script(self.deployment, step))
        script.chmod(0o755)
        return subprocess.run([str(script)], env=env, cwd=self.workspace, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def build(self, params: Dict[str, str], policy: Optional[Dict[str, str]] = None) -> Dict[str, object]:
        """Plan, run, release, as the pipeline does; returns the exit codes and outputs."""
        env = self.env(params, policy)
        plan = self.step("plan", env)
        assert "invalid choice: 'agent'" not in plan.stderr, "the profiler image is stale: " \
                                                             "bash scripts/build-images.sh profiler"
        result: Dict[str, object] = {"plan": plan}
        if plan.returncode == 0:
            result["run"] = self.step("run", env)
        result["release"] = self.step("release", env)
        return result

    @property
    def results(self) -> Path:
        return self.workspace / self.deployment.results_dir

    def run_dirs(self) -> List[Path]:
        return sorted(p.parent for p in self.results.glob("*/*/manifest.json"))


@pytest.fixture
def agent(tmp_path: Path, profiler_image: str, docker_client: docker.DockerClient, results: Path,
          request: pytest.FixtureRequest) -> Iterator[Agent]:
    tag = f"jenkins-waap-test/{request.node.name}-{os.getpid()}"  # '/' as in a folder job's BUILD_TAG
    a = Agent(tmp_path, profiler_image, tag)
    yield a
    for container in docker_client.containers.list(all=True, filters={"name": "waap-agent-jenkins-waap-test"}):
        if container.name.endswith(f"-{os.getpid()}"):
            container.remove(force=True)


def _out(p: object) -> str:
    assert isinstance(p, subprocess.CompletedProcess)
    return f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"


def test_the_scripts_are_those_of_the_jenkinsfile(profiler_image: str) -> None:
    d = Deployment(profiler_image=profiler_image)
    for step in ("plan", "run", "release"):
        assert f"'''{agent_script(d, step)}'''" in render_jenkinsfile(d)


def test_seed_parameters_profile_the_demo_app(agent: Agent, demo_image: str,
                                              docker_client: docker.DockerClient) -> None:
    out = agent.build({"app_name": demo_image, "app_args": "--frames 5", "timeout": "30",
                       "metrics": "system,container", "interval": "0.5"})
    plan, run, release = out["plan"], out["run"], out["release"]
    assert isinstance(plan, subprocess.CompletedProcess) and plan.returncode == 0, _out(plan)
    budget = (agent.workspace / BUDGET_FILE).read_text()
    assert budget.strip().isdigit() and 30 < int(budget) < 3600
    assert isinstance(run, subprocess.CompletedProcess) and run.returncode == 0, _out(run)
    assert isinstance(release, subprocess.CompletedProcess) and release.returncode == 0, _out(release)

    (run_dir,) = agent.run_dirs()
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "complete" and manifest["stop_reason"] == "exited" and manifest["exit_code"] == 0
    assert manifest["app"]["args"] == ["--frames", "5"]
    assert {c["name"]: c["status"] for c in manifest["collectors"]} == {"system": "ok", "container": "ok"}
    assert (run_dir / "samples.jsonl").stat().st_size > 0
    # what the pipeline stashes is the results folder: one session with its run directories, nothing else
    assert [p.name for p in agent.results.iterdir()] == [run_dir.parent.name]
    # the profiler container is gone (--rm), and it had the name the release step looks for
    name = "waap-agent-" + re.sub(r"[^A-Za-z0-9_.-]", "_", agent.tag)
    assert "--name \"$container\"" in agent_script(agent.deployment, "run")
    assert not docker_client.containers.list(all=True, filters={"name": name})


def test_user_values_reach_the_app_literally_and_nothing_executes(agent: Agent, base_image: str,
                                                                   tmp_path: Path) -> None:
    evil = [s.replace("PWNED", str(agent.pwned)) for s in INJECTIONS]
    data = tmp_path / "data"
    data.mkdir()
    (data / "data-config.json").write_text('{"stream": "top_live"}')
    code = ("import json, os, sys; print('ARGS ' + json.dumps({'argv': sys.argv[1:], 'evil': os.environ.get('EVIL'), "
            "'config': open('/run/waggle/data-config.json').read()}))")
    docker_args = f"-v {data}/data-config.json:/run/waggle/data-config.json -e EVIL={shlex.quote(' '.join(evil))}"
    out = agent.build({"app_name": base_image, "app_args": shlex.join(["python3", "-c", code, *evil]),
                       "app_docker_args": docker_args, "timeout": "30", "metrics": "system"},
                      policy={"WAAP_DATA_ROOTS": str(data)})
    assert out["plan"].returncode == 0, _out(out["plan"])  # type: ignore[attr-defined]
    assert out["run"].returncode == 0, _out(out["run"])  # type: ignore[attr-defined]
    assert not agent.pwned.exists() and not list(agent.workspace.rglob("PWNED"))
    (run_dir,) = agent.run_dirs()
    line = next(x for x in (run_dir / "app.log").read_text().splitlines() if x.startswith("ARGS "))
    seen = json.loads(line[len("ARGS "):])
    assert seen == {"argv": evil, "evil": " ".join(evil), "config": '{"stream": "top_live"}'}


def test_a_profile_parameter_with_newlines_reaches_the_runner_literally(agent: Agent, base_image: str) -> None:
    evil = [s.replace("PWNED", str(agent.pwned)) for s in INJECTIONS]
    args = shlex.join(["python3", "-c", "import json, sys; print('ARGS ' + json.dumps(sys.argv[1:]))", *evil])
    profile = (f"# {' '.join(evil)}\n"  # a comment with every injection
               f"image: {base_image}\n"
               f"targets:\n  - {{name: evil, args: {json.dumps(args)}, timeout: 30}}\n"
               f"metrics: [system]\n"
               f"env: {{NOTE: {json.dumps(chr(10).join(evil))}}}\n")
    out = agent.build({"profile": profile, "app_args": "", "timeout": "300"})
    assert out["plan"].returncode == 0, _out(out["plan"])  # type: ignore[attr-defined]
    assert out["run"].returncode == 0, _out(out["run"])  # type: ignore[attr-defined]
    assert not agent.pwned.exists()
    (run_dir,) = agent.run_dirs()
    assert run_dir.name.startswith("evil")
    line = next(x for x in (run_dir / "app.log").read_text().splitlines() if x.startswith("ARGS "))
    assert json.loads(line[len("ARGS "):]) == evil
    assert read_manifest(run_dir)["app"]["env"]["NOTE"] == "\n".join(evil)


def test_an_app_that_fails_is_unstable_not_a_profiler_failure(agent: Agent, base_image: str) -> None:
    out = agent.build({"app_name": base_image, "app_args": "python3 -c 'raise SystemExit(3)'", "timeout": "30",
                       "metrics": "system"})
    assert out["run"].returncode == 4, _out(out["run"])  # type: ignore[attr-defined]
    (run_dir,) = agent.run_dirs()
    assert read_manifest(run_dir)["exit_code"] == 3


@pytest.mark.parametrize("params, message", [
    ({"app_docker_args": "--privileged"}, "app_docker_args"),
    ({"app_docker_args": "-v /etc:/etc:ro"}, "app_docker_args"),
    ({"app_args": "a\nb"}, "single line"),
    ({"timeout": "$(touch PWNED)"}, "timeout"),
])
def test_invalid_parameters_stop_at_the_plan(agent: Agent, demo_image: str, params: Dict[str, str],
                                             message: str) -> None:
    params = {k: v.replace("PWNED", str(agent.pwned)) for k, v in params.items()}
    out = agent.build({"app_name": demo_image, **params})
    plan = out["plan"]
    assert isinstance(plan, subprocess.CompletedProcess) and plan.returncode == 2, _out(plan)
    assert message in plan.stderr and len(plan.stderr.strip().splitlines()) == 1
    assert "run" not in out and not agent.results.exists() and not agent.pwned.exists()


def test_a_profile_with_tools_runs_the_app_under_nsys_from_the_agent(agent: Agent, nvidia_image: str) -> None:
    # the runner is in the profiler container: `nsys stats` runs in a sibling container that must find the run's
    # output folder by its host path (the workspace's), as the app container did
    profile = (f"image: {nvidia_image}\n"
               "targets: [{name: nsys, args: '-interval 0 --frames 5', timeout: 120}]\n"
               "metrics: [system, container, custom]\n"
               "tools: [nsys]\n")
    out = agent.build({"profile": profile, "app_args": "", "timeout": "300"})
    assert out["plan"].returncode == 0, _out(out["plan"])  # type: ignore[attr-defined]
    assert out["run"].returncode == 0, _out(out["run"])  # type: ignore[attr-defined]
    (run_dir,) = agent.run_dirs()
    [entry] = read_manifest(run_dir)["tools"]
    assert entry["status"] == "ok" and "tools/nsys/osrt_sum.json" in entry["files"], entry
    assert json.loads((run_dir / "tools/nsys/osrt_sum.json").read_text())["rows"]
