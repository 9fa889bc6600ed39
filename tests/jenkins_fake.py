"""A fake Jenkins for tests: an HTTP server on 127.0.0.1 that speaks the REST protocol WaAP uses, with answers built
from the recorded responses of a real Jenkins 2.516.2 (``tests/data/jenkins/responses.json``): the same status
codes, headers (``Location``, ``X-Text-Size``, ``X-More-Data``, ``X-Jenkins``), JSON shapes, error pages and console
annotations. It also behaves like the recording: parameters the job does not define are dropped silently, a query
string past the header limit gets ``400 Request header is too large``, API tokens need no crumb but passwords do.

Builds are "executed" by a callable the test gives (``executor``): it gets a ``BuildContext`` (the parameters as
Jenkins puts them in the environment, a workspace, a folder whose files become the artifacts, a console) and
returns the result. Every request is recorded (``requests``), faults can be injected (``fail_next``,
``stall_next``), and any path can answer a recorded response as it is (``replay``).

    with FakeJenkins(executor=echo_parameters) as fake:
        fake.add_job("waap-fixture")
        ... JENKINS_URL=fake.url, JENKINS_USER="admin", JENKINS_TOKEN=fake.token("admin") ...
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import itertools
import json
import mimetypes
import re
import secrets
import shutil
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = [
    "FIXTURE_CONFIG",
    "RECORDED",
    "BuildContext",
    "FakeBuild",
    "FakeJenkins",
    "Seen",
    "config_xml",
    "echo_parameters",
    "run_directory_executor",
]

DATA = Path(__file__).resolve().parent / "data" / "jenkins"
RECORDED: Dict[str, Any] = json.loads((DATA / "responses.json").read_text(encoding="utf-8"))
FIXTURE_CONFIG = (DATA / "fixture-job.config.xml").read_text(encoding="utf-8")
VERSION = "2.516.2"
# the real annotations of the recorded console, reused in order
ANNOTATIONS = re.findall(r"\x1b\[8mha:[^\x1b]*\x1b\[0m", RECORDED["console_progressive_end"]["text"])
_ANNOTATION = re.compile(r"\x1b\[8mha:[^\x1b]*\x1b\[0m")
_QUIET = "In the quiet period. Expires in 4.9 sec"
WHY = {
    "waiting": _QUIET,
    "blocked": "Build #1 is already in progress (ETA: 4.2 sec)",
    "buildable": "Waiting for next available executor on ‘nx’",
}
_PERMISSIONS = {"build": "Job/Build", "cancel": "Job/Cancel", "configure": "Job/Configure", "create": "Job/Create"}


@dataclass
class Seen:
    """One request as the fake received it."""

    method: str
    path: str  # as sent: path and query string
    headers: Dict[str, str]
    body: bytes
    user: Optional[str] = None
    at: float = field(default_factory=time.monotonic)  # when its head arrived


@dataclass(frozen=True)
class ParamDef:
    name: str
    cls: str  # e.g. hudson.model.StringParameterDefinition
    default: str

    @property
    def value_cls(self) -> str:
        return self.cls.replace("Definition", "Value")


class BuildContext:
    """What a build's executor gets. ``params``: the job's parameters as received, defaults filled in, undefined
    ones dropped (Jenkins puts them in the environment under these names); ``env``: those plus BUILD_NUMBER,
    JOB_NAME, BUILD_URL, WORKSPACE, JENKINS_URL; ``artifacts``: files written there are archived."""

    def __init__(self, build: FakeBuild, fake: FakeJenkins) -> None:
        self.build = build
        self.job = build.job
        self.number = build.number
        self.params = dict(build.params)
        self.workspace = build.workspace
        self.artifacts = build.archive
        self.stopped = build.stopped
        self.env = {
            **self.params,
            "BUILD_NUMBER": str(build.number), "BUILD_ID": str(build.number), "JOB_NAME": build.job,
            "BUILD_URL": f"{fake.advertised}job/{quote(build.job)}/{build.number}/", "JENKINS_URL": fake.advertised,
            "WORKSPACE": str(build.workspace),
        }
        self._fake = fake

    def log(self, text: str) -> None:
        """Append console text (one or more lines) as a step's output."""
        for line in text.splitlines():
            self._fake._log(self.build, line)

    def step(self, name: str) -> None:
        """A ``[Pipeline] name`` line, annotated as Jenkins does."""
        self._fake._log(self.build, f"[Pipeline] {name}", annotate=True)

    def sleep(self, seconds: float) -> bool:
        """Wait like a running step; False when the build was stopped meanwhile."""
        return not self.stopped.wait(seconds)


Executor = Callable[[BuildContext], Optional[str]]


@dataclass
class FakeBuild:
    job: str
    number: int
    params: Dict[str, str]
    queue_id: int
    workspace: Path
    archive: Path
    timestamp_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    started: float = field(default_factory=time.monotonic)
    building: bool = True
    result: Optional[str] = None
    duration_ms: int = 0
    estimated_ms: int = -1
    artifacts: List[str] = field(default_factory=list)
    log: bytearray = field(default_factory=bytearray)
    stopped: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    stopped_by: Optional[str] = None
    thread: Optional[threading.Thread] = None
    ended: Optional[float] = None  # time.monotonic() when it stopped building

    def console_text(self) -> str:
        return _ANNOTATION.sub("", self.log.decode("utf-8", "replace")).replace("\r\n", "\n")


@dataclass
class _QueueEntry:
    id: int
    job: str
    params: Dict[str, str]
    states: List[str]
    outcome: str
    since_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    left: bool = False
    cancelled: bool = False
    build: Optional[FakeBuild] = None


@dataclass
class _Job:
    name: str
    config: str
    params: List[ParamDef]
    description: str = ""
    builds: List[FakeBuild] = field(default_factory=list)
    next_number: int = 1


@dataclass
class _Fault:
    count: int
    status: Optional[int]
    delay_s: float
    path: Optional[str]
    method: Optional[str]


def config_xml(parameters: Iterable[Tuple[str, str, str]], *, description: str = "WaAP test job",
               label: str = "nx") -> str:
    """A pipeline job's config.xml with string/text parameters given as (name, kind, default)."""
    defs = []
    for name, kind, default in parameters:
        cls = "hudson.model.TextParameterDefinition" if kind == "text" else "hudson.model.StringParameterDefinition"
        defs.append(f"        <{cls}><name>{escape(name)}</name><defaultValue>{escape(default)}</defaultValue>"
                    f"<trim>false</trim></{cls}>")
    return (
        "<?xml version='1.1' encoding='UTF-8'?>\n<flow-definition plugin=\"workflow-job\">\n"
        f"  <description>{escape(description)}</description>\n  <keepDependencies>false</keepDependencies>\n"
        "  <properties>\n    <hudson.model.ParametersDefinitionProperty>\n      <parameterDefinitions>\n"
        + "\n".join(defs) + "\n      </parameterDefinitions>\n    </hudson.model.ParametersDefinitionProperty>\n"
        "  </properties>\n  <definition class=\"org.jenkinsci.plugins.workflow.cps.CpsFlowDefinition\" "
        f"plugin=\"workflow-cps\">\n    <script>node('{escape(label)}') {{ sh 'true' }}</script>\n"
        "    <sandbox>true</sandbox>\n  </definition>\n  <disabled>false</disabled>\n</flow-definition>\n"
    )


def parse_job_config(text: str) -> Tuple[List[ParamDef], str]:
    """The parameter definitions and the description of a job's config.xml (raises ``ET.ParseError``)."""
    root = ET.fromstring(text.encode("utf-8"))
    params: List[ParamDef] = []
    for prop in root.iter("hudson.model.ParametersDefinitionProperty"):
        for holder in prop.iter("parameterDefinitions"):
            for definition in holder:
                name = definition.findtext("name")
                if name:
                    params.append(ParamDef(name, definition.tag, definition.findtext("defaultValue") or ""))
    return params, root.findtext("description") or ""


def echo_parameters(ctx: BuildContext) -> str:
    """What the recorded fixture job does: write app_name and app_args to out/params.txt, archive it."""
    ctx.step("sh")
    ctx.log("+ mkdir -p out")
    out = ctx.artifacts / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "params.txt").write_text(f"{ctx.params.get('app_name', '')}\n{ctx.params.get('app_args', '')}\n",
                                    encoding="utf-8")
    ctx.log("+ echo done\ndone")
    ctx.step("archiveArtifacts")
    ctx.log("Archiving artifacts")
    return "SUCCESS"


def run_directory_executor(
    *,
    result: str = "SUCCESS",
    status: str = "complete",
    stop_reason: str = "exited",
    exit_code: Optional[int] = 0,
    seconds: float = 0.0,
    summary: Optional[Mapping[str, Any]] = None,
    runs: int = 1,
) -> Executor:
    """An executor standing in for the agent half: it "profiles" for ``seconds`` and archives a minimal run
    directory per run (``manifest.json`` with status, stop_reason, exit_code; ``summary.json`` when given;
    ``app.log``) under ``<session>/<target>-r<N>/``, then ends with ``result``."""

    def execute(ctx: BuildContext) -> str:
        ctx.step("sh")
        ctx.log(f"+ waap agent  # {ctx.params.get('app_name', '')}")
        session = ctx.artifacts / f"20260101T000000Z-{ctx.number:06x}"
        if seconds and not ctx.sleep(seconds):
            return "ABORTED"
        for n in range(1, runs + 1):
            run = session / f"default-r{n}"
            run.mkdir(parents=True)
            manifest = {
                "schema_version": 1, "run_id": f"{session.name}-r{n}", "session_id": session.name,
                "app": {"image": ctx.params.get("app_name", "")}, "status": status, "finished": True,
                "stop_reason": stop_reason, "exit_code": exit_code, "duration_s": seconds,
            }
            (run / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            (run / "app.log").write_text("hello from the app\n", encoding="utf-8")
            if summary is not None:
                (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
            ctx.log(f"  {status}: {stop_reason}, exit code {exit_code}")
        ctx.step("archiveArtifacts")
        ctx.log("Archiving artifacts")
        return result

    return execute


def _parse_tree(spec: str) -> Dict[str, Any]:
    """Jenkins' ``tree=`` query: ``a,b[c,d[e]],f{0,3}`` → nested dict (None for leaves); ranges are ignored."""
    pos = 0

    def parse() -> Dict[str, Any]:
        nonlocal pos
        fields: Dict[str, Any] = {}
        while pos < len(spec):
            m = re.compile(r"[A-Za-z0-9_$]+").match(spec, pos)
            if not m:
                break
            pos = m.end()
            sub = None
            if pos < len(spec) and spec[pos] == "[":
                pos += 1
                sub = parse()
                pos += 1  # ]
            if pos < len(spec) and spec[pos] == "{":
                pos = spec.index("}", pos) + 1
            fields[m.group()] = sub
            if pos < len(spec) and spec[pos] == ",":
                pos += 1
                continue
            break
        return fields

    return parse()


def _apply_tree(value: Any, tree: Optional[Dict[str, Any]]) -> Any:
    if tree is None:
        return value
    if isinstance(value, list):
        return [_apply_tree(v, tree) for v in value]
    if isinstance(value, dict):
        out = {"_class": value["_class"]} if "_class" in value else {}
        for key, sub in tree.items():
            if key in value:
                out[key] = _apply_tree(value[key], sub)
        return out
    return value


def _page(title: str, message: Optional[str] = None) -> bytes:
    """An error page like Jetty's/Jenkins' (the recording keeps their title and message)."""
    body = f"<h1>{escape(title)}</h1>" + (f"<p><b>Message</b> {escape(message)}</p>" if message else "")
    return (f"<!doctype html><html lang=\"en\"><head><title>{escape(title)}</title></head><body>{body}"
            "</body></html>").encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeJenkins

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return  # a client that gave up (a timeout test) or went away
        traceback.print_exc()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 10  # idle keep-alive connections are closed

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle_one_request(self) -> None:
        # like BaseHTTPRequestHandler's, with Jetty's limit on the request head instead of a 64 KiB line limit
        try:
            self.raw_requestline = self.rfile.readline(4 * 1024 * 1024)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            self.server.fake._handle(self)
            self.wfile.flush()
        except (TimeoutError, ConnectionError):
            self.close_connection = True

    def reply(self, status: int, body: bytes = b"", *, content_type: Optional[str] = None,
              headers: Optional[Mapping[str, str]] = None, jenkins: bool = True, close: bool = False) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("X-Content-Type-Options", "nosniff")
        if jenkins:
            self.send_header("X-Jenkins", VERSION)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class FakeJenkins:
    """A fake Jenkins controller on 127.0.0.1 (``url``), started by ``with`` or ``start()``.

    ``users``: user → API token (no crumb needed, as on the real one); ``passwords``: user → password (POSTs need a
    crumb); ``readonly_users``: may read but not build/configure (403 naming the permission); ``require_crumb``:
    crumbs needed even with tokens; ``crumbs_valid=False``: every crumb is refused (a proxy that drops the session
    cookie). ``queue_states``: the states a new queue item shows, one per poll ("waiting", "blocked",
    "buildable"), before it leaves the queue (at once when empty; the "waiting" quiet period is skipped when the
    trigger says ``delay=0sec``); ``queue_outcome``: "build" or "cancel" (as if someone cancelled it).
    ``advertised_url``: the root URL Jenkins believes it has (used in Location and JSON ``url``s), e.g. a
    misconfigured one; ``prefix``: a context path such as ``/jenkins``."""

    def __init__(
        self,
        *,
        users: Optional[Mapping[str, str]] = None,
        passwords: Optional[Mapping[str, str]] = None,
        readonly_users: Sequence[str] = (),
        require_crumb: bool = False,
        crumbs_valid: bool = True,
        executor: Optional[Executor] = None,
        queue_states: Sequence[str] = (),
        queue_outcome: str = "build",
        max_header_bytes: int = 8192,
        advertised_url: Optional[str] = None,
        prefix: str = "",
        full_names: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.users = dict(users if users is not None else {"admin": "11" + secrets.token_hex(16)})
        self.passwords = dict(passwords or {})
        self.readonly_users = set(readonly_users)
        self.require_crumb = require_crumb
        self.crumbs_valid = crumbs_valid
        self.executor: Executor = executor or echo_parameters
        self.queue_states = list(queue_states)
        self.queue_outcome = queue_outcome
        self.max_header_bytes = max_header_bytes
        self.prefix = prefix.rstrip("/")
        self.full_names = dict(full_names or {"admin": "Lab Administrator"})
        self._advertised = advertised_url
        self.requests: List[Seen] = []
        self.jobs: Dict[str, _Job] = {}
        self.queue: Dict[int, _QueueEntry] = {}
        self._queue_ids = itertools.count(25)  # the recording's first item was 25
        self._crumbs: Dict[str, str] = {}
        self._crumb_epoch = 0
        self._faults: List[_Fault] = []
        self._overrides: Dict[Tuple[str, str], List[Tuple[int, Dict[str, str], bytes]]] = {}
        self._lock = threading.RLock()
        self._workdir = Path(tempfile.mkdtemp(prefix="fake-jenkins-"))
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._annotations = itertools.cycle(ANNOTATIONS)

    # life cycle

    def start(self) -> FakeJenkins:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-jenkins", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        with self._lock:
            builds = [b for job in self.jobs.values() for b in job.builds]
        for build in builds:
            build.stopped.set()
        for build in builds:
            if build.thread is not None:
                build.thread.join(timeout=10)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> FakeJenkins:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        assert self._server is not None, "start the fake first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The URL clients use (with a trailing slash)."""
        return f"http://127.0.0.1:{self.port}{self.prefix}/"

    @property
    def advertised(self) -> str:
        """The root URL this Jenkins puts in its answers."""
        return self._advertised or self.url

    def token(self, user: str = "admin") -> str:
        return self.users[user]

    # what tests set up and look at

    def add_job(self, name: str, config: str = FIXTURE_CONFIG) -> None:
        params, description = parse_job_config(config)
        with self._lock:
            self.jobs[name] = _Job(name, config, params, description)

    def builds(self, job: str) -> List[FakeBuild]:
        with self._lock:
            return list(self.jobs[job].builds)

    def wait_for_builds(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for build in [b for job in list(self.jobs.values()) for b in job.builds]:
            if not build.done.wait(max(0.0, deadline - time.monotonic())):
                raise AssertionError(f"build {build.job} #{build.number} did not end within {timeout} s")

    def requests_to(self, path_part: str, method: Optional[str] = None) -> List[Seen]:
        with self._lock:
            return [r for r in self.requests if path_part in r.path and (method is None or r.method == method)]

    def expire_crumbs(self) -> None:
        """Every crumb issued so far goes stale (as after a restart, or a session that timed out)."""
        with self._lock:
            self._crumbs.clear()
            self._crumb_epoch += 1

    def fail_next(self, count: int = 1, *, status: int = 503, path: Optional[str] = None,
                  method: Optional[str] = None) -> None:
        """The next ``count`` requests (whose path contains ``path``) get ``status`` without being acted on."""
        with self._lock:
            self._faults.append(_Fault(count, status, 0.0, path, method))

    def stall_next(self, count: int = 1, *, seconds: float, path: Optional[str] = None,
                   method: Optional[str] = None) -> None:
        """The next ``count`` requests wait ``seconds`` before being handled (then are handled normally)."""
        with self._lock:
            self._faults.append(_Fault(count, None, seconds, path, method))

    def respond(self, method: str, path: str, status: int, body: bytes = b"",
                headers: Optional[Mapping[str, str]] = None, *, times: int = 1_000_000) -> None:
        """Answer ``method path`` (query string ignored) with this response, ``times`` times."""
        with self._lock:
            self._overrides[(method, self.prefix + path)] = [(status, dict(headers or {}), body)] * times

    def replay(self, method: str, path: str, key: str, **kwargs: Any) -> None:
        """Answer ``method path`` with the recorded response ``key`` of responses.json, as it was."""
        rec = RECORDED[key]
        body = (json.dumps(rec["json"]).encode("utf-8") if "json" in rec
                else str(rec.get("text", "")).encode("utf-8"))
        self.respond(method, path, rec["status"], body, rec.get("headers", {}), **kwargs)

    # request handling

    def _handle(self, h: _Handler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        head = len(h.raw_requestline) + sum(len(k) + len(v) + 4 for k, v in h.headers.items())
        user, by_password = self._user_of(h)
        seen = Seen(h.command, h.path, dict(h.headers.items()), b"", user)
        with self._lock:
            self.requests.append(seen)
        if head > self.max_header_bytes:
            # Jetty refuses the request for its head (recorded: query_string_20k_param); the body is read only so
            # that closing the connection does not reset it under the client's feet
            h.rfile.read(min(length, 64 * 1024 * 1024))
            rec = RECORDED["query_string_20k_param"]
            h.reply(rec["status"], _page("HTTP Status 400 – Bad Request", "Request header is too large"),
                    content_type=rec["headers"]["Content-Type"], jenkins=False, close=True)
            return
        seen.body = h.rfile.read(length) if length else b""
        parts = urlsplit(h.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}

        fault = self._take_fault(h.command, path)
        if fault is not None:
            if fault.delay_s:
                time.sleep(fault.delay_s)
            if fault.status is not None:
                h.reply(fault.status, _page(f"HTTP Status {fault.status} – Service Unavailable"),
                        content_type="text/html;charset=utf-8", jenkins=False)
                return
        with self._lock:
            queued = self._overrides.get((h.command, path))
            override = queued.pop(0) if queued else None
        if override is not None:
            status, recorded, body = override
            headers = {k: v for k, v in recorded.items() if k not in ("Content-Type", "X-Content-Type-Options")}
            h.reply(status, body, content_type=recorded.get("Content-Type"), headers=headers, jenkins=False)
            return
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                self._not_found(h)
                return
            path = path[len(self.prefix):]
        if not self._authorized(h, user, by_password):
            return
        self._route(h, path, query, seen.body, user or "")

    def _take_fault(self, method: str, path: str) -> Optional[_Fault]:
        with self._lock:
            for fault in self._faults:
                if fault.count > 0 and (fault.path is None or fault.path in path) and \
                        (fault.method is None or fault.method == method):
                    fault.count -= 1
                    return fault
        return None

    def _user_of(self, h: _Handler) -> Tuple[Optional[str], bool]:
        """(user, authenticated by password); user None without credentials, "" with wrong ones."""
        header = h.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None, False
        try:
            user, _, secret = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return "", False
        if secret and self.users.get(user) == secret:
            return user, False
        if secret and self.passwords.get(user) == secret:
            return user, True
        return "", False

    def _authorized(self, h: _Handler, user: Optional[str], by_password: bool) -> bool:
        if user is None:  # anonymous has no Overall/Read here (recorded: no_auth)
            h.reply(403, _page("?"), content_type="text/html;charset=UTF-8")
            return False
        if user == "":  # recorded: bad_token
            h.reply(401, _page("HTTP Status 401 – Unauthorized", "Unauthorized"),
                    content_type="text/html;charset=utf-8", jenkins=False)
            return False
        if h.command == "POST" and (self.require_crumb or by_password):
            sid = self._session_of(h)
            with self._lock:
                expected = self._crumbs.get(sid or "")
            crumb = h.headers.get("Jenkins-Crumb")
            if not self.crumbs_valid or expected is None or crumb != expected:
                rec = RECORDED["password_post_without_crumb"]
                h.reply(403, _page("HTTP Status 403 – Forbidden", "No valid crumb was included in the request"),
                        content_type=rec["headers"]["Content-Type"], jenkins=False)
                return False
        return True

    @staticmethod
    def _session_of(h: _Handler) -> Optional[str]:
        for part in h.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "JSESSIONID.fake":
                return value
        return None

    def _denied(self, h: _Handler, user: str, action: str) -> bool:
        if user in self.readonly_users:
            message = f"{user} is missing the {_PERMISSIONS[action]} permission"
            h.reply(403, _page("HTTP Status 403 – Forbidden", message), content_type="text/html;charset=UTF-8")
            return True
        return False

    def _not_found(self, h: _Handler) -> None:
        h.reply(404, _page(" - Jenkins"), content_type="text/html;charset=UTF-8")  # recorded: missing_job

    def _json(self, h: _Handler, data: Any, query: Mapping[str, str], status: int = 200,
              headers: Optional[Mapping[str, str]] = None) -> None:
        if "tree" in query:
            data = _apply_tree(data, _parse_tree(query["tree"]))
        h.reply(status, json.dumps(data).encode("utf-8"), content_type="application/json;charset=UTF-8",
                headers=headers)

    def _route(self, h: _Handler, path: str, query: Mapping[str, str], body: bytes, user: str) -> None:
        method = h.command
        path = path.rstrip("/") or "/"  # Stapler serves …/buildWithParameters/ as …/buildWithParameters
        if path == "/api/json" and method == "GET":
            self._json(h, self._root_json(), query)
        elif path in ("/me/api/json", "/user/" + user + "/api/json") and method == "GET":
            self._json(h, self._whoami(user), query)
        elif path == "/whoAmI/api/json" and method == "GET":
            self._json(h, {"_class": "hudson.security.WhoAmI", "anonymous": False, "authenticated": True,
                           "authorities": ["authenticated"], "details": None, "name": user,
                           "toString": f"UsernamePasswordAuthenticationToken [Principal={user}]"}, query)
        elif path == "/crumbIssuer/api/json" and method == "GET":
            self._issue_crumb(h, query)
        elif path == "/createItem":
            if method != "POST":
                self._requires_post(h)
            elif not self._denied(h, user, "create"):
                self._create_item(h, query.get("name", ""), body)
        elif path == "/queue/cancelItem":
            if method != "POST":
                self._requires_post(h)
            elif not self._denied(h, user, "cancel"):
                self._cancel_item(h, query.get("id", ""))
        elif m := re.fullmatch(r"/queue/item/(\d+)/api/json", path):
            self._queue_item(h, int(m.group(1)), query)
        elif m := re.fullmatch(r"/job/([^/]+)(/.*)?", path):
            with self._lock:
                job = self.jobs.get(m.group(1))
            if job is None:
                self._not_found(h)
            else:
                self._route_job(h, job, m.group(2) or "/", query, body, user)
        elif path in ("", "/") and method == "GET":
            h.reply(200, b"<html><title>Dashboard [Jenkins]</title></html>", content_type="text/html;charset=UTF-8")
        else:
            self._not_found(h)

    def _route_job(self, h: _Handler, job: _Job, rest: str, query: Mapping[str, str], body: bytes,
                   user: str) -> None:
        method = h.command
        if rest == "/api/json" and method == "GET":
            self._json(h, self._job_json(job), query)
        elif rest == "/config.xml":
            if method == "GET":
                text = re.sub(r"^<\?xml[^>]*\?>", '<?xml version="1.1" encoding="UTF-8"?>', job.config)
                h.reply(200, text.encode("utf-8"), content_type="application/xml", jenkins=False)
            elif method == "POST" and not self._denied(h, user, "configure"):
                try:
                    params, description = parse_job_config(body.decode("utf-8"))
                except (ET.ParseError, UnicodeDecodeError) as e:
                    h.reply(500, _page("Jenkins", f"Failed to parse config.xml: {e}"),
                            content_type="text/html;charset=UTF-8")
                    return
                with self._lock:
                    job.config, job.params, job.description = body.decode("utf-8"), params, description
                h.reply(200, jenkins=False)
        elif rest == "/buildWithParameters":
            if method != "POST":
                self._requires_post(h)
            elif not self._denied(h, user, "build"):
                self._build_with_parameters(h, job, query, body)
        elif rest in ("/", ""):
            h.reply(200, f"<html><title>{escape(job.name)} [Jenkins]</title></html>".encode(),
                    content_type="text/html;charset=UTF-8")
        elif m := re.fullmatch(r"/(\d+)(/.*)?", rest):
            with self._lock:
                build = next((b for b in job.builds if b.number == int(m.group(1))), None)
            if build is None:
                self._not_found(h)
            else:
                self._route_build(h, build, m.group(2) or "/", query, user)
        else:
            self._not_found(h)

    def _route_build(self, h: _Handler, build: FakeBuild, rest: str, query: Mapping[str, str], user: str) -> None:
        method = h.command
        if rest == "/api/json" and method == "GET":
            self._json(h, self._build_json(build), query)
        elif rest == "/logText/progressiveText" and method == "GET":
            try:
                start = max(0, int(query.get("start", "0")))
            except ValueError:
                start = 0
            with self._lock:
                data, size, more = bytes(build.log[start:]), len(build.log), build.building
            headers = {"X-Text-Size": str(max(size, start))}
            if more:
                headers["X-More-Data"] = "true"
            h.reply(200, data, content_type="text/plain;charset=UTF-8", headers=headers, jenkins=False)
        elif rest == "/consoleText" and method == "GET":
            with self._lock:
                text = build.console_text()
            h.reply(200, text.encode("utf-8"), content_type="text/plain;charset=UTF-8", jenkins=False)
        elif rest == "/stop":
            if method != "POST":
                self._requires_post(h)
            elif not self._denied(h, user, "cancel"):
                if build.building and not build.stopped.is_set():
                    build.stopped_by = user
                    build.stopped.set()
                    self._log(build, f"Aborted by {user}")
                h.reply(302, headers={"Location": self._build_url(build)}, content_type="text/html;charset=UTF-8")
        elif rest == "/artifact/*zip*/archive.zip" and method == "GET":
            with self._lock:
                names = list(build.artifacts)
            if not names:
                self._not_found(h)
                return
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for rel in names:
                    archive.write(build.archive / rel, "archive/" + rel)  # Jenkins prefixes the folder's name
            h.reply(200, buffer.getvalue(), content_type="application/zip", jenkins=False)
        elif rest.startswith("/artifact/") and method == "GET":
            rel = rest[len("/artifact/"):]
            with self._lock:
                known = rel in build.artifacts
            if not known:
                self._not_found(h)
                return
            kind = mimetypes.guess_type(rel)[0] or "application/octet-stream"
            h.reply(200, (build.archive / rel).read_bytes(), content_type=kind, jenkins=False)
        elif rest in ("/", "") and method == "GET":
            h.reply(200, f"<html><title>{escape(build.job)} #{build.number} [Jenkins]</title></html>".encode(),
                    content_type="text/html;charset=UTF-8")
        else:
            self._not_found(h)

    def _requires_post(self, h: _Handler) -> None:
        h.reply(405, _page("HTTP Status 405 – Method Not Allowed", "This URL requires POST"),
                content_type="text/html;charset=UTF-8")

    # Jenkins behaviour

    def _issue_crumb(self, h: _Handler, query: Mapping[str, str]) -> None:
        sid = self._session_of(h)
        headers = {}
        with self._lock:
            if sid is None or sid not in self._crumbs:
                sid = sid or secrets.token_hex(12)
                seed = f"{sid}:{self._crumb_epoch}:{secrets.token_hex(8)}".encode()
                self._crumbs[sid] = hashlib.sha256(seed).hexdigest()
                headers["Set-Cookie"] = f"JSESSIONID.fake={sid}; Path=/; HttpOnly"
            crumb = self._crumbs[sid]
        data = copy.deepcopy(RECORDED["crumb"]["json"])
        data["crumb"] = crumb
        self._json(h, data, query, headers=headers)

    def _create_item(self, h: _Handler, name: str, body: bytes) -> None:
        with self._lock:
            exists = name in self.jobs
        if exists or not name:
            message = f"A job already exists with the name ‘{name}’" if name else "No name is specified"
            h.reply(400, _page("Jenkins - Jenkins", message), content_type="text/html;charset=UTF-8")
            return
        try:
            self.add_job(name, body.decode("utf-8"))
        except (ET.ParseError, UnicodeDecodeError) as e:
            h.reply(500, _page("Jenkins", f"Failed to parse config.xml: {e}"), content_type="text/html;charset=UTF-8")
            return
        h.reply(200, jenkins=False)  # recorded: create_job

    def _build_with_parameters(self, h: _Handler, job: _Job, query: Mapping[str, str], body: bytes) -> None:
        given = dict(query)
        content_type = h.headers.get("Content-Type", "")
        if body and content_type.startswith("application/x-www-form-urlencoded"):
            try:
                form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
            except UnicodeDecodeError:
                form = {}
            given.update({k: v[-1] for k, v in form.items()})
        # only the parameters the job defines; the rest vanish without a word (recorded: not_defined)
        params = {d.name: given.get(d.name, d.default) for d in job.params}
        states = list(self.queue_states)
        if given.get("delay") in ("0", "0sec"):
            states = [s for s in states if s != "waiting"]
        with self._lock:
            entry = _QueueEntry(next(self._queue_ids), job.name, params, states, self.queue_outcome)
            self.queue[entry.id] = entry
            if not states:
                self._leave_queue(entry)
        h.reply(201, headers={"Location": f"{self.advertised}queue/item/{entry.id}/"}, jenkins=False)

    def _leave_queue(self, entry: _QueueEntry) -> None:
        entry.left = True
        if entry.outcome == "cancel" or entry.cancelled:
            entry.cancelled = True
            return
        job = self.jobs[entry.job]
        number = job.next_number
        job.next_number += 1
        folder = self._workdir / "jobs" / job.name / "builds" / str(number)
        workspace = self._workdir / "workspace" / f"{job.name}@{number}"
        (folder / "archive").mkdir(parents=True)
        workspace.mkdir(parents=True)
        build = FakeBuild(job.name, number, entry.params, entry.id, workspace, folder / "archive")
        durations = [b.duration_ms for b in reversed(job.builds) if b.result in ("SUCCESS", "UNSTABLE")][:3]
        build.estimated_ms = int(sum(durations) / len(durations)) if durations else -1
        job.builds.append(build)
        entry.build = build
        build.thread = threading.Thread(target=self._execute, args=(build,), name=f"fake-build-{number}",
                                        daemon=True)
        build.thread.start()

    def _cancel_item(self, h: _Handler, item_id: str) -> None:
        with self._lock:
            entry = self.queue.get(int(item_id)) if item_id.isdigit() else None
            if entry is not None and not entry.left:
                entry.cancelled = True
                entry.left = True
        if entry is None:
            h.reply(404, _page("HTTP Status 404 – Not Found", "Provided queue item id doesn't exist"),
                    content_type="text/html;charset=UTF-8")
            return
        h.reply(204, jenkins=False)  # recorded: cancel_queue_item

    def _queue_item(self, h: _Handler, item_id: int, query: Mapping[str, str]) -> None:
        with self._lock:
            entry = self.queue.get(item_id)
            if entry is None:
                self._not_found(h)
                return
            if entry.left:
                data = self._left_json(entry)
            else:
                data = self._waiting_json(entry, entry.states[0])
                entry.states.pop(0)
                if not entry.states:
                    self._leave_queue(entry)
        self._json(h, data, query)

    def _execute(self, build: FakeBuild) -> None:
        ctx = BuildContext(build, self)
        user = next(iter(self.full_names.values()), "admin")
        self._log(build, f"Started by user {next(self._annotations)}{user}")
        for step in ("Start of Pipeline", "node"):
            self._log(build, f"[Pipeline] {step}", annotate=True)
        self._log(build, f"Running on {next(self._annotations)}nx in {build.workspace}")
        self._log(build, "[Pipeline] {", annotate=True)
        try:
            result = self.executor(ctx) or "SUCCESS"
        except Exception as e:  # the build fails, as a failing step would
            self._log(build, f"ERROR: {type(e).__name__}: {e}")
            result = "FAILURE"
        if build.stopped.is_set():
            result = "ABORTED"
        for step in ("}", "// node", "End of Pipeline"):
            self._log(build, f"[Pipeline] {step}", annotate=True)
        artifacts = sorted(p.relative_to(build.archive).as_posix() for p in build.archive.rglob("*")
                           if p.is_file() and not p.is_symlink())
        self._log(build, f"Finished: {result}")
        with self._lock:
            build.artifacts = artifacts
            build.result = result
            build.ended = time.monotonic()
            build.duration_ms = int((build.ended - build.started) * 1000)
            build.building = False
        build.done.set()

    def _log(self, build: FakeBuild, line: str, *, annotate: bool = False) -> None:
        text = (next(self._annotations) if annotate else "") + line + "\r\n"
        with self._lock:
            build.log += text.encode("utf-8")

    # JSON, shaped like the recording

    def _build_url(self, build: FakeBuild) -> str:
        return f"{self.advertised}job/{quote(build.job)}/{build.number}/"

    def _job_url(self, name: str) -> str:
        return f"{self.advertised}job/{quote(name)}/"

    def _parameters_action(self, job: str, params: Mapping[str, str]) -> Dict[str, Any]:
        defs = {d.name: d for d in self.jobs[job].params}
        return {
            "_class": "hudson.model.ParametersAction",
            "parameters": [{"_class": defs[name].value_cls if name in defs else "hudson.model.StringParameterValue",
                            "name": name, "value": value} for name, value in params.items()],
        }

    def _root_json(self) -> Dict[str, Any]:
        data = copy.deepcopy(RECORDED["root_api"]["json"])
        with self._lock:
            data["jobs"] = [{"_class": "org.jenkinsci.plugins.workflow.job.WorkflowJob", "name": name,
                             "url": self._job_url(name), "color": self._color(job)}
                            for name, job in self.jobs.items()]
        data["url"] = self.advertised
        return data

    def _whoami(self, user: str) -> Dict[str, Any]:
        data = copy.deepcopy(RECORDED["whoami"]["json"])
        data["id"] = user
        data["fullName"] = self.full_names.get(user, user)
        data["absoluteUrl"] = f"{self.advertised.rstrip('/')}/user/{user}"
        return data

    @staticmethod
    def _color(job: _Job) -> str:
        if not job.builds:
            return "notbuilt"
        last = job.builds[-1]
        done = next((b for b in reversed(job.builds) if not b.building), None)
        base = {"SUCCESS": "blue", "UNSTABLE": "yellow", "FAILURE": "red", "ABORTED": "aborted"}.get(
            done.result if done and done.result else "", "notbuilt")
        return base + ("_anime" if last.building else "")

    def _job_json(self, job: _Job) -> Dict[str, Any]:
        data = copy.deepcopy(RECORDED["job_api"]["json"])
        with self._lock:
            ref = [{"_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun", "number": b.number,
                    "url": self._build_url(b)} for b in reversed(job.builds)]
            queued = [e for e in self.queue.values() if e.job == job.name and not e.left]
            data.update({
                "builds": ref, "color": self._color(job), "description": job.description, "displayName": job.name,
                "fullDisplayName": job.name, "fullName": job.name, "name": job.name, "url": self._job_url(job.name),
                "nextBuildNumber": job.next_number, "inQueue": bool(queued),
                "queueItem": {"_class": "hudson.model.Queue$WaitingItem", "id": queued[0].id} if queued else None,
                "firstBuild": ref[-1] if ref else None, "lastBuild": ref[0] if ref else None,
            })
            done = [b for b in job.builds if not b.building]
            for key, results in (("lastCompletedBuild", None), ("lastSuccessfulBuild", ("SUCCESS", "UNSTABLE")),
                                 ("lastStableBuild", ("SUCCESS",)), ("lastFailedBuild", ("FAILURE",)),
                                 ("lastUnstableBuild", ("UNSTABLE",)),
                                 ("lastUnsuccessfulBuild", ("UNSTABLE", "FAILURE", "ABORTED"))):
                match = [b for b in done if results is None or b.result in results]
                data[key] = ({"_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun", "number": match[-1].number,
                              "url": self._build_url(match[-1])} if match else None)
            data["property"] = [{
                "_class": "hudson.model.ParametersDefinitionProperty",
                "parameterDefinitions": [{
                    "_class": d.cls,
                    "defaultParameterValue": {"_class": d.value_cls, "name": d.name, "value": d.default},
                    "description": None, "name": d.name, "type": d.cls.rpartition(".")[2],
                } for d in job.params],
            }] if job.params else []
        return data

    def _build_json(self, build: FakeBuild) -> Dict[str, Any]:
        template = "build_running" if build.building else "build_finished"
        data = copy.deepcopy(RECORDED[template]["json"])
        with self._lock:
            data["actions"][0] = self._parameters_action(build.job, build.params)
            job = self.jobs[build.job]
            index = job.builds.index(build)
            previous = job.builds[index - 1] if index > 0 else None
            following = job.builds[index + 1] if index + 1 < len(job.builds) else None
            data.update({
                "artifacts": [{"displayPath": Path(rel).name, "fileName": Path(rel).name, "relativePath": rel}
                              for rel in build.artifacts],
                "building": build.building, "inProgress": build.building, "result": build.result,
                "duration": build.duration_ms, "estimatedDuration": build.estimated_ms,
                "displayName": f"#{build.number}", "fullDisplayName": f"{build.job} #{build.number}",
                "id": str(build.number), "number": build.number, "queueId": build.queue_id,
                "timestamp": build.timestamp_ms, "url": self._build_url(build),
                "executor": {"_class": "hudson.model.OneOffExecutor"} if build.building else None,
                "previousBuild": {"number": previous.number, "url": self._build_url(previous)} if previous else None,
                "nextBuild": {"number": following.number, "url": self._build_url(following)} if following else None,
            })
        return data

    def _queue_common(self, entry: _QueueEntry, template: str) -> Dict[str, Any]:
        data = copy.deepcopy(RECORDED[template]["json"])
        data["actions"][0] = self._parameters_action(entry.job, entry.params)
        data.update({
            "id": entry.id, "inQueueSince": entry.since_ms, "url": f"queue/item/{entry.id}/",
            "params": "".join(f"\n{k}={v}" for k, v in entry.params.items()),
        })
        data["task"].update({"name": entry.job, "url": self._job_url(entry.job), "color": self._color(
            self.jobs[entry.job])})
        return data

    def _waiting_json(self, entry: _QueueEntry, state: str) -> Dict[str, Any]:
        data = self._queue_common(entry, "queue_item_first")
        data["why"] = WHY.get(state, state)
        if state == "waiting":
            data["timestamp"] = entry.since_ms + 5000
        else:
            data.pop("timestamp", None)
            kind = {"blocked": "BlockedItem", "buildable": "BuildableItem"}[state]
            data["_class"] = f"hudson.model.Queue${kind}"
            data["blocked"] = state == "blocked"
            data["buildable"] = state == "buildable"
            if state == "buildable":
                data["buildableStartMilliseconds"] = entry.since_ms
                data["pending"] = False
        return data

    def _left_json(self, entry: _QueueEntry) -> Dict[str, Any]:
        if entry.cancelled:
            data = self._queue_common(entry, "queue_item_cancelled")
            data["cancelled"], data["executable"] = True, None
            return data
        data = self._queue_common(entry, "queue_item_left")
        assert entry.build is not None
        data["executable"] = {"_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun",
                              "number": entry.build.number, "url": self._build_url(entry.build)}
        return data
