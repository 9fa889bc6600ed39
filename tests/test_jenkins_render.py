"""Tests for ``profiler.pipeline.render``: the rendered Jenkinsfile and config.xml against golden files, the escaping
of deployment values into Groovy, shell and XML (checked by real parsers where the machine has them: xml.etree,
``sh -n``, and Groovy 2.4 — the version Jenkins' pipeline runs — which also executes the pipeline against stub
steps), and the agent scripts run against a stub ``docker`` that records what it would have been given."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from profiler.pipeline.params import PARAMETERS
from profiler.pipeline.render import (
    POLICY_ENV,
    Deployment,
    DeploymentError,
    agent_script,
    agent_scripts,
    groovy_ml,
    groovy_str,
    load_deployment,
    render_all,
    render_config_xml,
    render_jenkinsfile,
    sh_word,
    xml_attr,
    xml_text,
)

from .conftest import REPO_ROOT

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("WAAP_UPDATE_GOLDEN") == "1"  # WAAP_UPDATE_GOLDEN=1 pytest ... rewrites the golden files

INJECTIONS = [
    "'; touch /tmp/pwned; '",
    "$(touch /tmp/pwned)",
    "$(id)",
    "`touch /tmp/pwned`",
    "${env.PATH}",
    "'''",
    '"""',
    "{{ 7*7 }}",
    "{% raw %}",
    "]]>",
    "a\nb; touch /tmp/pwned",
    "\\u0027; touch /tmp/pwned",
    "\\",
    "x'",
    "<script>&amp;</script>",
    '" && touch /tmp/pwned && "',
]

# A deployment with every value changed, including the characters each escaper must handle.
CUSTOM = Deployment(
    job_name="waap-profile.test_2",
    description='Profiles on the lab\'s NX <devices> & "friends" ]]> {{ 7*7 }} ${env.PATH}\nsecond line',
    agent_label="nx && gpu",
    controller_label="master",
    profiler_image="registry.example.org:5000/waggle/waap-profiler:0.1.0",
    profiler_pull="missing",
    results_dir="profiles",
    build_margin_s=120,
    no_timeout_s=600,
    docker_socket="/run/docker.sock",
    docker_extras=("--pid", "host", "--security-opt", "label=disable"),
    publish_html=True,
    store_url="https://store.example.org/waap?db=main&x=1",
    keep_builds=0,
)
DEPLOYMENTS = {"default": Deployment(), "custom": CUSTOM}


# ----------------------------------------------------------------------------------------------------------------
# helpers: reading Groovy literals back


def _unescape(body: str, *, multiline: bool) -> str:
    escapes = {"\\": "\\", "'": "'", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1]
            assert nxt in escapes, f"unexpected escape \\{nxt}"
            out.append(escapes[nxt])
            i += 2
            continue
        assert multiline or c not in "'\n", f"unescaped {c!r} at {i} in {body!r}"
        out.append(c)
        i += 1
    return "".join(out)


def groovy_literals(source: str) -> Dict[str, str]:
    """``def NAME = '…'`` and ``def NAME = '''…'''`` at the start of a line, read as Groovy would."""
    found: Dict[str, str] = {}
    for match in re.finditer(r"^def ([A-Z_]+) = '", source, re.MULTILINE):
        start = match.end()
        triple = source.startswith("''", start)
        i = start + 2 if triple else start
        body_start = i
        while True:
            if source[i] == "\\":
                i += 2
            elif source.startswith("'''" if triple else "'", i):
                break
            else:
                i += 1
        found[match.group(1)] = _unescape(source[body_start:i], multiline=triple)
    return found


def strip_groovy_strings(source: str) -> str:
    """The Groovy code without its string literals and comments (so what remains is code only)."""
    out, i = [], 0
    while i < len(source):
        if source.startswith("'''", i):
            i += 3
            while not source.startswith("'''", i):
                i += 2 if source[i] == "\\" else 1
            i += 3
        elif source[i] == "'":
            i += 1
            while source[i] != "'":
                i += 2 if source[i] == "\\" else 1
            i += 1
        elif source.startswith("//", i):
            i = source.index("\n", i)
        elif source[i] == "/" and source[i - 1] in "~ ":  # a slashy regex after ==~
            i = source.index("/", i + 1) + 1
        else:
            out.append(source[i])
            i += 1
    return "".join(out)


# ----------------------------------------------------------------------------------------------------------------
# golden files and the root Jenkinsfile


@pytest.mark.parametrize("name", list(DEPLOYMENTS))
def test_golden_files(name: str) -> None:
    rendered = render_all(DEPLOYMENTS[name])
    for filename, text in rendered.items():
        path = GOLDEN / f"{name}.{filename}"
        if UPDATE:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
        assert path.read_text() == text, f"{path.name} differs: review, then WAAP_UPDATE_GOLDEN=1 to accept"


def test_root_jenkinsfile_is_the_default_render() -> None:
    assert (REPO_ROOT / "Jenkinsfile").read_text() == render_jenkinsfile(Deployment()), (
        "the root Jenkinsfile drifted from the templates: run "
        "`.venv/bin/waap jenkins render --print Jenkinsfile > Jenkinsfile`"
    )


def test_jenkins_templates_folder_is_the_package_templates() -> None:
    link = REPO_ROOT / "jenkins" / "templates"
    assert link.resolve() == (REPO_ROOT / "profiler" / "pipeline" / "templates").resolve()
    assert (link / "Jenkinsfile.j2").is_file() and (link / "config.xml.j2").is_file()


# ----------------------------------------------------------------------------------------------------------------
# config.xml


@pytest.mark.parametrize("name", list(DEPLOYMENTS))
def test_config_xml_is_well_formed_and_embeds_the_jenkinsfile(name: str) -> None:
    deployment = DEPLOYMENTS[name]
    rendered = render_all(deployment)
    root = ET.fromstring(rendered["config.xml"].encode("utf-8"))
    assert root.tag == "flow-definition"
    assert root.findtext("description") == deployment.description
    definition = root.find("definition")
    assert definition is not None
    assert definition.get("class") == "org.jenkinsci.plugins.workflow.cps.CpsFlowDefinition"
    assert definition.findtext("script") == rendered["Jenkinsfile"]
    assert definition.findtext("sandbox") == "true"
    assert "CDATA" not in rendered["config.xml"]
    discarder = root.find("properties/jenkins.model.BuildDiscarderProperty/strategy/numToKeep")
    if deployment.keep_builds:
        assert discarder is not None and discarder.text == str(deployment.keep_builds)
    else:
        assert discarder is None


@pytest.mark.parametrize("name", list(DEPLOYMENTS))
def test_config_xml_defines_exactly_the_parameter_contract(name: str) -> None:
    deployment = DEPLOYMENTS[name]
    root = ET.fromstring(render_config_xml(deployment))
    definitions = root.find("properties/hudson.model.ParametersDefinitionProperty/parameterDefinitions")
    assert definitions is not None
    got = [(d.tag, d.findtext("name"), d.findtext("defaultValue"), d.findtext("description"), d.findtext("trim"))
           for d in definitions]
    kinds = {"string": "hudson.model.StringParameterDefinition", "text": "hudson.model.TextParameterDefinition"}
    want = [(kinds[p.kind], p.name, deployment.agent_label if p.name == "agent_label" else p.default,
             p.description, "false") for p in PARAMETERS]
    assert got == want
    # the seed's curl call uses these three; they keep their names
    assert [g[1] for g in got][:3] == ["app_name", "app_args", "app_docker_args"]


def test_fixture_job_shape_is_kept() -> None:
    """The recorded real job (shared fixtures) worked with this shape: same root, definition and parameter types."""
    fixture = Path(__file__).parent / "data" / "jenkins" / "fixture-job.config.xml"
    ours = ET.fromstring(render_config_xml(Deployment()))
    theirs = ET.fromstring(fixture.read_bytes())
    assert ours.tag == theirs.tag
    assert ours.find("definition").get("class") == theirs.find("definition").get("class")  # type: ignore[union-attr]
    path = "properties/hudson.model.ParametersDefinitionProperty/parameterDefinitions"
    theirs_params = {d.findtext("name"): d.tag for d in theirs.find(path)}  # type: ignore[union-attr]
    ours_params = {d.findtext("name"): d.tag for d in ours.find(path)}  # type: ignore[union-attr]
    assert theirs_params.items() <= ours_params.items()


# ----------------------------------------------------------------------------------------------------------------
# the Jenkinsfile: deployment values only as literals, user values never


@pytest.mark.parametrize("name", list(DEPLOYMENTS))
def test_jenkinsfile_holds_the_agent_scripts_as_literals(name: str) -> None:
    deployment = DEPLOYMENTS[name]
    jenkinsfile = render_jenkinsfile(deployment)
    literals = groovy_literals(jenkinsfile)
    scripts = agent_scripts(deployment)
    assert literals["PLAN_SCRIPT"] == scripts["plan"] == agent_script(deployment, "plan")
    assert literals["RUN_SCRIPT"] == scripts["run"] == agent_script(deployment)
    assert literals["RELEASE_SCRIPT"] == scripts["release"]
    assert literals["AGENT_LABEL"] == deployment.agent_label
    assert literals["RESULTS"] == deployment.results_dir
    if deployment.store_url:
        assert literals["RESULTS_STORE"] == deployment.store_url
    if name == "default":  # no escaping was needed: the scripts read as they run
        for script in scripts.values():
            assert f"'''{script}'''" in jenkinsfile


@pytest.mark.parametrize("name", list(DEPLOYMENTS))
def test_no_user_value_reaches_groovy_or_shell_text(name: str) -> None:
    deployment = DEPLOYMENTS[name]
    jenkinsfile = render_jenkinsfile(deployment)
    code = strip_groovy_strings(jenkinsfile)
    assert '"' not in code, "a double-quoted (interpolating) Groovy string"
    # the only parameter the Groovy code reads is the label, which goes to node() as a value
    assert re.findall(r"params\.(\w+)", code) == ["agent_label"]
    assert "env." not in code
    for step, script in agent_scripts(deployment).items():
        for p in PARAMETERS:
            assert not re.search(rf"\$\{{?{p.name}\b", script), f"{step} script expands ${p.name}"
        # the device's policy is only passed on, except the data folders, which are mounted read-only
        expanded = set(re.findall(r"\$\{?(WAAP_[A-Z_]+)", script))
        assert expanded <= {"WAAP_DATA_ROOTS"}


@pytest.mark.parametrize("name", list(DEPLOYMENTS))
def test_agent_scripts_are_valid_posix_shell(name: str) -> None:
    for script in agent_scripts(DEPLOYMENTS[name]).values():
        assert script.startswith("#!/bin/sh\n")  # Jenkins runs a script with a #! line as it is, without -xe
        for shell in ("sh", "bash", "dash"):
            if shutil.which(shell):
                subprocess.run([shell, "-n"], input=script, text=True, check=True)


def test_deployment_values_are_shell_quoted() -> None:
    deployment = replace(Deployment(), docker_extras=("--label", "a=b,c", "--env", "X=%y"))
    script = agent_script(deployment)
    line = next(x for x in script.splitlines() if x.startswith('set -- "$@" --label'))
    assert shlex.split(line)[3:] == ["--label", "a=b,c", "--env", "X=%y"]


# ----------------------------------------------------------------------------------------------------------------
# escapers


@pytest.mark.parametrize("value", [*INJECTIONS, "", "plain", "é✓", "\t\r\n"])
def test_groovy_str_round_trips(value: str) -> None:
    literal = groovy_str(value)
    assert literal.startswith("'") and literal.endswith("'")
    assert _unescape(literal[1:-1], multiline=False) == value
    assert "\n" not in literal


@pytest.mark.parametrize("value", [*INJECTIONS, "", "'", "''", "'x'", "\\'''", "a\\\n"])
def test_groovy_ml_round_trips(value: str) -> None:
    body = groovy_ml(value)
    assert "'''" not in body.replace("\\'", "__")
    assert not body.endswith("'") or body.endswith("\\'")
    assert _unescape(body, multiline=True) == value


def test_escapers_refuse_what_they_cannot_represent() -> None:
    with pytest.raises(ValueError):
        groovy_str("a\x00b")
    with pytest.raises(ValueError):
        groovy_ml("a\rb")
    with pytest.raises(ValueError):
        xml_text("a\x01b")


@pytest.mark.parametrize("value", [*INJECTIONS, "\r\n\t", "é✓"])
def test_xml_escapers_round_trip(value: str) -> None:
    element = ET.fromstring(f"<a b=\"{xml_attr(value)}\" c='{xml_attr(value)}'>{xml_text(value)}</a>")
    assert element.text == value
    assert element.get("b") == value and element.get("c") == value


@pytest.mark.parametrize("value", INJECTIONS)
def test_sh_word_round_trips(value: str) -> None:
    assert shlex.split(sh_word(value)) == [value]


# ----------------------------------------------------------------------------------------------------------------
# deployment values: validated, or rendered inertly


STRING_KEYS = ["job_name", "description", "agent_label", "controller_label", "profiler_image", "profiler_pull",
               "results_dir", "docker_socket", "store_url"]


@pytest.mark.parametrize("key", STRING_KEYS)
@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_in_a_deployment_value_is_refused_or_inert(key: str, value: str) -> None:
    try:
        deployment = replace(Deployment(), **{key: value}).check()
    except DeploymentError as e:
        assert key in str(e)
        return
    # accepted (free text): it must come out of every format exactly as it went in
    assert key == "description", f"{key} accepted {value!r}"
    rendered = render_all(deployment)
    root = ET.fromstring(rendered["config.xml"])
    assert root.findtext("description") == value
    assert root.findtext("definition/script") == rendered["Jenkinsfile"]
    assert value not in rendered["Jenkinsfile"] or value in render_jenkinsfile(Deployment())


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_in_docker_extras_is_refused(value: str) -> None:
    with pytest.raises(DeploymentError, match="docker_extras"):
        replace(Deployment(), docker_extras=("--pid", value)).check()


def test_default_deployment_is_valid_and_matches_the_seed_job() -> None:
    d = Deployment().check()
    assert d.job_name == "nvidia-nx-profiling-pipeline"
    assert d.agent_label == "nx"
    assert d.profiler_image == "waap-profiler:latest"


def test_load_deployment_from_file_and_sets(tmp_path: Path) -> None:
    path = tmp_path / "deployment.yaml"
    path.write_text("job_name: lab-profiles\ndocker_extras: [--pid, host]\npublish_html: true\nkeep_builds: 5\n")
    d = load_deployment(path, ["agent_label=nx && gpu", "build_margin_s=60", "docker_extras=--pid host -v /a:/a:ro",
                               "store_url="], base={"job_name": "from-settings"})
    assert d.job_name == "lab-profiles"  # the file wins over the base
    assert d.agent_label == "nx && gpu" and d.build_margin_s == 60 and d.keep_builds == 5 and d.publish_html
    assert d.docker_extras == ("--pid", "host", "-v", "/a:/a:ro")
    assert load_deployment(None, [], base={"job_name": "from-settings"}).job_name == "from-settings"


@pytest.mark.parametrize("sets, message", [
    (["job_nme=x"], "did you mean 'job_name'"),
    (["job_name"], "expected KEY=VALUE"),
    (["job_name=a b"], "job_name"),
    (["build_margin_s=-1"], "build_margin_s"),
    (["build_margin_s=lots"], "build_margin_s"),
    (["publish_html=maybe"], "publish_html"),
    (["profiler_image=Bad Image"], "profiler_image"),
    (["profiler_pull=sometimes"], "profiler_pull"),
    (["store_url=http://user:secret@store/x"], "no credentials"),
    (["store_url=ftp://store/x"], "store_url"),
    (["docker_extras=--pid 'unbalanced"], "docker_extras"),
    (["results_dir=.."], "results_dir"),
    (["docker_socket=/var/../etc/shadow"], "docker_socket"),
    (["agent_label=   "], "agent_label"),
])
def test_load_deployment_refuses_bad_values(sets: List[str], message: str) -> None:
    with pytest.raises(DeploymentError, match=re.escape(message)):
        load_deployment(None, sets)


def test_load_deployment_refuses_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("- a list\n")
    with pytest.raises(DeploymentError, match="mapping"):
        load_deployment(path)
    path.write_text("jobname: x\n")
    with pytest.raises(DeploymentError, match="did you mean 'job_name'"):
        load_deployment(path)
    with pytest.raises(DeploymentError, match="cannot read"):
        load_deployment(tmp_path / "missing.yaml")


# ----------------------------------------------------------------------------------------------------------------
# the agent scripts against a stub docker: what reaches docker, and that nothing executes


STUB_DOCKER = """#!/usr/bin/env python3
import json, os, sys
names = sys.argv[1:]
env = {k: os.environ.get(k) for k in os.environ}
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "env": env}) + "\\n")
if "--plan" in sys.argv:
    with open(sys.argv[sys.argv.index("--plan") + 1], "w") as f:
        f.write("423\\n")
if sys.argv[1:3] == ["container", "inspect"]:
    sys.exit(1)
"""


def _stub_env(tmp_path: Path, values: Dict[str, str]) -> Dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text(STUB_DOCKER.replace("/usr/bin/env python3", sys.executable))
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    workspace = tmp_path / "work space"  # a space in the path, as Jenkins workspaces of some jobs have
    workspace.mkdir(exist_ok=True)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "WORKSPACE": str(workspace), "STUB_LOG": str(tmp_path / "log"),
            "BUILD_TAG": "jenkins-nvidia nx/pipeline-7", **values}


def _run_script(script: str, env: Dict[str, str], tmp_path: Path, shell: Optional[str] = None) -> List[Any]:
    path = tmp_path / "script.sh"  # as Jenkins does it: the script in a file, run by its #! line
    path.write_text(script)
    path.chmod(0o755)
    command = [shell, str(path)] if shell else [str(path)]
    subprocess.run(command, env=env, cwd=env["WORKSPACE"], check=True, timeout=30)
    calls = [json.loads(line) for line in Path(env["STUB_LOG"]).read_text().splitlines()]
    Path(env["STUB_LOG"]).unlink()
    return calls


@pytest.mark.parametrize("shell", [None, "bash", "dash"])
def test_agent_scripts_pass_parameters_only_through_the_environment(tmp_path: Path, shell: Optional[str]) -> None:
    if shell and not shutil.which(shell):
        pytest.skip(f"{shell} is not installed")
    evil = "\n".join(INJECTIONS).replace("/tmp/pwned", str(tmp_path / "pwned"))
    values = {p.name: (evil if p.kind == "text" else evil.replace("\n", " ")) for p in PARAMETERS}
    data = tmp_path / "data root"
    data.mkdir()
    values["WAAP_DATA_ROOTS"] = f"{data}:relative:/no/such/dir:{evil.replace(chr(10), ' ')}"
    for name in POLICY_ENV[1:]:
        values[name] = f"$(touch {tmp_path}/pwned) `touch {tmp_path}/pwned`"
    env = _stub_env(tmp_path, values)
    d = Deployment()

    plan = _run_script(agent_script(d, "plan"), env, tmp_path, shell)
    run = _run_script(agent_script(d, "run"), env, tmp_path, shell)
    assert not list(tmp_path.rglob("pwned")), "a parameter executed"
    assert (Path(env["WORKSPACE"]) / ".waap-budget").read_text() == "423\n"
    for calls, extra in ((plan, ["--plan"]), (run, [])):
        (call,) = calls
        argv = call["argv"]
        assert argv[0] == "run" and "--rm" in argv and "--init" in argv
        joined = "\0".join(argv)
        for p in PARAMETERS:
            assert values[p.name] not in joined
            i = argv.index(p.name)
            assert argv[i - 1] == "-e"  # the name only: docker copies the value from the environment
            assert call["env"][p.name] == values[p.name]  # ... where it arrives literally
        for name in POLICY_ENV:
            assert argv[argv.index(name) - 1] == "-e"
            assert call["env"][name] == values[name]
        ws = env["WORKSPACE"]
        assert f"{ws}:{ws}" in argv and argv[argv.index("-w") + 1] == ws
        assert f"{data}:{data}:ro" in argv  # only the absolute, existing data folder is mounted
        assert not any("/no/such/dir" in a or "relative" in a for a in argv)
        image = argv.index("waap-profiler:latest")
        assert argv[image + 1:image + 4] == ["agent", "--output", f"{ws}/waap-results"]
        assert (argv[image + 4:image + 5] == ["--plan"]) == bool(extra)
    plan_argv, run_argv = plan[0]["argv"], run[0]["argv"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in run_argv
    assert "/var/run/docker.sock:/var/run/docker.sock" not in plan_argv
    assert plan_argv[-2:] == ["--no-timeout-budget", "3600"]
    assert run_argv[run_argv.index("--name") + 1] == "waap-agent-jenkins-nvidia_nx_pipeline-7"
    assert run_argv[run_argv.index("--pid"):run_argv.index("--pid") + 6] == \
        ["--pid", "host", "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro"]
    assert run_argv[run_argv.index("--pull") + 1] == "never"


def test_release_script_stops_the_build_container_and_hands_back_results(tmp_path: Path) -> None:
    env = _stub_env(tmp_path, {})
    (Path(env["WORKSPACE"]) / "waap-results").mkdir()
    calls = _run_script(agent_script(Deployment(), "release"), env, tmp_path)
    assert calls[0]["argv"] == ["container", "inspect", "waap-agent-jenkins-nvidia_nx_pipeline-7"]
    if os.getuid() != 0:
        assert calls[1]["argv"][-3:] == ["-R", f"{os.getuid()}:{os.getgid()}", f"{env['WORKSPACE']}/waap-results"]
    else:  # root owns the files already
        assert len(calls) == 1


# ----------------------------------------------------------------------------------------------------------------
# real Groovy (2.4, as in Jenkins): the literals and the pipeline's logic against stub steps


def _groovy() -> List[str]:
    groovy = shutil.which("groovy")
    if groovy is None:
        pytest.skip("groovy is not installed (apt-get install groovy): the Groovy checks need it")
    return [groovy]


def _groovy_env() -> Dict[str, str]:
    env = dict(os.environ)
    java = shutil.which("java")
    if java and not Path(env.get("JAVA_HOME", "/nonexistent"), "bin", "java").exists():
        env["JAVA_HOME"] = str(Path(os.path.realpath(java)).parent.parent)
    return env


def _run_groovy(script: str, tmp_path: Path, *args: str) -> str:
    path = tmp_path / "check.groovy"
    path.write_text(script)
    p = subprocess.run([*_groovy(), str(path), *args], capture_output=True, text=True, env=_groovy_env(),
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_groovy_reads_the_literals_back(tmp_path: Path) -> None:
    values = [*INJECTIONS, "", "'", "''", "\\'''", "a\\", "\\\n", "'x'", "${'x'}", "$/ x /$", "\t"]
    lines = ["def out = []"]
    for v in values:
        lines.append(f"out << {groovy_str(v)}")
        lines.append(f"out << '''{groovy_ml(v)}'''")
    lines.append("println groovy.json.JsonOutput.toJson(out)")
    got = json.loads(_run_groovy("\n".join(lines) + "\n", tmp_path))
    assert got == [x for v in values for x in (v, v)]


PIPELINE_HARNESS = r"""
import groovy.json.JsonOutput
import groovy.json.JsonSlurper

class StepError extends RuntimeException { StepError(String m) { super(m) } }

def scenarios = new JsonSlurper().parse(new File(args[0]))
def jenkinsfile = new File(args[1]).text
def results = []
for (sc in scenarios) {
    def log = []
    def state = [result: 'SUCCESS']
    def b = new Binding()
    b.setVariable('params', sc.params)
    b.setVariable('node', { String label, Closure body -> log << [step: 'node', label: label]; body() })
    b.setVariable('stage', { String name, Closure body -> log << [step: 'stage', name: name]; body() })
    b.setVariable('sh', { Map m ->
        log << [step: 'sh', label: m.label, script: m.script]
        if (sc.interrupt == m.label) { throw new InterruptedException('aborted') }
        int rc = (sc.rcs[m.label] ?: 0) as int
        if (m.returnStatus) { return rc }
        if (rc != 0) { throw new StepError('script returned exit code ' + rc) }
        return null
    })
    b.setVariable('timeout', { Map m, Closure body -> log << [step: 'timeout', time: m.time, unit: m.unit]; body() })
    b.setVariable('deleteDir', { -> log << [step: 'deleteDir'] })
    b.setVariable('readFile', { Map m -> log << [step: 'readFile', file: m.file]; sc.budget })
    b.setVariable('fileExists', { String p -> log << [step: 'fileExists', path: p]; sc.results })
    b.setVariable('stash', { Map m -> log << ([step: 'stash'] + m) })
    b.setVariable('unstash', { String n -> log << [step: 'unstash', name: n] })
    b.setVariable('archiveArtifacts', { Map m -> log << ([step: 'archiveArtifacts'] + m) })
    b.setVariable('publishHTML', { Map m -> log << [step: 'publishHTML', target: m.target] })
    b.setVariable('echo', { String s -> log << [step: 'echo', message: s] })
    b.setVariable('unstable', { String s -> log << [step: 'unstable', message: s]; state.result = 'UNSTABLE' })
    b.setVariable('error', { String s -> log << [step: 'error', message: s]; throw new StepError(s) })
    try {
        new GroovyShell(b).evaluate(jenkinsfile, 'Jenkinsfile')
    } catch (InterruptedException e) {
        state.result = 'ABORTED'
    } catch (StepError e) {
        state.result = 'FAILURE'
    }
    results << [result: state.result, log: log]
}
println JsonOutput.toJson(results)
"""

PLAN, PROFILE, RELEASE = "WaAP: check the job parameters", "WaAP: profile", "WaAP: stop a leftover profiler, " \
                                                                             "release the results"


def _pipeline(tmp_path: Path, deployment: Deployment, scenarios: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    for sc in scenarios:
        sc.setdefault("params", {p.name: p.default for p in PARAMETERS})
        sc.setdefault("rcs", {})
        sc.setdefault("budget", "731\n")
        sc.setdefault("results", True)
        sc.setdefault("interrupt", None)
    (tmp_path / "scenarios.json").write_text(json.dumps(scenarios))
    (tmp_path / "Jenkinsfile").write_text(render_jenkinsfile(deployment))
    out = _run_groovy(PIPELINE_HARNESS, tmp_path, str(tmp_path / "scenarios.json"), str(tmp_path / "Jenkinsfile"))
    return json.loads(out)  # type: ignore[no-any-return]


def _steps(run: Dict[str, Any], step: str) -> List[Dict[str, Any]]:
    return [entry for entry in run["log"] if entry["step"] == step]


def test_pipeline_logic_under_groovy(tmp_path: Path) -> None:
    _groovy()
    d = Deployment()
    ok, app_failed, failed, invalid, aborted, bad_label, custom_label = _pipeline(tmp_path, d, [
        {},
        {"rcs": {PROFILE: 4}},
        {"rcs": {PROFILE: 1}},
        {"rcs": {PLAN: 2}},
        {"interrupt": PROFILE},
        {"params": {"agent_label": "nx'; sh('touch /tmp/pwned')"}},
        {"params": {"agent_label": " nx && gpu "}},
    ])
    scripts = agent_scripts(d)
    # what Groovy hands to sh is exactly the scripts the agent tests run
    assert [s["script"] for s in _steps(ok, "sh")] == [scripts["release"], scripts["plan"], scripts["run"],
                                                         scripts["release"]]
    assert ok["result"] == "SUCCESS"
    assert [n["label"] for n in _steps(ok, "node")] == ["nx", "built-in"]
    assert _steps(ok, "timeout") == [{"step": "timeout", "time": 731 + 60, "unit": "SECONDS"}]
    assert _steps(ok, "stash") == [{"step": "stash", "name": "waap-results", "includes": "waap-results/**",
                                    "allowEmpty": True}]
    assert _steps(ok, "archiveArtifacts") == [{"step": "archiveArtifacts", "artifacts": "waap-results/**",
                                               "allowEmptyArchive": False}]
    assert len(_steps(ok, "deleteDir")) == 4  # the agent's workspace before and after, the controller's too
    assert not _steps(ok, "publishHTML")

    assert app_failed["result"] == "UNSTABLE" and _steps(app_failed, "archiveArtifacts")
    assert failed["result"] == "FAILURE" and _steps(failed, "archiveArtifacts")
    assert "profiling failed" in _steps(failed, "error")[0]["message"]
    assert invalid["result"] == "FAILURE" and not _steps(invalid, "timeout") and not _steps(invalid, "stash")
    assert "invalid job parameters" in _steps(invalid, "error")[0]["message"]
    # an abort or the budget running out: what was measured is still released, stashed and archived
    assert aborted["result"] == "ABORTED"
    assert [s["label"] for s in _steps(aborted, "sh")][-1] == RELEASE
    assert _steps(aborted, "archiveArtifacts")[0]["allowEmptyArchive"] is True
    assert bad_label["result"] == "FAILURE" and not _steps(bad_label, "node") and not _steps(bad_label, "sh")
    assert next(n["label"] for n in _steps(custom_label, "node")) == "nx && gpu"


def test_pipeline_options_under_groovy(tmp_path: Path) -> None:
    _groovy()
    no_results, bad_budget = _pipeline(tmp_path, Deployment(), [{"results": False, "rcs": {PROFILE: 1}},
                                                                 {"budget": "12; rm -rf /"}])
    assert no_results["result"] == "FAILURE" and not _steps(no_results, "stash")
    assert [n["label"] for n in _steps(no_results, "node")] == ["nx"]  # nothing to archive
    assert bad_budget["result"] == "FAILURE" and not _steps(bad_budget, "timeout")

    (custom,) = _pipeline(tmp_path, CUSTOM, [{"params": {"agent_label": ""}}])
    assert custom["result"] == "SUCCESS"
    assert [n["label"] for n in _steps(custom, "node")] == ["nx && gpu", "master"]
    assert [s["script"] for s in _steps(custom, "sh")][1:3] == [agent_script(CUSTOM, "plan"), agent_script(CUSTOM)]
    (html,) = _steps(custom, "publishHTML")
    assert html["target"]["reportDir"] == "profiles" and html["target"]["reportFiles"] == "**/report.html"
    assert any("not implemented yet" in e["message"] for e in _steps(custom, "echo"))


# ----------------------------------------------------------------------------------------------------------------
# the command


def _waap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "profiler.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=60, stdin=subprocess.DEVNULL)


def test_cli_render_writes_and_prints(tmp_path: Path) -> None:
    p = _waap("jenkins", "render", "--output", str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out" / "Jenkinsfile").read_text() == render_jenkinsfile(Deployment())
    assert (tmp_path / "out" / "config.xml").read_text() == render_config_xml(Deployment())
    assert "Jenkinsfile" in p.stdout and "config.xml" in p.stdout

    p = _waap("jenkins", "render", "--print", "Jenkinsfile")
    assert p.returncode == 0 and p.stdout == (REPO_ROOT / "Jenkinsfile").read_text()

    deployment = tmp_path / "d.yaml"
    deployment.write_text("agent_label: nx2\n")
    p = _waap("jenkins", "render", "--deployment", str(deployment), "--set", "results_dir=out2",
              "--print", "config.xml")
    assert p.returncode == 0
    assert p.stdout == render_config_xml(replace(Deployment(), agent_label="nx2", results_dir="out2"))


def test_cli_render_refuses_bad_values_in_one_line() -> None:
    p = _waap("jenkins", "render", "--set", "job_name=a'b", "--print", "Jenkinsfile")
    assert p.returncode == 2
    assert p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and "job_name" in p.stderr and "Traceback" not in p.stderr


# ----------------------------------------------------------------------------------------------------------------
# the README keeps the contract


def test_readme_documents_every_parameter_and_the_seed_curl() -> None:
    readme = (REPO_ROOT / "jenkins" / "README.md").read_text()
    for p in PARAMETERS:
        assert re.search(rf"^\| `{p.name}` \|", readme, re.MULTILINE), f"{p.name} is missing from the table"
    seed = ('curl -X POST --user jenkins-admin:<API-TOKEN> "http://169.254.117.38:8080/job/'
            'nvidia-nx-profiling-pipeline/buildWithParameters/" --data-urlencode "app_args=-stream top_live '
            '-object car -interval 1" --data-urlencode "app_name=waggle/plugin-objectcounter:0.0.0" '
            '--data-urlencode "app_docker_args=-v /home/nvidia/luke_projects/config_dir/data-config.json:'
            '/run/waggle/data-config.json"')
    assert seed in readme
