"""One app container's lifecycle: create, start, wait for exit or timeout, stop (SIGINT → grace → SIGTERM → SIGKILL),
record how it ended, keep its log, remove it.

docker-py's ``wait(timeout=…)`` is an HTTP read timeout, not a run limit: the run limit is enforced here, by waiting
in short slices against a deadline of our own.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import docker
import requests

from .errors import DockerError
from .profile import Limits

__all__ = [
    "APP_OUTPUT_DIR",
    "DEFAULT_LOG_LIMIT",
    "STOP_REASONS",
    "AppContainer",
    "AppOutcome",
    "AppSettings",
    "sanitize_output",
]

APP_OUTPUT_DIR = "/app/profiling_output"
DEFAULT_LOG_LIMIT = 64 * 1024 * 1024
TERM_GRACE_S = 3.0  # after SIGTERM, before SIGKILL
KILL_WAIT_S = 15.0  # after SIGKILL: the engine may take a moment to reap
WAIT_SLICE_S = 0.5

# exited: by itself · timeout: stopped by us at its timeout · oom: killed by the kernel for memory
# killed: killed by someone else · interrupted: the profiler was asked to stop · error: the profiler failed
STOP_REASONS = ("exited", "timeout", "oom", "killed", "interrupted", "error")

EventSink = Callable[..., None]


@dataclass(frozen=True)
class AppSettings:
    """Everything needed to create the app container."""

    image: str
    name: str
    args: Sequence[str] = ()
    entrypoint: Optional[Sequence[str]] = None  # None: the image's own; a tool wrapper sets it (profiler.tools.wrap)
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    output_host_path: Optional[str] = None  # bound at APP_OUTPUT_DIR
    mounts: Mapping[str, Tuple[str, bool]] = field(default_factory=dict)  # host path -> (app path, read_only)
    limits: Limits = field(default_factory=Limits)
    init: bool = True  # docker-init as PID 1: signals reach the app, orphaned children are reaped
    network: str = "run"  # "run": a bridge network of the run's own (same name as the container); "none"
    runtime: Optional[str] = None
    devices: Tuple[str, ...] = ()
    log_limit: int = DEFAULT_LOG_LIMIT


@dataclass
class AppOutcome:
    stop_reason: str
    exit_code: Optional[int]
    oom_killed: bool
    signals_sent: List[str]
    started_ns: int
    ended_ns: int
    log_bytes: int = 0
    log_bytes_dropped: int = 0

    @property
    def duration_s(self) -> float:
        return max(0, self.ended_ns - self.started_ns) / 1e9


class _LogFollower(threading.Thread):
    """Streams the container's stdout and stderr into a file as they come, up to a cap; counts what is dropped."""

    def __init__(self, container: Any, path: Path, limit: int) -> None:
        super().__init__(name="waap-app-log", daemon=True)
        self.container = container
        self.path = path
        self.limit = limit
        self.written = 0
        self.dropped = 0
        self.error: Optional[str] = None

    def run(self) -> None:
        try:
            with open(self.path, "ab") as fh:
                for chunk in self.container.logs(stream=True, follow=True, stdout=True, stderr=True):
                    room = self.limit - self.written
                    if room > 0:
                        fh.write(chunk[:room])
                        fh.flush()
                        self.written += min(room, len(chunk))
                    self.dropped += max(0, len(chunk) - max(room, 0))
                if self.dropped:
                    fh.write(f"\n[waap] log capped at {self.limit} bytes; {self.dropped} bytes dropped\n".encode())
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as e:
            self.error = str(e)


class AppContainer:
    """The app under profiling. ``run`` does the whole lifecycle; the steps are public for the runner's needs."""

    def __init__(self, client: docker.DockerClient, settings: AppSettings, *, on_event: EventSink) -> None:
        self.client = client
        self.settings = settings
        self.on_event = on_event
        self.container: Any = None
        self._network: Any = None
        self._log: Optional[_LogFollower] = None
        self._signals: List[str] = []
        self._started_ns = 0
        self._stop_asked: Optional[str] = None

    # -- lifecycle steps -------------------------------------------------------------------------------------
    def create(self) -> None:
        s = self.settings
        host_config: Dict[str, Any] = {}
        if s.limits.memory_bytes:
            host_config["mem_limit"] = s.limits.memory_bytes
            host_config["memswap_limit"] = s.limits.memory_bytes  # no swap: over the limit means OOM, not thrash
        if s.limits.cpus:
            host_config["nano_cpus"] = int(s.limits.cpus * 1e9)
        if s.limits.pids:
            host_config["pids_limit"] = s.limits.pids
        volumes = {
            host: {"bind": inside, "mode": "ro" if ro else "rw"} for host, (inside, ro) in s.mounts.items()
        }
        if s.output_host_path:
            volumes[s.output_host_path] = {"bind": APP_OUTPUT_DIR, "mode": "rw"}
        if s.runtime:
            host_config["runtime"] = s.runtime
        if s.devices:
            host_config["devices"] = list(s.devices)
        host_config["network"] = self._create_network() if s.network == "run" else None
        if s.network == "none":
            host_config["network_mode"] = "none"
        try:
            self.container = self.client.containers.create(
                s.image,
                command=list(s.args) or None,  # an argv list after the image's ENTRYPOINT: never a shell string
                entrypoint=list(s.entrypoint) if s.entrypoint is not None else None,
                name=s.name,
                environment=dict(s.env),
                labels=dict(s.labels),
                volumes=volumes,
                init=s.init,
                detach=True,
                **host_config,
            )
        except docker.errors.APIError as e:
            raise DockerError(f"cannot create the app container from {s.image!r}: {e.explanation or e}") from e
        except requests.exceptions.RequestException as e:
            # a create that timed out may still have created the container: find it by its name to clean up later
            self.container = self._find_by_name()
            raise DockerError(f"creating the app container timed out or failed: {e}") from e
        self.on_event("container_created", container_id=self.container.id, name=s.name)

    def start(self, log_path: Path) -> int:
        try:
            self.container.start()
        except docker.errors.APIError as e:
            raise DockerError(f"cannot start the app container: {e.explanation or e}") from e
        self._started_ns = time.time_ns()
        self.on_event("started", container_id=self.container.id)
        self._log = _LogFollower(self.container, log_path, self.settings.log_limit)
        self._log.start()
        return self._started_ns

    def wait(
        self,
        *,
        timeout_s: float,
        grace_s: float,
        on_tick: Optional[Callable[[float], None]] = None,
        should_stop: Optional[Callable[[], Optional[str]]] = None,
    ) -> AppOutcome:
        """Wait for the app to exit, stopping it at ``timeout_s`` (0 = never) or when ``should_stop`` returns a
        reason. Returns how it ended."""
        start = time.monotonic()
        deadline = start + timeout_s if timeout_s > 0 else None
        while True:
            if self._wait_slice(WAIT_SLICE_S):
                break
            elapsed = time.monotonic() - start
            if on_tick is not None:
                on_tick(elapsed)
            reason = should_stop() if should_stop is not None else None
            if reason is None and deadline is not None and time.monotonic() >= deadline:
                reason = "timeout"
            if reason is not None:
                self.stop(reason, grace_s=grace_s)
                break
        return self._outcome()

    def stop(self, reason: str, *, grace_s: float) -> None:
        """SIGINT, then after ``grace_s`` SIGTERM, then SIGKILL: each step only if the app is still running."""
        self._stop_asked = reason
        for sig, wait_s in (("SIGINT", grace_s), ("SIGTERM", TERM_GRACE_S), ("SIGKILL", KILL_WAIT_S)):
            if not self._signal(sig, reason):
                return  # already gone
            if self._wait_slice(wait_s):
                return
        raise DockerError(f"the app container {self.settings.name} did not stop after SIGKILL")

    def remove(self) -> None:
        if self.container is not None:
            try:
                self.container.remove(force=True, v=True)
                self.on_event("container_removed", container_id=self.container.id)
            except docker.errors.NotFound:
                pass
            except (docker.errors.APIError, requests.exceptions.RequestException) as e:
                self.on_event("warning", message=f"cannot remove container {self.settings.name}: {e}")
        if self._network is not None:
            try:
                self._network.remove()
            except docker.errors.NotFound:
                pass
            except (docker.errors.APIError, requests.exceptions.RequestException) as e:
                self.on_event("warning", message=f"cannot remove network {self.settings.name}: {e}")
            self._network = None

    def _create_network(self) -> str:
        """A bridge network of the run's own: the app reaches the outside but no other container (another run's
        app, the runner). Labelled like the container, so a reaper finds it if the runner dies."""
        try:
            self._network = self.client.networks.create(
                self.settings.name, driver="bridge", labels=dict(self.settings.labels), check_duplicate=True
            )
        except docker.errors.APIError as e:
            raise DockerError(f"cannot create the run's network: {e.explanation or e}") from e
        return str(self.settings.name)

    def pid(self) -> int:
        """The app container's init PID as the engine reports it (host PID namespace), 0 when unknown."""
        try:
            self.container.reload()
            return int(self.container.attrs.get("State", {}).get("Pid") or 0)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return 0

    def ended(self) -> bool:
        """True when the engine says the app container has exited (False while it runs or when it cannot say)."""
        try:
            self.container.reload()
            return self.container.attrs.get("State", {}).get("Status") in ("exited", "dead")
        except docker.errors.NotFound:
            return True
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return False

    # -- internals -------------------------------------------------------------------------------------------
    def _find_by_name(self) -> Any:
        try:
            return self.client.containers.get(self.settings.name)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return None

    def _wait_slice(self, seconds: float) -> bool:
        """True when the container has exited, waiting at most about ``seconds``."""
        end = time.monotonic() + seconds
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            try:
                self.container.wait(timeout=max(remaining, 0.05))
                return True
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                # docker-py reports the end of its HTTP read timeout as either, depending on the transport
                continue
            except docker.errors.NotFound:
                return True
            except docker.errors.APIError as e:
                raise DockerError(f"waiting for the app container failed: {e.explanation or e}") from e

    def _signal(self, sig: str, reason: str) -> bool:
        try:
            self.container.kill(signal=sig)
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as e:
            if e.status_code == 409:  # "is not running"
                return False
            raise DockerError(f"cannot send {sig} to the app container: {e.explanation or e}") from e
        self._signals.append(sig)
        self.on_event("signal_sent", signal=sig, reason=reason)
        return True

    def _outcome(self) -> AppOutcome:
        ended_ns = time.time_ns()
        try:
            self.container.reload()
            state = self.container.attrs.get("State", {})
        except docker.errors.NotFound:
            state = {}
        except docker.errors.APIError as e:
            raise DockerError(f"cannot inspect the app container: {e.explanation or e}") from e
        exit_code = state.get("ExitCode")
        oom = bool(state.get("OOMKilled"))
        if self._log is not None:
            self._log.join(timeout=30)
        if oom:
            reason = "oom"
        elif self._stop_asked is not None:
            reason = self._stop_asked
        elif exit_code == 137:
            reason = "killed"  # SIGKILL from outside WaAP (another tool, the kernel, a person)
        else:
            reason = "exited"
        log = self._log
        outcome = AppOutcome(
            stop_reason=reason,
            exit_code=exit_code,
            oom_killed=oom,
            signals_sent=list(self._signals),
            started_ns=self._started_ns,
            ended_ns=ended_ns,
            log_bytes=log.written if log else 0,
            log_bytes_dropped=log.dropped if log else 0,
        )
        if log is not None and log.error:
            self.on_event("warning", message=f"app log incomplete: {log.error}")
        self.on_event("exited", exit_code=exit_code, oom_killed=oom, stop_reason=reason)
        return outcome


def sanitize_output(root: Path) -> List[str]:
    """Remove what an untrusted app may have planted in its output folder: symbolic links (which would point a later
    reader — Jenkins archiving, ingest — at the device's files), FIFOs, sockets and device nodes. Returns what went."""
    removed: List[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            try:
                mode = os.lstat(path).st_mode
                if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
                    continue
                os.unlink(path)
                removed.append(os.path.relpath(path, root))
            except OSError as e:
                removed.append(f"{os.path.relpath(path, root)} (could not remove: {e.strerror})")
        # os.walk does not descend into symlinked dirs; the links themselves were removed above
        dirnames[:] = [d for d in dirnames if os.path.isdir(os.path.join(dirpath, d))]
    return removed
