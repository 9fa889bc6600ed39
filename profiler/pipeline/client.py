"""A Jenkins REST client for WaAP: trigger the profiling job, follow its queue item and build, stream the console,
fetch the artifacts, and read or write a job's ``config.xml``.

Plain ``requests`` rather than python-jenkins, which puts build parameters in the query string (Jenkins answers
``400 Request header is too large`` past ~8 KB), keeps its CSRF crumb forever and waits forever by default. Here:
parameters go in a form body, every request has a timeout, transient failures are retried with backoff (a build
trigger only when it surely did not reach Jenkins, so a retry never starts two builds), a crumb is fetched only when
Jenkins asks for one and fetched afresh when it goes stale, and URLs are always built on the configured base URL
(never followed from Jenkins' answers, whose root URL may be misconfigured, so credentials go nowhere else).

Exceptions (all derive from ``profiler.errors.WaapError``)::

    JenkinsError              a request to Jenkins failed; ``status`` is the HTTP status when there was one
    ├── JenkinsAuthError      401: the user/token pair is refused; 403: the user lacks a permission
    ├── JenkinsNotFound       404: the job (run `waap jenkins apply`), queue item or build does not exist
    ├── JenkinsUnavailable    no usable answer: refused connection, timeouts, 502/503/504, after the retries
    ├── BuildCancelled        the queue item was cancelled before a build started
    └── WaitTimeout           a wait ran past its limit (the build goes on)
    ArtifactError             (artifacts.py) the artifacts cannot be written where asked
    └── UnsafeArchive         the artifacts hold unsafe paths or file types, or exceed the limits
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote, urlencode

import requests
import urllib3.exceptions

from .. import __version__
from ..errors import WaapError
from .artifacts import (
    DEFAULT_LIMITS,
    ArchiveLimits,
    ArtifactError,
    UnsafeArchive,
    clean_destination,
    extract_zip,
    make_parents,
    member_parts,
    prepare_destination,
    write_file,
)
from .settings import JenkinsSettings

__all__ = [
    "FIRST_POLL_S",
    "ArchiveLimits",
    "ArtifactError",
    "Build",
    "BuildCancelled",
    "JenkinsAuthError",
    "JenkinsClient",
    "JenkinsError",
    "JenkinsNotFound",
    "JenkinsUnavailable",
    "QueueItem",
    "QueueState",
    "UnsafeArchive",
    "WaitTimeout",
    "strip_annotations",
]

FIRST_POLL_S = 0.25  # the first pause between polls; it grows by POLL_GROWTH up to the caller's poll_s
POLL_GROWTH = 1.5
DEFAULT_POLL_S = 2.0  # the longest pause by default: gentle on Jenkins; waap-submit asks for less
_MAX_BACKOFF_S = 10.0
_MAX_RETRY_AFTER_S = 30.0
_TRANSIENT = frozenset({502, 503, 504})
# Jenkins hides console annotations (serialized ConsoleNotes) between ESC[8m and ESC[0m in progressiveText
_ANNOTATION = re.compile(r"\x1b\[8mha:[^\x1b]*\x1b\[0m")
_ANNOTATION_START = b"\x1b[8mha:"
_ANNOTATION_END = b"\x1b[0m"
_QUEUE_ITEM = re.compile(r"/queue/item/(\d+)/?$")
_PROGRESS_TREE = ("number,url,building,result,duration,estimatedDuration,timestamp,displayName,"
                  "artifacts[relativePath,fileName]")


class JenkinsError(WaapError):
    """A request to Jenkins failed. ``status`` is the HTTP status when Jenkins (or a proxy) answered."""

    def __init__(self, message: str, *, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


class JenkinsAuthError(JenkinsError):
    """401: Jenkins refused the user/token pair. 403: the user may not do this (a missing permission)."""


class JenkinsNotFound(JenkinsError):
    """404: no such job (it is created by `waap jenkins apply`), queue item or build."""


class JenkinsUnavailable(JenkinsError):
    """No usable answer from Jenkins after the retries: connection refused, timeouts, 502/503/504."""


class BuildCancelled(JenkinsError):
    """The queue item was cancelled (by someone, or by Jenkins) before a build started."""


class WaitTimeout(JenkinsError):
    """Waiting for a queue item or a build ran past its limit; the build itself goes on."""


@dataclass(frozen=True)
class QueueItem:
    """A triggered build waiting in the Jenkins queue. ``url`` is the item's page (``…/queue/item/N/``)."""

    job: str
    id: int
    url: str


@dataclass(frozen=True)
class Build:
    """One build of a job. ``url`` is its page (``…/job/NAME/N/``), built on the configured base URL."""

    job: str
    number: int
    url: str


@dataclass(frozen=True)
class QueueState:
    """Where a queue item stands. ``state``: waiting (quiet period), blocked (e.g. a build of the same job runs and
    the job does not allow concurrent builds), buildable (waiting for an executor on the label), pending (an
    executor is taking it), left (it left the queue: ``build`` is set, or ``cancelled``). ``why`` is Jenkins' own
    explanation, e.g. "Waiting for next available executor on ‘nx’"."""

    item: QueueItem
    state: str
    why: Optional[str]
    build: Optional[Build] = None
    cancelled: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


StateCallback = Callable[[QueueState, float], None]
ProgressCallback = Callable[[Dict[str, Any], float], None]
ConsoleCallback = Callable[[str], None]


def strip_annotations(text: str) -> str:
    """Console text as a person reads it: without Jenkins' hidden annotations, with ``\\n`` line ends."""
    return _ANNOTATION.sub("", text).replace("\r\n", "\n")


def _short_html(text: str) -> str:
    """The message of a Jenkins/Jetty error page: its 'Message' paragraph, else its title, else the first line."""
    m = re.search(r"<b>\s*Message\s*</b>\s*(.*?)</p>", text, re.S | re.I)
    if not m:
        m = re.search(r"<title>(.*?)</title>", text, re.S | re.I)
    found = m.group(1) if m else (text.strip().splitlines() or [""])[0]
    found = unescape(re.sub(r"<[^>]+>", "", found))
    return " ".join(found.split())[:300]


def _surely_not_sent(e: BaseException) -> bool:
    """True when the request cannot have reached Jenkins: the connection was never made."""
    if isinstance(e, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(e, requests.exceptions.ConnectionError) or isinstance(e, requests.exceptions.SSLError):
        return False
    reason = e.args[0] if e.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return isinstance(reason, urllib3.exceptions.NewConnectionError)  # refused, unreachable, name not resolved


def _describe(e: BaseException, timeout_s: float) -> str:
    if isinstance(e, requests.exceptions.SSLError):
        return f"TLS error ({e})"
    if isinstance(e, requests.exceptions.Timeout):
        return f"no answer within {timeout_s:g} s"
    reason = e.args[0] if e.args else None
    reason = getattr(reason, "reason", reason)
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        return "the host name does not resolve"
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        return "connection refused" if "refused" in str(reason).lower() else "cannot connect"
    return f"connection failed ({type(reason or e).__name__})"


class JenkinsClient:
    """A client for one Jenkins controller. ``settings`` gives the URL, the user and API token and the request
    timeout; ``session``, ``sleep`` and ``clock`` can be replaced in tests. Close it (or use ``with``) to release
    its connections."""

    def __init__(
        self,
        settings: JenkinsSettings,
        *,
        session: Optional[requests.Session] = None,
        retries: int = 3,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.base = settings.url.rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self._sleep = sleep
        self._clock = clock
        self._own_session = session is None
        self._session = session if session is not None else requests.Session()
        if self._own_session:
            self._session.headers["User-Agent"] = f"waap/{__version__}"
        self._auth = (settings.user, settings.token)
        self._timeout = settings.timeout_s
        self._crumb: Optional[Tuple[str, str]] = None

    def __repr__(self) -> str:
        return f"JenkinsClient({self.settings.user}@{self.base})"

    def close(self) -> None:
        if self._own_session:
            self._session.close()

    def __enter__(self) -> JenkinsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # URLs: always on our own base, whatever root URL Jenkins believes it has

    def job_url(self, job: str) -> str:
        """``…/job/A/job/B/`` for ``A/B`` (a job in a folder)."""
        parts = [p for p in job.split("/") if p]
        if not parts:
            raise JenkinsError(f"invalid job name {job!r}")
        return self.base + "".join(f"/job/{quote(p, safe='')}" for p in parts) + "/"

    def build(self, job: str, number: int) -> Build:
        return Build(job=job, number=number, url=f"{self.job_url(job)}{number}/")

    def queue_item_for(self, job: str, item_id: int) -> QueueItem:
        return QueueItem(job=job, id=item_id, url=f"{self.base}/queue/item/{item_id}/")

    # the one place requests are sent

    def _send(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        params: Optional[Mapping[str, str]] = None,
        data: Optional[bytes] = None,
        headers: Optional[Mapping[str, str]] = None,
        stream: bool = False,
        allow_redirects: bool = True,
    ) -> requests.Response:
        """Send with retries. ``idempotent`` requests are retried on connection errors, timeouts and 502/503/504;
        the others only when the connection was never made. A POST refused for a missing or stale crumb gets a
        fresh crumb and is sent once more (Jenkins refused it before acting on it)."""
        attempt = 0
        crumb_refreshed = False
        while True:
            sent_headers = dict(headers or {})
            if method != "GET" and self._crumb is not None:
                sent_headers[self._crumb[0]] = self._crumb[1]
            try:
                response = self._session.request(
                    method, url, params=params, data=data, headers=sent_headers, auth=self._auth,
                    timeout=self._timeout, stream=stream, allow_redirects=allow_redirects,
                )
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
                not_sent = _surely_not_sent(e)
                retryable = not isinstance(e, requests.exceptions.SSLError) and (idempotent or not_sent)
                if retryable and attempt < self.retries:
                    self._backoff(attempt)
                    attempt += 1
                    continue
                why = _describe(e, self._timeout)
                message = f"cannot reach Jenkins at {self.base}: {why} ({attempt + 1} attempt(s))"
                if not idempotent and not not_sent:
                    message += "; the request may have reached Jenkins: look at the job's page before sending it again"
                raise JenkinsUnavailable(message) from e
            except requests.exceptions.RequestException as e:
                raise JenkinsError(f"request to Jenkins at {self.base} failed: {type(e).__name__}: {e}") from e
            if response.status_code in _TRANSIENT and idempotent and attempt < self.retries:
                retry_after = response.headers.get("Retry-After", "")
                response.close()
                self._backoff(attempt, float(retry_after) if retry_after.isdigit() else 0.0)
                attempt += 1
                continue
            refused = response.status_code == 403 and method != "GET" and not crumb_refreshed
            if refused and self._crumb_refused(response):
                response.close()
                self._crumb = self._fetch_crumb()
                crumb_refreshed = True
                continue
            return response

    def _backoff(self, attempt: int, at_least: float = 0.0) -> None:
        delay = min(self.backoff_s * (2**attempt), _MAX_BACKOFF_S)
        self._sleep(max(delay, min(at_least, _MAX_RETRY_AFTER_S)))

    @staticmethod
    def _crumb_refused(response: requests.Response) -> bool:
        try:
            return "no valid crumb" in response.text.lower()
        except requests.exceptions.RequestException:
            return False

    def _fetch_crumb(self) -> Tuple[str, str]:
        data = self._json(self._send("GET", f"{self.base}/crumbIssuer/api/json", idempotent=True), "get a CSRF crumb")
        fieldname, crumb = data.get("crumbRequestField"), data.get("crumb")
        if not isinstance(fieldname, str) or not isinstance(crumb, str):
            raise JenkinsError(f"Jenkins at {self.base} answered the crumb request without a crumb")
        return fieldname, crumb

    def _check(
        self,
        response: requests.Response,
        what: str,
        *,
        ok: Sequence[int] = (200,),
        job: Optional[str] = None,
        missing: Optional[str] = None,
    ) -> requests.Response:
        """Return ``response`` when its status is in ``ok``, else raise the matching ``JenkinsError``."""
        status = response.status_code
        if status in ok:
            return response
        try:  # error pages are small, even on a streamed request
            detail = _short_html(response.text[:20000])
        except requests.exceptions.RequestException:
            detail = ""
        response.close()
        user = self.settings.user
        if status == 401:
            source = self.settings.source
            where_token = "JENKINS_TOKEN" if source == "environment" else f"token in the [jenkins] section of {source}"
            raise JenkinsAuthError(
                f"Jenkins at {self.base} refused the credentials of user {user!r} (HTTP 401): the API token is "
                f"wrong, expired or revoked, or the user does not exist. Create a token on your user page under "
                f"Security → API Token and set it ({where_token})",
                status=status,
            )
        if status == 403:
            if "crumb" in detail.lower():
                raise JenkinsAuthError(
                    f"Jenkins at {self.base} refused the CSRF crumb even after fetching a fresh one (HTTP 403: "
                    f"{detail}); a proxy may be dropping the session cookie", status=status)
            raise JenkinsAuthError(
                f"user {user!r} may not {what} on Jenkins at {self.base} (HTTP 403: "
                f"{detail or 'a missing permission'}); ask a Jenkins administrator for the permission",
                status=status,
            )
        if status == 404:
            if missing is None and job is not None:
                missing = (f"job {job!r} does not exist on Jenkins at {self.base} (or user {user!r} may not see it); "
                           "create it with `waap jenkins apply`")
            raise JenkinsNotFound(missing or f"cannot {what}: Jenkins at {self.base} answered 404 Not Found",
                                  status=status)
        if status in _TRANSIENT:
            raise JenkinsUnavailable(
                f"cannot {what}: Jenkins at {self.base} answered HTTP {status} {response.reason or ''}".rstrip()
                + " after the retries" * bool(self.retries), status=status)
        text = f"cannot {what}: Jenkins at {self.base} answered HTTP {status} {response.reason or ''}".rstrip()
        raise JenkinsError(f"{text}: {detail}" if detail else text, status=status)

    def _json(self, response: requests.Response, what: str, **check: Any) -> Dict[str, Any]:
        self._check(response, what, **check)
        try:
            data = response.json()
        except ValueError:
            raise JenkinsError(
                f"cannot {what}: the answer from {self.base} is not JSON (is this the URL of a Jenkins, and not a "
                f"login page in front of it?)", status=response.status_code) from None
        if not isinstance(data, dict):
            raise JenkinsError(f"cannot {what}: unexpected answer from {self.base}")
        return data

    def _get_json(self, url: str, what: str, *, tree: Optional[str] = None, **check: Any) -> Dict[str, Any]:
        params = {"tree": tree} if tree else None
        return self._json(self._send("GET", url, idempotent=True, params=params), what, **check)

    # who and what

    def whoami(self) -> Dict[str, Any]:
        """The authenticated user (``id``, ``fullName``, …): checks the URL and the credentials in one request."""
        return self._get_json(f"{self.base}/me/api/json", "read the current user", tree="id,fullName,absoluteUrl")

    def job_info(self, job: str, *, tree: Optional[str] = None) -> Dict[str, Any]:
        """The job's JSON; ``JenkinsNotFound`` (suggesting `waap jenkins apply`) when it does not exist."""
        return self._get_json(f"{self.job_url(job)}api/json", f"read job {job!r}", tree=tree, job=job)

    def job_exists(self, job: str) -> bool:
        try:
            self.job_info(job, tree="name")
        except JenkinsNotFound:
            return False
        return True

    def job_parameters(self, job: str) -> Dict[str, Any]:
        """The parameters the job defines, name → default value (None when it has none)."""
        info = self.job_info(
            job, tree="property[parameterDefinitions[name,defaultParameterValue[value]]]")
        found: Dict[str, Any] = {}
        for prop in info.get("property") or []:
            for definition in (prop or {}).get("parameterDefinitions") or []:
                if isinstance(definition, dict) and isinstance(definition.get("name"), str):
                    default = definition.get("defaultParameterValue") or {}
                    found[definition["name"]] = default.get("value") if isinstance(default, dict) else None
        return found

    # triggering and following

    def trigger(self, job: str, params: Mapping[str, str], *, quiet_period_s: Optional[int] = 0) -> QueueItem:
        """Queue a build with ``params`` in a form body (never in the URL: Jenkins refuses long query strings).
        ``quiet_period_s`` overrides the job's quiet period (0: start as soon as an executor is free; None: the
        job's own). Jenkins silently drops parameters the job does not define: check them first
        (``params.check_parameters``, ``job_parameters``)."""
        for name, value in params.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError("build parameters are strings")
        body = urlencode(list(params.items()), encoding="utf-8").encode("ascii")
        query = {"delay": f"{int(quiet_period_s)}sec"} if quiet_period_s is not None else None
        response = self._send(
            "POST", f"{self.job_url(job)}buildWithParameters", idempotent=False, params=query, data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}, allow_redirects=False,
        )
        if response.status_code == 400:
            detail = _short_html(response.text[:20000])
            response.close()
            raise JenkinsError(
                f"Jenkins at {self.base} refused to build {job!r} (HTTP 400: {detail or 'Bad Request'}); the "
                f"parameters took {len(body)} bytes in the form body", status=400)
        self._check(response, f"build job {job!r}", ok=(200, 201, 302, 303), job=job)
        location = response.headers.get("Location", "")
        m = _QUEUE_ITEM.search(location.split("?")[0])
        if not m:
            raise JenkinsError(f"Jenkins at {self.base} accepted the build of {job!r} but did not say which queue "
                               f"item it is (HTTP {response.status_code}, Location {location!r})")
        return self.queue_item_for(job, int(m.group(1)))

    def queue_item(self, item: QueueItem) -> QueueState:
        data = self._get_json(
            f"{item.url}api/json", f"read queue item {item.id}",
            missing=(f"queue item {item.id} is no longer in the Jenkins queue (Jenkins forgets items a few minutes "
                     f"after they leave it); look for the build on {self.job_url(item.job)}"),
        )
        return self.parse_queue_state(item, data)

    def parse_queue_state(self, item: QueueItem, data: Mapping[str, Any]) -> QueueState:
        """A ``QueueState`` from a queue item's JSON (``hudson.model.Queue$WaitingItem`` and friends)."""
        kind = str(data.get("_class", "")).rpartition("$")[2]
        why = data.get("why") if isinstance(data.get("why"), str) else None
        raw = dict(data)
        if kind == "LeftItem" or "executable" in data or data.get("cancelled"):
            executable = data.get("executable")
            if isinstance(executable, dict) and isinstance(executable.get("number"), int):
                return QueueState(item, "left", why, build=self.build(item.job, executable["number"]), raw=raw)
            if data.get("cancelled"):
                return QueueState(item, "left", why, cancelled=True, raw=raw)
            return QueueState(item, "pending", why, raw=raw)  # left, its build not created yet
        state = {"WaitingItem": "waiting", "BlockedItem": "blocked", "BuildableItem": "buildable"}.get(kind, "queued")
        if state == "buildable" and data.get("pending"):
            state = "pending"
        return QueueState(item, state, why, raw=raw)

    def wait_for_build(
        self,
        item: QueueItem,
        *,
        on_state: Optional[StateCallback] = None,
        poll_s: float = DEFAULT_POLL_S,
        timeout_s: Optional[float] = None,
    ) -> Build:
        """Poll the queue item (pauses from ``FIRST_POLL_S`` growing to ``poll_s``) until it becomes a build.
        ``on_state(state, elapsed_s)`` sees every poll. Raises ``BuildCancelled``, or ``WaitTimeout`` past
        ``timeout_s``."""
        start = self._clock()
        delay = FIRST_POLL_S
        while True:
            state = self.queue_item(item)
            if on_state is not None:
                on_state(state, self._clock() - start)
            if state.build is not None:
                return state.build
            if state.cancelled:
                raise BuildCancelled(f"queue item {item.id} of {item.job!r} was cancelled before it started")
            self._pause(delay, start, timeout_s, f"queue item {item.id} to start")
            delay = min(delay * POLL_GROWTH, max(poll_s, FIRST_POLL_S))

    def _pause(self, delay: float, start: float, timeout_s: Optional[float], what: str) -> None:
        if timeout_s is not None:
            left = timeout_s - (self._clock() - start)
            if left <= 0:
                raise WaitTimeout(f"gave up waiting for {what} after {timeout_s:g} s")
            delay = min(delay, left)
        self._sleep(delay)

    def build_info(self, build: Build, *, tree: Optional[str] = None) -> Dict[str, Any]:
        """The build's JSON: ``building``, ``result`` (None while running, then SUCCESS, UNSTABLE, FAILURE,
        ABORTED, NOT_BUILT), ``duration`` (ms), ``artifacts``, ``actions`` (parameters), …"""
        return self._get_json(
            f"{build.url}api/json", f"read build #{build.number} of {build.job!r}", tree=tree,
            missing=f"build #{build.number} of {build.job!r} does not exist (any more) on Jenkins at {self.base}",
        )

    def console(self, build: Build, start: int = 0) -> Tuple[str, int, bool]:
        """The console from byte ``start``: ``(text, next_start, more)``; ``more`` is True while the build may add
        to it. Annotations are stripped, line ends are ``\\n``; an annotation or a UTF-8 character cut at the end
        of this piece is left for the next call."""
        response = self._check(
            self._send("GET", f"{build.url}logText/progressiveText", idempotent=True, params={"start": str(start)}),
            f"read the console of build #{build.number}",
            missing=f"build #{build.number} of {build.job!r} does not exist (any more) on Jenkins at {self.base}",
        )
        raw = response.content
        more = response.headers.get("X-More-Data", "").lower() == "true"
        try:
            size = int(response.headers.get("X-Text-Size", ""))
        except ValueError:
            size = start + len(raw)
        exact = size == start + len(raw)  # offsets are bytes of this piece: we may hand some back
        cut = raw.rfind(_ANNOTATION_START)
        if cut != -1 and raw.find(_ANNOTATION_END, cut) == -1:
            raw = raw[:cut]
            if more and exact:
                size = start + cut
        if more and exact:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if e.reason == "unexpected end of data":  # a character cut at the end of this piece
                    raw, size = raw[: e.start], start + e.start
            if raw.endswith(b"\r"):  # the \n of this \r\n is not written yet
                raw, size = raw[:-1], size - 1
        return strip_annotations(raw.decode("utf-8", "replace")), size, more

    def wait_for_result(
        self,
        build: Build,
        *,
        on_progress: Optional[ProgressCallback] = None,
        on_console: Optional[ConsoleCallback] = None,
        poll_s: float = DEFAULT_POLL_S,
        timeout_s: Optional[float] = None,
    ) -> Dict[str, Any]:
        """Poll the build until it ends; returns its final JSON (``result`` set). Pauses grow from
        ``FIRST_POLL_S`` to ``poll_s``, and one poll is placed just after the end Jenkins expects (from earlier
        builds' durations). ``on_progress(info, elapsed_s)`` sees every poll; ``on_console(text)`` gets the console
        as it grows (then it is read on every poll). Raises ``WaitTimeout`` past ``timeout_s``."""
        start = self._clock()
        delay = FIRST_POLL_S
        offset, more = 0, True
        aimed = False
        while True:
            if on_console is not None and more:
                text, offset, more = self.console(build, offset)
                if text:
                    on_console(text)
            info = self.build_info(build, tree=_PROGRESS_TREE)
            if on_progress is not None:
                on_progress(info, self._clock() - start)
            if info.get("building") is False:
                if on_console is not None:
                    self._drain_console(build, offset, more, on_console)
                return self.build_info(build)
            pause = delay
            if not aimed:
                to_end = _expected_end_in(info)
                if to_end is not None and 0 < to_end < pause:
                    pause, aimed = to_end + 0.05, True
            self._pause(pause, start, timeout_s, f"build #{build.number} of {build.job!r} to end")
            delay = min(delay * POLL_GROWTH, max(poll_s, FIRST_POLL_S))

    def _drain_console(self, build: Build, offset: int, more: bool, on_console: ConsoleCallback) -> None:
        for _ in range(50):  # the log is complete once the build has ended; this is a bound, not a poll
            if not more:
                return
            text, offset, more = self.console(build, offset)
            if text:
                on_console(text)
            if more:
                self._sleep(FIRST_POLL_S)

    def stop(self, build: Build) -> None:
        """Abort a running build (as its Stop button does)."""
        self._check(self._send("POST", f"{build.url}stop", idempotent=True, allow_redirects=False),
                    f"stop build #{build.number} of {build.job!r}", ok=(200, 302, 303))

    def cancel(self, item: QueueItem) -> None:
        """Take an item out of the queue before it starts."""
        self._check(
            self._send("POST", f"{self.base}/queue/cancelItem", idempotent=True, params={"id": str(item.id)},
                       allow_redirects=False),
            f"cancel queue item {item.id}", ok=(200, 204, 302, 303),
        )

    # results

    def download_artifacts(
        self,
        build: Build,
        dest: Path,
        *,
        info: Optional[Mapping[str, Any]] = None,
        limits: ArchiveLimits = DEFAULT_LIMITS,
    ) -> List[Path]:
        """Fetch the build's artifacts into ``dest`` (an empty or new folder), keeping their relative paths;
        returns the files written, ``[]`` when the build archived nothing. One zip (``artifact/*zip*/``), checked
        whole before extraction; one request per artifact when the zip is not offered (artifact-manager plugins).
        Raises ``UnsafeArchive`` for traversal, links, special files or sizes past ``limits``."""
        if info is None:
            info = self.build_info(build, tree="artifacts[relativePath]")
        paths = [a["relativePath"] for a in info.get("artifacts") or []
                 if isinstance(a, dict) and isinstance(a.get("relativePath"), str)]
        if not paths:
            return []
        what = f"download the artifacts of build #{build.number}"
        response = self._send("GET", f"{build.url}artifact/*zip*/archive.zip", idempotent=True, stream=True)
        if response.status_code == 404:
            response.close()
            return self._download_each(build, paths, dest, limits)
        self._check(response, what)
        with tempfile.TemporaryFile(prefix="waap-artifacts-") as spool:
            try:
                total = 0
                for chunk in self._chunks(response, what):
                    total += len(chunk)
                    if total > limits.max_bytes:
                        raise UnsafeArchive(f"the artifacts archive is larger than the limit of {limits.max_bytes} "
                                            "bytes")
                    spool.write(chunk)
            finally:
                response.close()
            spool.seek(0)
            # Jenkins puts every entry of the zip of a whole artifact folder under "archive/"
            return extract_zip(spool, dest, strip_prefix="archive/", limits=limits)

    def _chunks(self, response: requests.Response, what: str) -> Iterator[bytes]:
        try:
            yield from response.iter_content(1024 * 1024)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError) as e:
            raise JenkinsUnavailable(f"cannot {what}: the connection to {self.base} broke off ({type(e).__name__})"
                                     ) from e

    def _download_each(self, build: Build, paths: Sequence[str], dest: Path, limits: ArchiveLimits) -> List[Path]:
        if len(paths) > limits.max_files:
            raise UnsafeArchive(f"the build has {len(paths)} artifacts, more than the limit of {limits.max_files}")
        checked = [member_parts(p) for p in paths]
        created = prepare_destination(dest)
        written: List[Path] = []
        budget = limits.max_bytes
        try:
            for rel, parts in zip(paths, checked):
                if not parts:
                    continue
                target = make_parents(dest, parts)
                what = f"download artifact {rel!r} of build #{build.number}"
                response = self._check(
                    self._send("GET", f"{build.url}artifact/{quote(rel)}", idempotent=True, stream=True), what)
                try:
                    budget -= write_file(target, self._chunks(response, what), budget, what=rel)
                finally:
                    response.close()
                written.append(target)
        except BaseException:
            clean_destination(dest, created)
            raise
        return written

    # the job itself (also what `waap jenkins apply` may use)

    def get_job_config(self, job: str) -> str:
        response = self._check(self._send("GET", f"{self.job_url(job)}config.xml", idempotent=True),
                               f"read the configuration of {job!r}", job=job)
        return response.content.decode("utf-8")

    def update_job(self, job: str, config_xml: str) -> None:
        self._check(
            self._send("POST", f"{self.job_url(job)}config.xml", idempotent=True, data=config_xml.encode("utf-8"),
                       headers={"Content-Type": "application/xml; charset=UTF-8"}),
            f"update the configuration of {job!r}", job=job,
        )

    def create_job(self, job: str, config_xml: str) -> None:
        """Create ``job`` (``folder/name`` inside an existing folder) from ``config_xml``; a ``JenkinsError`` with
        status 400 when an item of that name exists."""
        parent, _, name = job.strip("/").rpartition("/")
        where = self.job_url(parent) if parent else f"{self.base}/"
        response = self._send(
            "POST", f"{where}createItem", idempotent=False, params={"name": name}, data=config_xml.encode("utf-8"),
            headers={"Content-Type": "application/xml; charset=UTF-8"},
        )
        if response.status_code == 400:
            detail = _short_html(response.text[:20000])
            response.close()
            raise JenkinsError(f"cannot create job {job!r} on Jenkins at {self.base} (HTTP 400: "
                               f"{detail or 'Bad Request'}): an item of that name probably exists already",
                               status=400)
        self._check(response, f"create job {job!r}", ok=(200, 201, 302),
                    missing=f"cannot create {job!r}: folder {parent!r} does not exist" if parent else None)


def _expected_end_in(info: Mapping[str, Any]) -> Optional[float]:
    """Seconds until the end Jenkins expects for a running build (start + estimatedDuration, from earlier builds),
    by this machine's clock; None without an estimate. Only a hint for placing one poll."""
    started, estimate = info.get("timestamp"), info.get("estimatedDuration")
    if not isinstance(started, (int, float)) or not isinstance(estimate, (int, float)) or estimate <= 0:
        return None
    return (started + estimate) / 1000.0 - time.time()
