"""The Jenkins client against a real Jenkins, when ``JENKINS_URL``, ``JENKINS_USER`` and ``JENKINS_TOKEN`` are set
(skipped otherwise). The same checks the recording in ``tests/data/jenkins/`` was made with: apply a job, trigger it
with parameters in the body, follow the queue and the build, read the console, fetch the artifacts.

What it expects of that Jenkins: the Pipeline plugins (workflow-job, workflow-cps), an agent with the label
``$WAAP_LIVE_LABEL`` (default ``nx``) and the built-in node with an executor, and a user (the token's) that may
create, configure, build and cancel jobs. It creates or updates the job ``$WAAP_LIVE_JOB`` (default
``waap-live-fixture``) from ``tests/data/jenkins/fixture-job.config.xml``: a scripted pipeline with the string
parameters app_name, app_args, app_docker_args and the text parameter profile, which writes app_name and app_args
to ``out/params.txt`` on the agent (then sleeps 4 s), stashes it, and archives it on the built-in node. The job is
left in place (applying it again is an update), and each run adds a few builds to it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
import requests

from profiler.pipeline.client import (
    BuildCancelled,
    JenkinsAuthError,
    JenkinsClient,
    JenkinsNotFound,
)
from profiler.pipeline.settings import JenkinsSettings, load_settings

from .jenkins_fake import FIXTURE_CONFIG

pytestmark = pytest.mark.skipif(
    not all(os.environ.get(k) for k in ("JENKINS_URL", "JENKINS_USER", "JENKINS_TOKEN")),
    reason="no real Jenkins: set JENKINS_URL, JENKINS_USER and JENKINS_TOKEN to run the live tests",
)

JOB = os.environ.get("WAAP_LIVE_JOB", "waap-live-fixture")
LABEL = os.environ.get("WAAP_LIVE_LABEL", "nx")
ARGS = "-stream top_live -object car; $(id) '`x`'"


@pytest.fixture(scope="module")
def settings() -> JenkinsSettings:
    return load_settings(os.environ)


@pytest.fixture(scope="module")
def client(settings: JenkinsSettings) -> Iterator[JenkinsClient]:
    with JenkinsClient(settings) as c:
        yield c


@pytest.fixture(scope="module")
def job(client: JenkinsClient) -> str:
    config = FIXTURE_CONFIG.replace("node('nx')", f"node('{LABEL}')")
    if client.job_exists(JOB):
        client.update_job(JOB, config)
    else:
        client.create_job(JOB, config)
    return JOB


def test_whoami(client: JenkinsClient, settings: JenkinsSettings) -> None:
    assert client.whoami()["id"] == settings.user


def test_the_job_is_applied(client: JenkinsClient, job: str) -> None:
    assert client.job_exists(job)
    assert list(client.job_parameters(job)) == ["app_name", "app_args", "app_docker_args", "profile"]
    assert "<name>profile</name>" in client.get_job_config(job)


def test_a_missing_job_and_a_bad_token(client: JenkinsClient, settings: JenkinsSettings) -> None:
    with pytest.raises(JenkinsNotFound, match="waap jenkins apply"):
        client.job_info("waap-live-does-not-exist")
    bad = JenkinsSettings(url=settings.url, user=settings.user, token="11" + "0" * 32)
    with JenkinsClient(bad, retries=0) as other, pytest.raises(JenkinsAuthError) as e:
        other.whoami()
    assert e.value.status == 401


@pytest.mark.slow
def test_trigger_wait_and_fetch(client: JenkinsClient, job: str, tmp_path: Path) -> None:
    profile = "x" * 20_000  # the length that fails in a query string
    item = client.trigger(job, {"app_name": "waggle/plugin-objectcounter:0.0.0", "app_args": ARGS,
                                "profile": profile, "not_defined": "dropped"})
    build = client.wait_for_build(item, timeout_s=600)
    pieces: list = []
    info = client.wait_for_result(build, on_console=pieces.append, timeout_s=900)
    assert info["result"] == "SUCCESS", "".join(pieces)
    received = {p["name"]: p["value"] for a in info["actions"] if a.get("_class") == "hudson.model.ParametersAction"
                for p in a["parameters"]}
    assert received == {"app_name": "waggle/plugin-objectcounter:0.0.0", "app_args": ARGS, "app_docker_args": "",
                        "profile": profile}
    console = "".join(pieces)
    assert "\x1b" not in console and console.rstrip().endswith("Finished: SUCCESS")
    files = client.download_artifacts(build, tmp_path / "out", info=info)
    assert [p.relative_to(tmp_path / "out").as_posix() for p in files] == ["out/params.txt"]
    assert files[0].read_text() == f"waggle/plugin-objectcounter:0.0.0\n{ARGS}\n"


def test_the_query_string_fails_where_the_body_works(client: JenkinsClient, job: str,
                                                     settings: JenkinsSettings) -> None:
    with requests.Session() as s:
        s.auth = (settings.user, settings.token)
        r = s.post(f"{client.job_url(job)}buildWithParameters", params={"app_name": "x" * 20_000},
                   timeout=settings.timeout_s)
    assert r.status_code in (400, 414)


@pytest.mark.slow
def test_cancel_and_stop(client: JenkinsClient, job: str) -> None:
    item = client.trigger(job, {"app_name": "cancel-me"}, quiet_period_s=60)
    client.cancel(item)
    with pytest.raises(BuildCancelled):
        client.wait_for_build(item, timeout_s=60)
    build = client.wait_for_build(client.trigger(job, {"app_name": "abort-me"}), timeout_s=600)
    client.stop(build)
    assert client.wait_for_result(build, timeout_s=300)["result"] == "ABORTED"
