"""The Jenkins REST client against the fake Jenkins (``tests/jenkins_fake.py``) and against recorded responses of a
real Jenkins 2.516.2 (``tests/data/jenkins/``): triggering with parameters in the body, following queue items and
builds, console annotations, crumbs, retries, timeouts, every error class, and safe artifact extraction."""

from __future__ import annotations

import io
import json
import socket
import stat
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import requests

from profiler.errors import SpecError, WaapError
from profiler.pipeline.artifacts import ArchiveLimits, ArtifactError, UnsafeArchive, extract_zip
from profiler.pipeline.client import (
    FIRST_POLL_S,
    Build,
    BuildCancelled,
    JenkinsAuthError,
    JenkinsClient,
    JenkinsError,
    JenkinsNotFound,
    JenkinsUnavailable,
    QueueState,
    WaitTimeout,
    strip_annotations,
)
from profiler.pipeline.params import PARAMETERS, check_parameters
from profiler.pipeline.settings import JenkinsSettings

from .jenkins_fake import RECORDED, BuildContext, FakeJenkins, config_xml, echo_parameters

JOB = "waap-fixture"
ARGS = "-stream top_live -object car; $(id) '`x`'"  # the recording's shell-special value


@pytest.fixture
def fake() -> Iterator[FakeJenkins]:
    with FakeJenkins() as server:
        server.add_job(JOB)
        yield server


class Sleeps(list):  # type: ignore[type-arg]
    """An injected sleep that records its pauses (and waits for real only when asked)."""

    def __init__(self, real: bool = False) -> None:
        super().__init__()
        self.real = real

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        if self.real:
            time.sleep(seconds)


def client_for(server: FakeJenkins, *, user: str = "admin", token: Optional[str] = None, timeout_s: float = 5.0,
               url: Optional[str] = None, **kwargs: Any) -> JenkinsClient:
    secret = token if token is not None else server.users.get(user) or server.passwords[user]
    settings = JenkinsSettings(url=url or server.url, user=user, token=secret, timeout_s=timeout_s)
    return JenkinsClient(settings, **kwargs)


@pytest.fixture
def client(fake: FakeJenkins) -> Iterator[JenkinsClient]:
    with client_for(fake) as c:
        yield c


def run(client: JenkinsClient, params: Dict[str, str], job: str = JOB, **wait: Any) -> Tuple[Build, Dict[str, Any]]:
    item = client.trigger(job, params)
    build = client.wait_for_build(item, poll_s=0.2)
    return build, client.wait_for_result(build, poll_s=0.2, **wait)


def raw_session(server: FakeJenkins, user: str = "admin") -> requests.Session:
    session = requests.Session()
    session.auth = (user, server.users[user])
    return session


# the fake is the recording


def _keys(data: Dict[str, Any]) -> List[str]:
    return sorted(data)


def test_the_fake_answers_with_the_recorded_shapes(fake: FakeJenkins) -> None:
    with raw_session(fake) as s:
        def get(path: str) -> Dict[str, Any]:
            r = s.get(fake.url + path, timeout=5)
            assert r.status_code == 200 and r.headers["X-Jenkins"] == "2.516.2"
            assert r.headers["Content-Type"] == "application/json;charset=UTF-8"
            return dict(r.json())

        assert _keys(get(f"job/{JOB}/api/json")) == _keys(RECORDED["job_api"]["json"])
        assert get(f"job/{JOB}/api/json")["property"] == RECORDED["job_api"]["json"]["property"]
        assert _keys(get("crumbIssuer/api/json")) == _keys(RECORDED["crumb"]["json"])
        assert _keys(get("me/api/json")) == _keys(RECORDED["whoami"]["json"])
        assert get("api/json?tree=mode,nodeDescription,useCrumbs,useSecurity") == RECORDED["root_api"]["json"]

        fake.queue_states = ["waiting"]
        fake.executor = lambda ctx: "SUCCESS" if ctx.sleep(0.5) else "ABORTED"
        r = s.post(fake.url + f"job/{JOB}/buildWithParameters", data={"app_name": "a", "app_args": ARGS}, timeout=5)
        assert r.status_code == 201 and r.text == ""
        assert r.headers["Location"].startswith(fake.url + "queue/item/")
        item = r.headers["Location"][len(fake.url):]
        first = get(item + "api/json")
        assert first["_class"] == "hudson.model.Queue$WaitingItem"
        assert _keys(first) == _keys(RECORDED["queue_item_first"]["json"])
        assert first["why"] == RECORDED["queue_item_first"]["json"]["why"]
        assert first["params"] == "\napp_name=a\napp_args=" + ARGS + "\napp_docker_args=\nprofile="
        left = get(item + "api/json")
        assert _keys(left) == _keys(RECORDED["queue_item_left"]["json"])
        running = get(f"job/{JOB}/1/api/json")
        assert _keys(running) == _keys(RECORDED["build_running"]["json"])
        assert running["building"] is True and running["result"] is None
        console = s.get(fake.url + f"job/{JOB}/1/logText/progressiveText?start=0", timeout=5)
        assert console.headers["X-More-Data"] == "true" and int(console.headers["X-Text-Size"]) > 0
        assert console.text.startswith("Started by user \x1b[8mha:////")
        fake.wait_for_builds()
        finished = get(f"job/{JOB}/1/api/json")
        assert _keys(finished) == _keys(RECORDED["build_finished"]["json"])
        assert finished["actions"][0]["parameters"] == [
            {"_class": "hudson.model.StringParameterValue", "name": "app_name", "value": "a"},
            {"_class": "hudson.model.StringParameterValue", "name": "app_args", "value": ARGS},
            {"_class": "hudson.model.StringParameterValue", "name": "app_docker_args", "value": ""},
            {"_class": "hudson.model.TextParameterValue", "name": "profile", "value": ""},
        ]
        end = s.get(fake.url + f"job/{JOB}/1/logText/progressiveText?start=0", timeout=5)
        assert "X-More-Data" not in end.headers and end.headers["X-Text-Size"] == str(len(end.content))

        fake.queue_states = ["buildable"]
        r = s.post(fake.url + f"job/{JOB}/buildWithParameters", data={"app_name": "b"}, timeout=5)
        item_id = r.headers["Location"].rstrip("/").rpartition("/")[2]
        assert s.post(fake.url + f"queue/cancelItem?id={item_id}", timeout=5).status_code == 204
        cancelled = get(f"queue/item/{item_id}/api/json")
        assert _keys(cancelled) == _keys(RECORDED["queue_item_cancelled"]["json"])
        assert cancelled["cancelled"] is True and cancelled["executable"] is None


def test_the_fake_refuses_as_the_recording_shows(fake: FakeJenkins) -> None:
    r = requests.get(fake.url + "api/json", timeout=5)
    assert r.status_code == RECORDED["no_auth"]["status"] == 403
    r = requests.get(fake.url + "api/json", auth=("admin", "wrong"), timeout=5)
    assert r.status_code == RECORDED["bad_token"]["status"] == 401
    assert "HTTP Status 401 – Unauthorized" in r.text
    with raw_session(fake) as s:
        r = s.get(fake.url + "job/does-not-exist/api/json", timeout=5)
        assert r.status_code == RECORDED["missing_job"]["status"] == 404
        assert r.headers["Content-Type"] == RECORDED["missing_job"]["headers"]["Content-Type"]
        r = s.post(fake.url + f"createItem?name={JOB}", data=b"<x/>", timeout=5)
        assert r.status_code == RECORDED["create_job_again"]["status"] == 400
        r = s.get(fake.url + f"job/{JOB}/buildWithParameters", timeout=5)
        assert r.status_code == 405
        # Stapler serves a web method with a trailing slash too (the seed README's curl call has one)
        r = s.post(fake.url + f"job/{JOB}/buildWithParameters/", data={"app_name": "a"}, timeout=5)
        assert r.status_code == 201


# who, what, the job


def test_whoami_and_the_job(client: JenkinsClient) -> None:
    me = client.whoami()
    assert me["id"] == "admin" and me["fullName"] == "Lab Administrator"
    assert client.job_exists(JOB)
    assert not client.job_exists("does-not-exist")
    assert client.job_parameters(JOB) == {"app_name": "", "app_args": "", "app_docker_args": "", "profile": ""}


def test_a_missing_job_suggests_waap_jenkins_apply(client: JenkinsClient) -> None:
    with pytest.raises(JenkinsNotFound, match="waap jenkins apply") as e:
        client.trigger("nvidia-nx-profiling-pipeline", {"app_name": "a"})
    assert e.value.status == 404
    with pytest.raises(JenkinsNotFound, match="waap jenkins apply"):
        client.job_info("nvidia-nx-profiling-pipeline")


def test_job_config_create_read_update(fake: FakeJenkins, client: JenkinsClient) -> None:
    waap = config_xml((p.name, p.kind, p.default) for p in PARAMETERS)
    client.create_job("waap-new", waap)
    assert "<name>agent_label</name>" in client.get_job_config("waap-new")
    assert list(client.job_parameters("waap-new")) == [p.name for p in PARAMETERS]
    with pytest.raises(JenkinsError) as e:
        client.create_job("waap-new", waap)
    assert e.value.status == 400 and not isinstance(e.value, JenkinsNotFound)
    assert "already exists" in str(e.value)
    client.update_job("waap-new", config_xml([("app_name", "string", "x")]))
    assert client.job_parameters("waap-new") == {"app_name": "x"}
    with pytest.raises(JenkinsNotFound, match="waap jenkins apply"):
        client.update_job("nope", waap)
    with pytest.raises(JenkinsNotFound):
        client.get_job_config("nope")


# parameters: in the body, checked first


@pytest.mark.parametrize("size", [20_000, 64 * 1024])
def test_long_parameters_go_in_the_body(fake: FakeJenkins, client: JenkinsClient, size: int) -> None:
    profile = ("# " + "x" * 70 + "\n") * (size // 73) + "image: a\n"
    params = {"app_name": "waggle/plugin-objectcounter:0.0.0", "app_args": ARGS, "profile": profile}
    _build, info = run(client, params)
    assert info["result"] == "SUCCESS"
    assert fake.builds(JOB)[0].params["profile"] == profile
    assert fake.builds(JOB)[0].params["app_args"] == ARGS
    received = {p["name"]: p["value"] for p in info["actions"][0]["parameters"]}
    assert received["profile"] == profile
    (post,) = fake.requests_to("buildWithParameters", "POST")
    assert post.path == f"/job/{JOB}/buildWithParameters?delay=0sec"  # nothing but the quiet period in the URL
    assert len(post.body) > size and post.headers["Content-Type"].startswith("application/x-www-form-urlencoded")


def test_parameters_in_the_query_string_fail_as_on_the_real_jenkins(fake: FakeJenkins) -> None:
    value = "x" * 20_000
    with raw_session(fake) as s:
        r = s.post(fake.url + f"job/{JOB}/buildWithParameters", params={"app_name": value}, timeout=5)
        assert r.status_code == RECORDED["query_string_20k_param"]["status"] == 400
        assert "Request header is too large" in r.text
        r = s.post(fake.url + f"job/{JOB}/buildWithParameters", data={"app_name": value}, timeout=5)
        assert r.status_code == RECORDED["body_20k_param"]["status"] == 201
    import jenkins  # python-jenkins' build_job: the pitfall the client avoids

    j = jenkins.Jenkins(fake.url, username="admin", password=fake.token(), timeout=5)
    with pytest.raises(requests.HTTPError, match="400"):
        j.build_job(JOB, {"app_name": value})


def test_undefined_parameters_are_refused_locally_because_jenkins_drops_them(fake: FakeJenkins,
                                                                            client: JenkinsClient) -> None:
    with pytest.raises(SpecError, match="silently drop"):
        check_parameters({"app_name": "a", "not_defined": "1"})
    # what happens when one gets through: the recording's behaviour
    run(client, {"app_name": "a", "not_defined": "1"})
    assert fake.builds(JOB)[0].params == {"app_name": "a", "app_args": "", "app_docker_args": "", "profile": ""}


def test_quiet_period_override(fake: FakeJenkins, client: JenkinsClient) -> None:
    fake.queue_states = ["waiting"]
    seen: List[str] = []
    client.wait_for_build(client.trigger(JOB, {"app_name": "a"}, quiet_period_s=None), poll_s=0.2,
                          on_state=lambda s, _: seen.append(s.state))
    assert seen == ["waiting", "left"]
    assert fake.requests_to("buildWithParameters")[0].path.endswith("/buildWithParameters")


# the queue


def test_queue_states_are_reported_with_why(fake: FakeJenkins, client: JenkinsClient) -> None:
    fake.queue_states = ["waiting", "blocked", "buildable"]
    seen: List[QueueState] = []
    item = client.trigger(JOB, {"app_name": "a"}, quiet_period_s=None)
    assert item.url == f"{fake.url}queue/item/{item.id}/"
    build = client.wait_for_build(item, on_state=lambda s, _: seen.append(s), poll_s=0.2)
    assert [s.state for s in seen] == ["waiting", "blocked", "buildable", "left"]
    assert seen[0].why == "In the quiet period. Expires in 4.9 sec"
    assert seen[1].why is not None and "already in progress" in seen[1].why
    assert seen[2].why == "Waiting for next available executor on ‘nx’"
    assert build == Build(JOB, 1, f"{fake.url}job/{JOB}/1/")


def test_a_cancelled_queue_item(fake: FakeJenkins, client: JenkinsClient) -> None:
    fake.queue_outcome = "cancel"
    with pytest.raises(BuildCancelled, match="cancelled"):
        client.wait_for_build(client.trigger(JOB, {"app_name": "a"}), poll_s=0.2)
    fake.queue_outcome, fake.queue_states = "build", ["buildable"] * 1000
    item = client.trigger(JOB, {"app_name": "b"})
    client.cancel(item)
    assert fake.requests_to(f"/queue/cancelItem?id={item.id}", "POST")
    with pytest.raises(BuildCancelled):
        client.wait_for_build(item, poll_s=0.2)
    assert fake.builds(JOB) == []


def test_waiting_has_a_limit(fake: FakeJenkins, client: JenkinsClient) -> None:
    fake.queue_states = ["buildable"] * 1000
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match="gave up"):
        client.wait_for_build(client.trigger(JOB, {"app_name": "a"}), timeout_s=0.6, poll_s=0.2)
    assert 0.5 < time.monotonic() - started < 3


# recorded answers, replayed as they are


def test_recorded_queue_items_and_builds(fake: FakeJenkins, client: JenkinsClient) -> None:
    fake.replay("GET", "/queue/item/25/api/json", "queue_item_left")
    item = client.queue_item_for(JOB, 25)
    build = client.wait_for_build(item)
    # the recorded executable.url is http://127.0.0.1:8080/…: URLs stay on the client's own base
    assert build == Build(JOB, 1, f"{fake.url}job/{JOB}/1/")
    state = client.queue_item(item)
    assert state.state == "left" and state.build == build

    fake.replay("GET", "/queue/item/25/api/json", "queue_item_first")
    state = client.queue_item(item)
    assert (state.state, state.why, state.build) == ("waiting", "In the quiet period. Expires in 4.9 sec", None)

    fake.replay("GET", "/queue/item/28/api/json", "queue_item_cancelled")
    with pytest.raises(BuildCancelled):
        client.wait_for_build(client.queue_item_for(JOB, 28))

    fake.replay("GET", f"/job/{JOB}/2/api/json", "build_aborted")
    info = client.wait_for_result(client.build(JOB, 2))
    assert info["result"] == "ABORTED" and info["duration"] == 2480

    fake.replay("GET", "/queue/item/99/api/json", "missing_job")
    with pytest.raises(JenkinsNotFound, match="no longer in the Jenkins queue"):
        client.queue_item(client.queue_item_for(JOB, 99))


def test_console_annotations_are_stripped_from_the_recording(fake: FakeJenkins, client: JenkinsClient) -> None:
    path = f"/job/{JOB}/1/logText/progressiveText"
    build = client.build(JOB, 1)
    fake.replay("GET", path, "console_progressive_0")
    text, next_start, more = client.console(build, 0)
    assert (text, next_start, more) == ("Started by user Lab Administrator\n", 301, True)

    fake.replay("GET", path, "console_progressive_end")
    text, next_start, more = client.console(build, 0)
    assert (next_start, more) == (6105, False)
    assert "\x1b" not in text and "ha:////" not in text
    # the recording's end piece is cut short; what there is reads as consoleText does
    assert RECORDED["console_text"]["text"].startswith(text)
    assert text.count("\n") >= 10
    assert strip_annotations(RECORDED["console_progressive_0"]["text"]) == "Started by user Lab Administrator\n"


def test_a_cut_annotation_or_character_is_left_for_the_next_read(fake: FakeJenkins, client: JenkinsClient) -> None:
    path = f"/job/{JOB}/1/logText/progressiveText"
    build = client.build(JOB, 1)
    body = b"one\r\n" + RECORDED["console_progressive_0"]["text"].encode()[16:60]  # ESC[8mha:… cut
    fake.respond("GET", path, 200, body, {"X-Text-Size": str(len(body)), "X-More-Data": "true"}, times=1)
    assert client.console(build, 0) == ("one\n", 5, True)
    body = b"caf" + "é".encode()[:1]
    fake.respond("GET", path, 200, body, {"X-Text-Size": str(100 + len(body)), "X-More-Data": "true"}, times=1)
    assert client.console(build, 100) == ("caf", 103, True)
    fake.respond("GET", path, 200, b"a\r\nb\r", {"X-Text-Size": "5", "X-More-Data": "true"}, times=1)
    assert client.console(build, 0) == ("a\nb", 4, True)


# builds


@pytest.mark.parametrize("result", ["SUCCESS", "UNSTABLE", "FAILURE"])
def test_results_and_the_console(fake: FakeJenkins, client: JenkinsClient, result: str) -> None:
    def execute(ctx: BuildContext) -> str:
        echo_parameters(ctx)
        ctx.log("é ünïcode line")
        return result

    fake.executor = execute
    pieces: List[str] = []
    progress: List[Tuple[Any, float]] = []
    build, info = run(client, {"app_name": "a", "app_args": ARGS}, on_console=pieces.append,
                      on_progress=lambda i, e: progress.append((i.get("building"), e)))
    assert info["result"] == result and info["building"] is False
    assert isinstance(info["duration"], int)
    console = "".join(pieces)
    assert console == fake.builds(JOB)[0].console_text()
    with raw_session(fake) as s:
        assert console == s.get(build.url + "consoleText", timeout=5).text
    assert "\x1b" not in console and console.endswith(f"Finished: {result}\n")
    assert "é ünïcode line\n" in console
    assert progress[-1][0] is False


def test_stop_aborts_a_build(fake: FakeJenkins, client: JenkinsClient) -> None:
    fake.executor = lambda ctx: "SUCCESS" if ctx.sleep(60) else "ABORTED"
    build = client.wait_for_build(client.trigger(JOB, {"app_name": "a"}))
    started = time.monotonic()
    client.stop(build)
    info = client.wait_for_result(build, poll_s=0.2)
    assert info["result"] == "ABORTED" and time.monotonic() - started < 5
    assert "Aborted by admin" in fake.builds(JOB)[0].console_text()


def test_a_failing_step_fails_the_build(fake: FakeJenkins, client: JenkinsClient) -> None:
    def execute(ctx: BuildContext) -> str:
        raise RuntimeError("agent exploded")

    fake.executor = execute
    _, info = run(client, {"app_name": "a"})
    assert info["result"] == "FAILURE"
    assert "ERROR: RuntimeError: agent exploded" in fake.builds(JOB)[0].console_text()


def test_the_executor_sees_parameters_as_environment(fake: FakeJenkins, client: JenkinsClient) -> None:
    seen: Dict[str, str] = {}

    def execute(ctx: BuildContext) -> str:
        seen.update(ctx.env)
        return "SUCCESS"

    fake.executor = execute
    run(client, {"app_name": "a", "app_args": ARGS})
    assert seen["app_args"] == ARGS and seen["BUILD_NUMBER"] == "1" and seen["JOB_NAME"] == JOB


def test_polls_back_off_and_never_spin(fake: FakeJenkins) -> None:
    fake.executor = lambda ctx: "SUCCESS" if ctx.sleep(2.0) else "ABORTED"
    sleeps = Sleeps(real=True)
    with client_for(fake, sleep=sleeps) as client:
        build = client.wait_for_build(client.trigger(JOB, {"app_name": "a"}))
        info = client.wait_for_result(build, poll_s=1.0)
    assert info["result"] == "SUCCESS"
    assert sleeps[0] == FIRST_POLL_S
    assert all(0.05 <= s <= 1.0 for s in sleeps), sleeps
    assert sleeps == sorted(sleeps)  # first build: no estimate to aim at, pure backoff
    assert len(sleeps) <= 8
    polls = len(fake.requests_to(f"/job/{JOB}/1/api/json"))
    assert polls <= len(sleeps) + 2


def test_a_poll_is_aimed_at_the_expected_end(fake: FakeJenkins) -> None:
    fake.executor = lambda ctx: "SUCCESS" if ctx.sleep(1.2) else "ABORTED"
    with client_for(fake) as client:
        run(client, {"app_name": "a"})
        sleeps = Sleeps(real=True)
        client._sleep = sleeps
        build = client.wait_for_build(client.trigger(JOB, {"app_name": "b"}))
        started = time.monotonic()
        info = client.wait_for_result(build, poll_s=5.0)
        waited = time.monotonic() - started
    assert info["estimatedDuration"] > 1000
    assert waited < 1.2 + 0.5, sleeps  # pure backoff to 5 s would have polled at 0.25, 0.6, 1.2, 2.0 s
    assert any(s != FIRST_POLL_S * 1.5**n for n, s in enumerate(sleeps))


# crumbs


def test_api_tokens_need_no_crumb(fake: FakeJenkins, client: JenkinsClient) -> None:
    run(client, {"app_name": "a"})
    assert fake.requests_to("crumbIssuer") == []


def test_a_crumb_is_fetched_when_asked_for_and_renewed_when_stale() -> None:
    with FakeJenkins(require_crumb=True) as fake, client_for(fake) as client:
        fake.add_job(JOB)
        client.trigger(JOB, {"app_name": "a"})
        assert len(fake.requests_to("crumbIssuer")) == 1
        client.trigger(JOB, {"app_name": "b"})
        assert len(fake.requests_to("crumbIssuer")) == 1  # kept while it is good
        fake.expire_crumbs()
        client.trigger(JOB, {"app_name": "c"})
        assert len(fake.requests_to("crumbIssuer")) == 2
        fake.wait_for_builds()
        assert [b.params["app_name"] for b in fake.builds(JOB)] == ["a", "b", "c"]  # one build each
        posts = fake.requests_to("buildWithParameters", "POST")
        assert len(posts) == 5  # refused without a crumb, sent with it, sent, refused when stale, sent again
        assert all(p.headers.get("Jenkins-Crumb") for p in posts[1:])


def test_passwords_need_a_crumb() -> None:
    with FakeJenkins(users={}, passwords={"alice": "secret-pw"}) as fake, client_for(fake, user="alice") as client:
        fake.add_job(JOB)
        client.trigger(JOB, {"app_name": "a"})
        assert len(fake.requests_to("crumbIssuer")) == 1


def test_a_crumb_that_keeps_being_refused() -> None:
    with FakeJenkins(require_crumb=True, crumbs_valid=False) as fake, client_for(fake) as client:
        fake.add_job(JOB)
        with pytest.raises(JenkinsAuthError, match="crumb") as e:
            client.trigger(JOB, {"app_name": "a"})
        assert e.value.status == 403
        assert len(fake.requests_to("buildWithParameters", "POST")) == 2
        assert fake.builds(JOB) == []


# retries, timeouts, unavailability


def test_503_is_retried_with_backoff(fake: FakeJenkins) -> None:
    sleeps = Sleeps()
    fake.fail_next(2, status=503)
    with client_for(fake, sleep=sleeps) as client:
        assert client.whoami()["id"] == "admin"
    assert sleeps == [0.5, 1.0]
    assert len(fake.requests_to("/me/api/json")) == 3


def test_503_past_the_retries(fake: FakeJenkins) -> None:
    sleeps = Sleeps()
    fake.fail_next(10, status=503)
    with client_for(fake, sleep=sleeps, retries=2) as client, pytest.raises(JenkinsUnavailable, match="503") as e:
        client.whoami()
    assert e.value.status == 503 and sleeps == [0.5, 1.0]


def test_a_trigger_is_not_retried_once_jenkins_may_have_it(fake: FakeJenkins) -> None:
    sleeps = Sleeps()
    fake.fail_next(1, status=502, path="buildWithParameters")
    with client_for(fake, sleep=sleeps) as client, pytest.raises(JenkinsUnavailable):
        client.trigger(JOB, {"app_name": "a"})
    assert sleeps == [] and len(fake.requests_to("buildWithParameters")) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_after_the_retries() -> None:
    sleeps = Sleeps()
    settings = JenkinsSettings(url=f"http://127.0.0.1:{_closed_port()}", user="admin", token="t0ken-value")
    with JenkinsClient(settings, sleep=sleeps) as client:
        with pytest.raises(JenkinsUnavailable, match="connection refused") as e:
            client.whoami()
        assert "4 attempt" in str(e.value)
        assert sleeps == [0.5, 1.0, 2.0]
        # a refused connection surely never reached Jenkins: a trigger is retried too
        with pytest.raises(JenkinsUnavailable, match="connection refused") as e:
            client.trigger(JOB, {"app_name": "a"})
        assert "may have reached" not in str(e.value)
    assert len(sleeps) == 6
    assert "t0ken-value" not in str(e.value)


def test_a_read_timeout_is_retried(fake: FakeJenkins) -> None:
    sleeps = Sleeps()
    fake.stall_next(1, seconds=1.0, path="/me/")
    with client_for(fake, timeout_s=0.3, sleep=sleeps) as client:
        assert client.whoami()["id"] == "admin"
    assert sleeps == [0.5]


def test_timeouts_past_the_retries(fake: FakeJenkins) -> None:
    fake.stall_next(3, seconds=0.8, path="/me/")
    with client_for(fake, timeout_s=0.2, sleep=Sleeps(), retries=2) as client, \
            pytest.raises(JenkinsUnavailable, match=r"no answer within 0\.2 s \(3 attempt"):
        client.whoami()


def test_a_trigger_that_timed_out_is_not_sent_twice(fake: FakeJenkins) -> None:
    sleeps = Sleeps()
    fake.stall_next(1, seconds=0.8, path="buildWithParameters")
    with client_for(fake, timeout_s=0.3, sleep=sleeps) as client, \
            pytest.raises(JenkinsUnavailable, match="may have reached Jenkins"):
        client.trigger(JOB, {"app_name": "a"})
    assert sleeps == []
    deadline = time.monotonic() + 5
    while not fake.builds(JOB) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(fake.builds(JOB)) == 1  # it did reach Jenkins: a retry would have started a second build


# credentials and permissions


def test_a_bad_token(fake: FakeJenkins) -> None:
    with client_for(fake, token="bad-token-123456") as client, pytest.raises(JenkinsAuthError) as e:
        client.whoami()
    assert e.value.status == 401
    assert "'admin'" in str(e.value) and "API token" in str(e.value)
    assert "bad-token-123456" not in str(e.value) and "bad-token-123456" not in repr(client)


def test_a_missing_permission() -> None:
    with FakeJenkins(users={"viewer": "viewer-token-0001"}, readonly_users=["viewer"]) as fake, \
            client_for(fake, user="viewer") as client:
        fake.add_job(JOB)
        assert client.job_exists(JOB)
        with pytest.raises(JenkinsAuthError, match="missing the Job/Build permission") as e:
            client.trigger(JOB, {"app_name": "a"})
        assert e.value.status == 403 and "'viewer' may not build job" in str(e.value)


def test_every_error_is_a_waap_error() -> None:
    for cls in (JenkinsAuthError, JenkinsNotFound, JenkinsUnavailable, BuildCancelled, WaitTimeout, UnsafeArchive):
        assert issubclass(cls, WaapError)
    for cls in (JenkinsAuthError, JenkinsNotFound, JenkinsUnavailable, BuildCancelled, WaitTimeout):
        assert issubclass(cls, JenkinsError)


def test_the_token_travels_only_in_the_authorization_header(fake: FakeJenkins, client: JenkinsClient,
                                                            tmp_path: Path) -> None:
    build, info = run(client, {"app_name": "a", "app_args": ARGS}, on_console=lambda _: None)
    client.download_artifacts(build, tmp_path / "out", info=info)
    token = fake.token()
    assert len(fake.requests) > 5
    for seen in fake.requests:
        assert token not in seen.path and token.encode() not in seen.body
        assert seen.headers["Authorization"].startswith("Basic ") and seen.user == "admin"
        assert seen.headers["User-Agent"].startswith("waap/")


# URLs


def test_urls_stay_on_the_configured_base_whatever_jenkins_advertises(tmp_path: Path) -> None:
    with FakeJenkins(advertised_url="http://jenkins.invalid:8080/") as fake, client_for(fake) as client:
        fake.add_job(JOB)
        build, info = run(client, {"app_name": "a"})
        assert info["url"].startswith("http://jenkins.invalid:8080/")
        assert build.url.startswith(fake.url)
        files = client.download_artifacts(build, tmp_path / "out", info=info)
        assert [p.relative_to(tmp_path / "out").as_posix() for p in files] == ["out/params.txt"]


def test_a_jenkins_under_a_context_path() -> None:
    with FakeJenkins(prefix="/jenkins") as fake, client_for(fake) as client:
        fake.add_job(JOB)
        assert fake.url.endswith("/jenkins/")
        _, info = run(client, {"app_name": "a"})
        assert info["result"] == "SUCCESS"


# artifacts


def test_artifacts_are_downloaded_with_their_paths(fake: FakeJenkins, client: JenkinsClient, tmp_path: Path) -> None:
    build, info = run(client, {"app_name": "waggle/plugin-objectcounter:0.0.0", "app_args": ARGS})
    files = client.download_artifacts(build, tmp_path / "out", info=info)
    assert files == [tmp_path / "out" / "out" / "params.txt"]
    assert files[0].read_text() == RECORDED["artifact"]["text"]  # what the real job archived
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o644
    assert fake.requests_to("*zip*/archive.zip")
    with pytest.raises(ArtifactError, match="not empty"):
        client.download_artifacts(build, tmp_path / "out", info=info)


def test_artifacts_one_by_one_when_no_zip_is_offered(fake: FakeJenkins, client: JenkinsClient,
                                                     tmp_path: Path) -> None:
    build, info = run(client, {"app_name": "a"})
    fake.respond("GET", f"/job/{JOB}/1/artifact/*zip*/archive.zip", 404, b"")
    files = client.download_artifacts(build, tmp_path / "one", info=info)
    assert [p.read_text() for p in files] == ["a\n\n"]
    assert fake.requests_to(f"/job/{JOB}/1/artifact/out/params.txt")


def test_no_artifacts(fake: FakeJenkins, client: JenkinsClient, tmp_path: Path) -> None:
    fake.executor = lambda ctx: "SUCCESS"
    build, _info = run(client, {"app_name": "a"})
    assert client.download_artifacts(build, tmp_path / "none") == []
    assert not (tmp_path / "none").exists()


def test_an_unsafe_archive_from_jenkins_is_refused(fake: FakeJenkins, client: JenkinsClient, tmp_path: Path) -> None:
    build, info = run(client, {"app_name": "a"})
    fake.respond("GET", f"/job/{JOB}/1/artifact/*zip*/archive.zip", 200,
                 _zip([("archive/ok.txt", b"ok"), ("archive/../../escape.txt", b"x")]))
    with pytest.raises(UnsafeArchive, match="climbs out"):
        client.download_artifacts(build, tmp_path / "out", info=info)
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape.txt").exists()
    with pytest.raises(UnsafeArchive, match="larger than the limit"):
        client.download_artifacts(build, tmp_path / "out", info=info, limits=ArchiveLimits(max_bytes=10))


def _zip(entries: List[Tuple[Any, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("../x", b"x")], "climbs out"),
        ([("a/../../x", b"x")], "climbs out"),
        ([("/etc/cron.d/x", b"x")], "absolute path"),
        ([("C:/x", b"x")], "absolute path"),
        ([("a\\..\\x", b"x")], "backslash"),
        ([(_entry("link", stat.S_IFLNK | 0o777), b"/etc/passwd")], "symbolic link"),
        ([(_entry("fifo", stat.S_IFIFO | 0o644), b"")], "special file"),
        ([(_entry("dev", stat.S_IFCHR | 0o644), b"")], "special file"),
        ([("a.txt", b"1"), ("./a.txt", b"2")], "appears twice"),
        ([("a", b"file"), ("a/b", b"below a file")], "both a file and a folder"),
    ],
)
def test_unsafe_archives_are_refused_whole(tmp_path: Path, entries: List[Tuple[Any, bytes]], message: str) -> None:
    data = _zip([("archive/first.txt", b"written before the bad entry?"), *entries])
    with pytest.raises(UnsafeArchive, match=message):
        extract_zip(io.BytesIO(data), tmp_path / "out", strip_prefix="archive/")
    assert not (tmp_path / "out").exists()
    assert {p.name for p in tmp_path.rglob("*")} == set()


def test_archive_limits(tmp_path: Path) -> None:
    many = _zip([(f"f{i}", b"x") for i in range(5)])
    with pytest.raises(UnsafeArchive, match="5 entries, more than the limit of 3"):
        extract_zip(io.BytesIO(many), tmp_path / "a", limits=ArchiveLimits(max_files=3))
    big = _zip([("big", b"\0" * 100_000), ("small", b"x")])  # compresses to almost nothing: a tiny bomb
    assert len(big) < 2000
    with pytest.raises(UnsafeArchive, match="more than the limit"):
        extract_zip(io.BytesIO(big), tmp_path / "b", limits=ArchiveLimits(max_bytes=50_000))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(UnsafeArchive, match="not a valid zip"):
        extract_zip(io.BytesIO(b"PK\x03\x04 truncated"), tmp_path / "c")


def test_a_safe_archive_is_extracted_plainly(tmp_path: Path) -> None:
    data = _zip([
        ("archive/", b""), ("archive/run/", b""), ("archive/run/manifest.json", b"{}"),
        (_entry("archive/run/tool", stat.S_IFREG | 0o6755), b"#!/bin/sh\n"), ("archive/./run/.hidden", b"h"),
    ])
    (tmp_path / "out").mkdir()
    files = extract_zip(io.BytesIO(data), tmp_path / "out", strip_prefix="archive/")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in files) == [
        "run/.hidden", "run/manifest.json", "run/tool"]
    assert stat.S_IMODE((tmp_path / "out/run/tool").stat().st_mode) == 0o644  # no setuid, no exec from an archive
    assert json.loads((tmp_path / "out/run/manifest.json").read_text()) == {}
