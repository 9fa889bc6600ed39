"""Tests for ``waap jenkins apply`` (``profiler.pipeline.apply``): python-jenkins against a small local stand-in for
the Jenkins endpoints it uses, answering as the recorded real controller does (tests/data/jenkins/README.md): API
token by Basic auth, 401 for a bad token, 403 without credentials or permission, 404 HTML for a missing job, 400
for ``createItem`` of an existing name, a crumb issuer that answers 200."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from profiler.pipeline.apply import JenkinsApplyError, apply_job, check_config_xml
from profiler.pipeline.params import PARAMETERS
from profiler.pipeline.render import Deployment, render_config_xml
from profiler.pipeline.settings import JenkinsSettings

from .conftest import REPO_ROOT

USER, TOKEN = "jenkins-admin", "11c0ffee5ecre7t0ken"
VIEWER, VIEWER_TOKEN = "viewer", "11viewer5ecre7"


class FakeJenkins(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.jobs: Dict[str, str] = {}
        self.requests: List[Tuple[str, str]] = []
        self.delay_s = 0.0
        self.fail_with: Optional[int] = None  # answer every job request with this status

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeJenkins

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: str = "", content_type: str = "text/html;charset=utf-8") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Jenkins", "2.516.2")
        self.end_headers()
        self.wfile.write(data)

    def _user(self) -> Optional[str]:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        user, _, token = base64.b64decode(header[6:]).decode().partition(":")
        return user if {USER: TOKEN, VIEWER: VIEWER_TOKEN}.get(user) == token else ""

    def _handle(self, method: str) -> None:
        self.server.requests.append((method, self.path))
        time.sleep(self.server.delay_s)
        user = self._user()
        if user == "":
            return self._send(401, "<html><head><title>Error 401 Unauthorized</title></head></html>")
        if user is None:
            return self._send(403, "<html><head><title>Error 403 Forbidden</title></head></html>")
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        if path == "/crumbIssuer/api/json":
            return self._send(200, json.dumps({"crumb": "c0ffee", "crumbRequestField": "Jenkins-Crumb"}),
                              "application/json")
        if self.server.fail_with:
            return self._send(self.server.fail_with, f"<html><title>Oops</title>leaked {TOKEN}</html>")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        if method == "POST" and user == VIEWER:
            return self._send(403, "<html><title>Access Denied</title>viewer is missing Job/Create</html>")
        if method == "POST" and path == "/createItem":
            name = query["name"][0]
            if name in self.server.jobs:
                return self._send(400, f"<html><title>Error</title>A job already exists with the name {name}</html>")
            ET.fromstring(body)  # Jenkins refuses what it cannot parse
            self.server.jobs[name] = body
            return self._send(200)
        if path.startswith("/job/"):
            name, _, rest = path[len("/job/"):].partition("/")
            if name not in self.server.jobs:
                return self._send(404, "<html><title>Error 404 Not Found</title></html>")
            if rest == "api/json" and method == "GET":
                return self._send(200, json.dumps({"name": name}), "application/json")
            if rest == "config.xml" and method == "POST":
                self.server.jobs[name] = body
                return self._send(200)
            if rest == "config.xml":
                return self._send(200, self.server.jobs[name], "application/xml")
        return self._send(404, "<html><title>Error 404 Not Found</title></html>")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


@pytest.fixture
def fake() -> Iterator[FakeJenkins]:
    server = FakeJenkins()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def settings(fake: FakeJenkins, *, user: str = USER, token: str = TOKEN, timeout: float = 10.0) -> JenkinsSettings:
    return JenkinsSettings(url=fake.url, user=user, token=token, timeout_s=timeout)


def waap(*args: str, env: Dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JENKINS_", "WAAP_JENKINS"))}
    return subprocess.run([sys.executable, "-m", "profiler.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=60, env={**clean, **env}, stdin=subprocess.DEVNULL)


def credentials(fake: FakeJenkins, token: str = TOKEN) -> Dict[str, str]:
    return {"JENKINS_URL": fake.url, "JENKINS_USER": USER, "JENKINS_TOKEN": token}


# ----------------------------------------------------------------------------------------------------------------


def test_creates_then_updates_the_job(fake: FakeJenkins) -> None:
    first = render_config_xml(Deployment())
    result = apply_job(settings(fake), "nvidia-nx-profiling-pipeline", first)
    assert result.action == "created"
    assert result.url == f"{fake.url}/job/nvidia-nx-profiling-pipeline/"
    assert fake.jobs["nvidia-nx-profiling-pipeline"] == first

    second = render_config_xml(Deployment(agent_label="nx2"))
    assert apply_job(settings(fake), "nvidia-nx-profiling-pipeline", second).action == "updated"
    assert fake.jobs["nvidia-nx-profiling-pipeline"] == second
    assert len(fake.jobs) == 1


def test_cli_apply_uses_the_environment_and_never_prints_the_token(fake: FakeJenkins, tmp_path: Path) -> None:
    p = waap("jenkins", "apply", "--set", "agent_label=nx && gpu", env=credentials(fake))
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"created job nvidia-nx-profiling-pipeline: {fake.url}/job/nvidia-nx-profiling-pipeline/\n"
    assert TOKEN not in p.stdout + p.stderr
    job = ET.fromstring(fake.jobs["nvidia-nx-profiling-pipeline"])
    labels = [d for d in job.iter("hudson.model.StringParameterDefinition") if d.findtext("name") == "agent_label"]
    assert labels[0].findtext("defaultValue") == "nx && gpu"

    p = waap("jenkins", "apply", "--job", "waap-other", env=credentials(fake))
    assert p.returncode == 0 and "created job waap-other" in p.stdout
    p = waap("jenkins", "apply", env={**credentials(fake), "WAAP_JENKINS_JOB": "from-settings"})
    assert p.returncode == 0 and "created job from-settings" in p.stdout
    p = waap("jenkins", "apply", env=credentials(fake))
    assert p.returncode == 0 and p.stdout.startswith("updated job nvidia-nx-profiling-pipeline")


def test_cli_apply_reads_an_owner_only_config_file(fake: FakeJenkins, tmp_path: Path) -> None:
    config = tmp_path / "jenkins.ini"
    config.write_text(f"[jenkins]\nurl = {fake.url}\nuser = {USER}\ntoken = {TOKEN}\njob = lab-job\n")
    config.chmod(0o600)
    p = waap("jenkins", "apply", "--config", str(config), env={})
    assert p.returncode == 0, p.stderr
    assert "created job lab-job" in p.stdout and TOKEN not in p.stdout + p.stderr

    config.chmod(0o644)
    p = waap("jenkins", "apply", "--config", str(config), env={})
    assert p.returncode == 1 and "chmod 600" in p.stderr and TOKEN not in p.stderr


def test_token_is_never_an_option() -> None:
    p = waap("jenkins", "apply", "--token", TOKEN, env={})
    assert p.returncode == 2 and "unrecognized arguments" in p.stderr


def test_bad_token_is_one_clear_line(fake: FakeJenkins) -> None:
    p = waap("jenkins", "apply", env=credentials(fake, token="wrong-" + TOKEN))
    assert p.returncode == 1
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert "HTTP 401" in p.stderr and "API token" in p.stderr and USER in p.stderr
    assert TOKEN not in p.stderr + p.stdout
    assert not fake.jobs


def test_missing_permission_is_explained(fake: FakeJenkins) -> None:
    with pytest.raises(JenkinsApplyError, match=r"HTTP 403.*Job/Create") as info:
        apply_job(settings(fake, user=VIEWER, token=VIEWER_TOKEN), "job", render_config_xml(Deployment()))
    assert VIEWER_TOKEN not in str(info.value)


def test_server_errors_never_echo_the_token(fake: FakeJenkins) -> None:
    fake.fail_with = 500
    with pytest.raises(JenkinsApplyError, match="HTTP 500") as info:
        apply_job(settings(fake), "job", render_config_xml(Deployment()))
    assert TOKEN not in str(info.value)


def test_unreachable_and_slow_controllers(fake: FakeJenkins) -> None:
    closed = JenkinsSettings(url="http://127.0.0.1:9", user=USER, token=TOKEN, timeout_s=5)
    with pytest.raises(JenkinsApplyError, match=re.escape("cannot reach Jenkins at http://127.0.0.1:9")):
        apply_job(closed, "job", render_config_xml(Deployment()))
    fake.delay_s = 2.0
    start = time.monotonic()
    with pytest.raises(JenkinsApplyError, match=r"did not answer within 0.5 s"):
        apply_job(settings(fake, timeout=0.5), "job", render_config_xml(Deployment()))
    assert time.monotonic() - start < 10


def test_dry_run_sends_nothing_and_needs_no_credentials(fake: FakeJenkins, tmp_path: Path) -> None:
    p = waap("jenkins", "apply", "--dry-run", "--config", str(tmp_path / "none.ini"), env={})
    assert p.returncode == 0, p.stderr
    assert "would create or update job nvidia-nx-profiling-pipeline" in p.stdout and "nothing was sent" in p.stdout
    p = waap("jenkins", "apply", "--dry-run", env=credentials(fake))
    assert p.returncode == 0 and fake.url in p.stdout
    assert fake.requests == []


def test_invalid_deployment_is_refused_before_jenkins_is_contacted(fake: FakeJenkins) -> None:
    p = waap("jenkins", "apply", "--set", "profiler_image=Not An Image", env=credentials(fake))
    assert p.returncode == 2 and "profiler_image" in p.stderr
    assert fake.requests == []


def test_config_xml_is_checked_before_sending() -> None:
    with pytest.raises(JenkinsApplyError, match="not well-formed"):
        check_config_xml("<flow-definition><script>]]></flow-definition>")
    with pytest.raises(JenkinsApplyError, match="not a pipeline job"):
        check_config_xml("<project/>")
    check_config_xml(render_config_xml(Deployment()))


# ----------------------------------------------------------------------------------------------------------------
# the applied job against the shared fake controller: the seed README's curl call, as written


def test_seed_curl_builds_the_applied_job_with_its_parameters() -> None:
    from .jenkins_fake import FakeJenkins as SharedFake

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    readme = (REPO_ROOT / "jenkins" / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("curl -X POST --user jenkins-admin:<API-TOKEN> "))
    argv = shlex.split(line)
    with SharedFake(users={"jenkins-admin": "11" + "ab" * 16}) as fake:
        token = fake.token("jenkins-admin")
        s = JenkinsSettings(url=fake.url, user="jenkins-admin", token=token)
        assert apply_job(s, "nvidia-nx-profiling-pipeline", render_config_xml(Deployment())).action == "created"
        argv = [a.replace("jenkins-admin:<API-TOKEN>", f"jenkins-admin:{token}")
                 .replace("http://169.254.117.38:8080/", fake.url) for a in argv]
        p = subprocess.run([*argv, "-sS", "-o", "/dev/null", "-w", "%{http_code}"], capture_output=True, text=True,
                           timeout=30)
        if p.stdout == "404" and argv[5].endswith("/buildWithParameters/"):
            pytest.xfail("tests/jenkins_fake.py does not accept the trailing slash of the seed's URL, which Jenkins "
                         "(Stapler) does")
        assert p.stdout == "201", p.stderr
        fake.wait_for_builds()
        (build,) = fake.builds("nvidia-nx-profiling-pipeline")
    defaults = {p.name: p.default for p in PARAMETERS}
    assert build.params == {**defaults, "app_name": "waggle/plugin-objectcounter:0.0.0",
                            "app_args": "-stream top_live -object car -interval 1",
                            "app_docker_args": "-v /home/nvidia/luke_projects/config_dir/data-config.json:"
                                               "/run/waggle/data-config.json"}
