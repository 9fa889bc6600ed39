"""``app_docker_args``: the docker options a user may give their app, through an allow-list.

The runner holds the Docker socket of the device, so any ``docker run`` option it passed through unchecked would be
root on the device (``--privileged``, ``-v /:/host``, ``--pid host``, the socket itself, ...). This module is the one
place where the user's option string (a Jenkins parameter, ``waap run --docker-args``) becomes data the runner can
trust: a ``DockerOptions`` and a ``Limits`` of ``profiler.profile``. It never builds a command line and never gives
the text to a shell.

What is allowed, and only that (every other option is refused, naming it):

* ``-e/--env KEY=VALUE`` (also ``-eKEY=VALUE``, ``--env=KEY=VALUE``); a bare ``-e KEY`` is refused because it would
  copy the variable from the runner's own environment;
* ``-m/--memory SIZE``, ``--cpus N``, ``--pids-limit N``, each within the agent's ceilings (``DockerPolicy``);
* ``-v/--volume HOST:PATH[:ro]``: read-only, HOST inside one of the agent's data roots after symlinks are resolved,
  and never a system folder or the Docker socket, whatever the data roots say;
* ``--runtime nvidia`` (when the agent allows it), ``--network none`` (the default is the run's own network),
  ``--device PATH`` for the device paths the agent lists.

Every failure is a ``SpecError`` whose field is the option as the user wrote it, so the message reads
``app_docker_args: --privileged: not allowed: ...``.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import stat
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, NoReturn, Optional, Tuple

from profiler.errors import SpecError
from profiler.profile import DockerOptions, Limits

__all__ = [
    "ALLOWED_OPTIONS",
    "DENIED_HOST_PATHS",
    "MAX_DOCKER_ARGS_CHARS",
    "MIN_MEMORY_BYTES",
    "DockerPolicy",
    "parse_docker_args",
    "parse_size",
]

# Docker refuses a memory limit below 6 MiB.
MIN_MEMORY_BYTES = 6 * 1024 * 1024
# An option string is a line or two; the cap keeps a hostile one cheap to refuse.
MAX_DOCKER_ARGS_CHARS = 64 * 1024

# Host paths that are never mounted, whatever the data roots say: these folders, anything under them, and anything
# above them (a mount of /var shows /var/run/docker.sock; a read-only mount does not stop connect() on a socket).
# /run and /var/run hold the sockets of root services (Docker, containerd, D-Bus/systemd): each is root on the device.
DENIED_HOST_PATHS: Tuple[str, ...] = (
    "/",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/root",
    "/run",
    "/var/run",
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/lib/docker",
    "/var/lib/containerd",
)
# Any host path whose text contains one of these is refused too (sockets moved elsewhere, rootless engines, ...).
_DENIED_NAMES: Tuple[str, ...] = ("docker.sock", "containerd.sock")
# Places in the app container a data mount may not cover: mounts over these were the way to several runc escapes.
_DENIED_CONTAINER_PATHS: Tuple[str, ...] = ("/proc", "/sys", "/dev")

ALLOWED_OPTIONS = (
    "-e/--env KEY=VALUE, -m/--memory SIZE, --cpus N, --pids-limit N, -v/--volume HOST:PATH[:ro] (read-only, "
    "under a data root), --runtime nvidia, --network none, --device PATH (devices the agent lists)"
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SIZE = re.compile(r"([0-9]{1,20})(?:\.([0-9]{1,9}))? ?(?:([kmgtp])i?)?b?", re.IGNORECASE)
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_DECIMAL = re.compile(r"[0-9]{1,9}(?:\.[0-9]{0,9})?|\.[0-9]{1,9}")
_INTEGER = re.compile(r"[0-9]{1,19}")
_INT64_MAX = 2**63 - 1
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

_ROOT = "the runner holds the Docker socket, so this would be root on the device"
_LIFECYCLE = "the runner creates, names, watches and removes the app container itself"

# Options of `docker run` that are refused with a reason of their own; every other option gets the allow-list.
_REFUSED: Dict[str, str] = {
    "--privileged": f"it gives the app every capability and every host device; {_ROOT}",
    "--pid": "the app runs in its own PID namespace (host or container:<x> would let it see and signal other "
    "processes)",
    "--ipc": "the app runs in its own IPC namespace (host or container:<x> would share memory with other processes)",
    "--uts": "the app runs in its own UTS namespace (host would let it rename the device)",
    "--userns": "the app runs in the engine's user namespace setting (host would turn off remapping)",
    "--cgroupns": "the app runs in its own cgroup namespace",
    "--volumes-from": "it mounts another container's volumes, which may be host folders or the Docker socket",
    "--cap-add": f"it adds kernel capabilities to the app; {_ROOT}",
    "--cap-drop": "the runner keeps the engine's default capabilities",
    "--security-opt": f"it changes seccomp/AppArmor/SELinux confinement (e.g. unconfined); {_ROOT}",
    "--publish": "it opens ports on the device's network; the app talks to its companions on the run's network",
    "--publish-all": "it opens ports on the device's network; the app talks to its companions on the run's network",
    "--expose": "it opens ports; the app talks to its companions on the run's network",
    "--restart": "it would restart the app after the profiler stopped it; the runner decides when the app ends",
    "--env-file": "it reads a file on the agent's machine into the app; give variables with -e KEY=VALUE",
    "--label-file": "it reads a file on the agent's machine",
    "--mount": "mounts are given only as -v HOST:PATH:ro, under a data root (a --mount type=bind reaches any host "
    "path, and other types are not supported)",
    "--device-cgroup-rule": f"it opens host device nodes to the app; {_ROOT}",
    "--group-add": "it adds groups (docker, disk, video, ...) that open host resources to the app",
    "--sysctl": "it changes kernel parameters",
    "--user": "the app runs as its image's user (a user flag could, e.g., ask for 0:0 or a host group)",
    "--entrypoint": "the runner starts the app (and wraps it for tracing tools); the command comes from app_args",
    "--rm": _LIFECYCLE,
    "--detach": _LIFECYCLE,
    "--name": _LIFECYCLE,
    "--interactive": _LIFECYCLE,
    "--tty": _LIFECYCLE,
    "--attach": _LIFECYCLE,
    "--cidfile": _LIFECYCLE,
    "--label": "the runner's labels identify its containers; user labels could hide an app from the reaper",
    "--oom-kill-disable": "it would let the app exhaust the device's memory without being killed",
    "--memory-swap": "only -m/--memory may be given: a swap limit could take the app past the memory ceiling",
    "--cgroup-parent": "it would move the app out of the cgroup the profiler measures and limits",
    "--gpus": "on Jetson the GPU comes with --runtime nvidia",
    "--use-api-socket": f"it mounts the Docker API socket into the app; {_ROOT}",
    "--volume-driver": "mounts are given only as -v HOST:PATH:ro, under a data root",
    "--tmpfs": "mounts are given only as -v HOST:PATH:ro, under a data root",
    "--stop-signal": "the runner decides how the app is stopped (SIGINT, grace, SIGTERM, SIGKILL)",
    "--stop-timeout": "the runner decides how the app is stopped (SIGINT, grace, SIGTERM, SIGKILL)",
}

# The rest of `docker run`'s options: refused as not on the allow-list (known, so a single-dash typo is recognised).
_OTHER_DOCKER_OPTIONS = frozenset(
    {
        "--add-host",
        "--annotation",
        "--blkio-weight",
        "--blkio-weight-device",
        "--cpu-count",
        "--cpu-percent",
        "--cpu-period",
        "--cpu-quota",
        "--cpu-rt-period",
        "--cpu-rt-runtime",
        "--cpu-shares",
        "--cpuset-cpus",
        "--cpuset-mems",
        "--detach-keys",
        "--device-read-bps",
        "--device-read-iops",
        "--device-write-bps",
        "--device-write-iops",
        "--disable-content-trust",
        "--dns",
        "--dns-opt",
        "--dns-option",
        "--dns-search",
        "--domainname",
        "--health-cmd",
        "--health-interval",
        "--health-retries",
        "--health-start-interval",
        "--health-start-period",
        "--health-timeout",
        "--help",
        "--hostname",
        "--init",
        "--io-maxbandwidth",
        "--io-maxiops",
        "--ip",
        "--ip6",
        "--isolation",
        "--kernel-memory",
        "--link",
        "--link-local-ip",
        "--log-driver",
        "--log-opt",
        "--mac-address",
        "--memory-reservation",
        "--memory-swappiness",
        "--net-alias",
        "--network-alias",
        "--no-healthcheck",
        "--oom-score-adj",
        "--platform",
        "--pull",
        "--quiet",
        "--read-only",
        "--shm-size",
        "--sig-proxy",
        "--storage-opt",
        "--ulimit",
        "--workdir",
    }
)

# docker run's one-letter options and their long names; only -e, -m and -v are allowed.
_SHORT: Dict[str, str] = {
    "a": "--attach",
    "c": "--cpu-shares",
    "d": "--detach",
    "e": "--env",
    "h": "--hostname",
    "i": "--interactive",
    "l": "--label",
    "m": "--memory",
    "p": "--publish",
    "P": "--publish-all",
    "q": "--quiet",
    "t": "--tty",
    "u": "--user",
    "v": "--volume",
    "w": "--workdir",
}
_SHORT_BOOLEAN = frozenset("diPqt")  # one-letter options without a value, the ones combined as -it, -dit, ...
# Long options without a value (so that "--rm image" does not show "image" as the value of --rm).
_BOOLEAN_OPTIONS = frozenset(
    {
        "--detach",
        "--disable-content-trust",
        "--help",
        "--init",
        "--interactive",
        "--no-healthcheck",
        "--oom-kill-disable",
        "--privileged",
        "--publish-all",
        "--quiet",
        "--read-only",
        "--rm",
        "--sig-proxy",
        "--tty",
        "--use-api-socket",
    }
)


def _root_path(path: str) -> str:
    """``normpath`` of an absolute path, with POSIX's special leading ``//`` folded to ``/``."""
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/")


def _within(path: str, root: str) -> bool:
    """``path`` is ``root`` or lies under it (component-wise: /home/nvidiax is not under /home/nvidia)."""
    return path == root or root == "/" or path.startswith(root + "/")


def _denied(path: str) -> Optional[str]:
    """Why ``path`` may never be mounted (it is, lies under or holds a denied path); None when it may."""
    for name in _DENIED_NAMES:
        if name in path:
            return f"{path} names {name}, which is never mounted"
    if path == "/":
        return "/ is the whole device, never mounted"
    for denied in DENIED_HOST_PATHS:
        if denied == "/":
            continue
        if path == denied:
            return f"{path} is never mounted"
        if _within(path, denied):
            return f"{path} is inside {denied}, which is never mounted"
        if _within(denied, path):
            return f"{path} holds {denied}, which is never mounted"
    return None


def _format_bytes(size: int) -> str:
    for unit, power in (("PiB", 5), ("TiB", 4), ("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if size % 1024**power == 0:
            return f"{size // 1024**power} {unit}"
    return f"{size} bytes"


def parse_size(text: str) -> int:
    """A size the way Docker reads ``--memory``: ``512m``, ``1g``, ``1.5g``, ``1024k``, ``1GiB``, plain bytes.

    Units are binary (k = 1024). Raises ``ValueError`` for anything else; no minimum is applied here."""
    match = _SIZE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f'expected a size like "512m", "1g" or "1024k" (binary units) or a number of bytes, got {text!r}'
        )
    whole: str = match.group(1)
    fraction: str = match.group(2) or ""
    unit: str = (match.group(3) or "").lower()
    scale = 1024 ** _SIZE_POWERS[unit]
    size: int = int(whole) * scale + (int(fraction) * scale // 10 ** len(fraction) if fraction else 0)
    if size > _INT64_MAX:
        raise ValueError(f"the size {text!r} is too large")
    return size


@dataclass(frozen=True)
class DockerPolicy:
    """What the device's operator allows in ``app_docker_args`` (the agent's configuration, see ``from_env``)."""

    data_roots: Tuple[str, ...] = ()  # host folders under which read-only data mounts are allowed
    max_memory_bytes: Optional[int] = None  # ceiling for -m/--memory (None: no ceiling)
    max_cpus: Optional[float] = None  # ceiling for --cpus
    max_pids: Optional[int] = None  # ceiling for --pids-limit
    devices: Tuple[str, ...] = ()  # host device paths that --device may name (e.g. /dev/video0)
    nvidia_runtime: bool = True  # --runtime nvidia allowed

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> DockerPolicy:
        """The policy from the agent's environment; unset or empty variables keep the defaults.

        ``WAAP_DATA_ROOTS`` (colon-separated absolute folders), ``WAAP_MAX_MEMORY`` ("8g" or bytes),
        ``WAAP_MAX_CPUS``, ``WAAP_MAX_PIDS``, ``WAAP_DEVICES`` (colon-separated /dev paths),
        ``WAAP_NVIDIA_RUNTIME`` (1/0). A bad value is a ``SpecError`` naming the variable."""

        def get(name: str) -> str:
            return environ.get(name, "").strip()

        def fail(name: str, message: str) -> NoReturn:
            raise SpecError(message, source="agent environment", field=name)

        roots: List[str] = []
        for entry in get("WAAP_DATA_ROOTS").split(":"):
            if not entry:
                continue
            if not entry.startswith("/") or ".." in entry.split("/"):
                fail("WAAP_DATA_ROOTS", f"expected absolute folders without '..', separated by ':', got {entry!r}")
            root = _root_path(entry)
            denied = _denied(root)
            if denied is not None:
                fail("WAAP_DATA_ROOTS", f"{root} cannot be a data root: {denied}")
            if root not in roots:
                roots.append(root)

        memory: Optional[int] = None
        if get("WAAP_MAX_MEMORY"):
            try:
                memory = parse_size(get("WAAP_MAX_MEMORY"))
            except ValueError as exc:
                fail("WAAP_MAX_MEMORY", str(exc))
            if memory < MIN_MEMORY_BYTES:
                fail("WAAP_MAX_MEMORY", f"expected at least 6 MiB (Docker's minimum), got {get('WAAP_MAX_MEMORY')!r}")

        cpus: Optional[float] = None
        if get("WAAP_MAX_CPUS"):
            text = get("WAAP_MAX_CPUS")
            if not _DECIMAL.fullmatch(text) or float(text) <= 0:
                fail("WAAP_MAX_CPUS", f"expected a number of CPUs > 0, e.g. 4 or 1.5, got {text!r}")
            cpus = float(text)

        pids: Optional[int] = None
        if get("WAAP_MAX_PIDS"):
            text = get("WAAP_MAX_PIDS")
            if not _INTEGER.fullmatch(text) or not 1 <= int(text) <= _INT64_MAX:
                fail("WAAP_MAX_PIDS", f"expected an integer number of processes >= 1, got {text!r}")
            pids = int(text)

        devices: List[str] = []
        for entry in get("WAAP_DEVICES").split(":"):
            if not entry:
                continue
            device = _root_path(entry) if entry.startswith("/") else entry
            if not device.startswith("/dev/") or ".." in entry.split("/"):
                fail("WAAP_DEVICES", f"expected device paths under /dev/ separated by ':', got {entry!r}")
            if device not in devices:
                devices.append(device)

        nvidia = True
        if get("WAAP_NVIDIA_RUNTIME"):
            text = get("WAAP_NVIDIA_RUNTIME").lower()
            if text not in _TRUE | _FALSE:
                fail("WAAP_NVIDIA_RUNTIME", f"expected 1 or 0, got {get('WAAP_NVIDIA_RUNTIME')!r}")
            nvidia = text in _TRUE

        return cls(
            data_roots=tuple(roots),
            max_memory_bytes=memory,
            max_cpus=cpus,
            max_pids=pids,
            devices=tuple(devices),
            nvidia_runtime=nvidia,
        )


@dataclass
class _Parse:
    """The options gathered so far, and where errors go."""

    policy: DockerPolicy
    source: str
    env: Dict[str, str] = field(default_factory=dict)
    mounts: List[Tuple[str, str]] = field(default_factory=list)
    devices: List[str] = field(default_factory=list)
    runtime: Optional[str] = None
    network: str = "run"
    memory: Optional[int] = None
    cpus: Optional[float] = None
    pids: Optional[int] = None
    given: Dict[str, str] = field(default_factory=dict)  # single-valued option -> how it was first written
    on_device: bool = True  # False: checked where the host paths are not (waap-submit); the device checks again

    def fail(self, flag: str, message: str) -> NoReturn:
        raise SpecError(message, source=self.source, field=flag)

    def once(self, option: str, flag: str) -> None:
        """Options that hold one value may be given once (a second one is more likely a mistake than an override)."""
        if option in self.given:
            self.fail(flag, f"given more than once (already given as {self.given[option]})")
        self.given[option] = flag

    # -- the allowed options -------------------------------------------------------------------------------
    def env_var(self, flag: str, value: str) -> None:
        key, equals, text = value.partition("=")
        if not equals:
            if _ENV_NAME.fullmatch(value):
                self.fail(
                    flag,
                    f"{flag} {value} without '=' would copy {value} from the runner's own environment, which holds "
                    f"the agent's settings and secrets; give the value: {flag} {value}=VALUE",
                )
            self.fail(flag, f"expected KEY=VALUE, got {value!r}")
        if not _ENV_NAME.fullmatch(key):
            self.fail(flag, f"expected KEY=VALUE with KEY a variable name ([A-Za-z_][A-Za-z0-9_]*), got {value!r}")
        if key.startswith("NVIDIA_"):
            self.fail(
                flag,
                f"{key}: NVIDIA_* variables tell the NVIDIA container runtime which host devices and driver files to "
                "give the app; they are not accepted here (use --runtime nvidia)",
            )
        self.env[key] = text  # a later -e for the same name wins, as with docker run

    def memory_limit(self, flag: str, value: str) -> None:
        self.once("--memory", flag)
        try:
            size = parse_size(value)
        except ValueError as exc:
            self.fail(flag, str(exc))
        if size < MIN_MEMORY_BYTES:
            self.fail(flag, f"expected at least 6 MiB (Docker's minimum memory limit), got {value!r} = {size} bytes")
        ceiling = self.policy.max_memory_bytes
        if ceiling is not None and size > ceiling:
            self.fail(
                flag,
                f"{value} is over this device's ceiling of {_format_bytes(ceiling)} (the agent's WAAP_MAX_MEMORY)",
            )
        self.memory = size

    def cpu_limit(self, flag: str, value: str) -> None:
        self.once("--cpus", flag)
        if not _DECIMAL.fullmatch(value) or float(value) < 0.01:
            self.fail(flag, f"expected a number of CPUs >= 0.01, e.g. 2 or 1.5, got {value!r}")
        cpus = float(value)
        ceiling = self.policy.max_cpus
        if ceiling is not None and cpus > ceiling:
            self.fail(flag, f"{value} is over this device's ceiling of {ceiling:g} CPUs (the agent's WAAP_MAX_CPUS)")
        self.cpus = cpus

    def pids_limit(self, flag: str, value: str) -> None:
        self.once("--pids-limit", flag)
        if not _INTEGER.fullmatch(value) or not 1 <= int(value) <= _INT64_MAX:
            self.fail(
                flag,
                f"expected an integer number of processes >= 1, got {value!r} (0 and -1, 'unlimited', are not "
                "accepted; leave the option out instead)",
            )
        pids = int(value)
        ceiling = self.policy.max_pids
        if ceiling is not None and pids > ceiling:
            self.fail(flag, f"{value} is over this device's ceiling of {ceiling} processes (the agent's WAAP_MAX_PIDS)")
        self.pids = pids

    def runtime_name(self, flag: str, value: str) -> None:
        self.once("--runtime", flag)
        if value != "nvidia":
            self.fail(
                flag,
                f"not allowed: {value!r}: only 'nvidia' may be given (leave --runtime out for the engine's default)",
            )
        if not self.policy.nvidia_runtime:
            self.fail(
                flag,
                "not allowed: the NVIDIA runtime is not enabled on this device (the agent's WAAP_NVIDIA_RUNTIME=0)",
            )
        self.runtime = "nvidia"

    def network_mode(self, flag: str, value: str) -> None:
        self.once("--network", flag)
        if value == "none":
            self.network = "none"
            return
        default = "only 'none' may be given; by default the app is on the run's own network, with its companions"
        if value == "host":
            self.fail(
                flag,
                f"not allowed: host networking gives the app the device's network and its local services; {default}",
            )
        if value.startswith("container:"):
            self.fail(flag, f"not allowed: {value} would join another container's network namespace; {default}")
        self.fail(flag, f"not allowed: {value!r}: {default}")

    def volume(self, flag: str, value: str) -> None:
        parts = value.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            self.fail(flag, f"expected HOST:PATH or HOST:PATH:ro (a host path and a path in the app), got {value!r}")
        host, target = parts[0], parts[1]
        if len(parts) == 3 and parts[2] != "ro":
            mode = parts[2]
            why = (
                "mounts are always read-only"
                if "rw" in mode.split(",")
                else "only ':ro' is accepted (relabelling, propagation and other mount options are not)"
            )
            self.fail(flag, f"mode {mode!r} in {value!r}: {why}; write {host}:{target}:ro")
        self.mounts.append((self.host_path(flag, host), self.container_path(flag, target)))

    def host_path(self, flag: str, host: str) -> str:
        roots = self.policy.data_roots
        if not host.startswith("/"):
            self.fail(flag, f"the host path {host!r} must be absolute (named volumes are not accepted)")
        if ".." in host.split("/"):
            self.fail(flag, f"the host path {host!r} may not contain '..'")
        literal = _root_path(host)
        denied = _denied(literal)
        if denied is not None:
            self.fail(flag, f"not allowed: {denied}; {_ROOT}")
        if not self.on_device:
            return literal  # data roots, links and existence can only be judged on the device, which does
        resolved = _root_path(os.path.realpath(literal))
        denied = _denied(resolved)
        if denied is not None:
            self.fail(
                flag,
                f"not allowed: {literal} leads (through symbolic links) to {resolved}: {denied}; {_ROOT}",
            )
        if not roots:
            self.fail(
                flag,
                "not allowed: this device has no data roots, so no host folder may be mounted "
                "(the operator lists them in the agent's WAAP_DATA_ROOTS)",
            )
        clean_roots = [_root_path(root) for root in roots if root.startswith("/")]
        real_roots = [_root_path(os.path.realpath(root)) for root in clean_roots]
        # Both the path as written and the file it leads to must be inside a data root, and neither may be denied:
        # a symbolic link inside a data root cannot point out of it.
        inside = any(_within(literal, root) for root in [*clean_roots, *real_roots])
        if not inside or not any(_within(resolved, root) for root in real_roots):
            shown = literal if literal == resolved else f"{literal} (which leads to {resolved})"
            self.fail(flag, f"not allowed: {shown} is not inside a data root of this device: {', '.join(roots)}")
        try:
            info = os.stat(resolved)
        except OSError:
            self.fail(flag, f"{literal} does not exist on this device (Docker would create it, owned by root)")
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            # realpath cannot see through a hard link: it could be /etc/shadow under another name
            self.fail(flag, f"not allowed: {literal} has other hard links, which could make it a system file; copy it")
        if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
            self.fail(
                flag,
                f"not allowed: {literal} is not a regular file or folder (sockets and device nodes are not mounted)",
            )
        return resolved

    def container_path(self, flag: str, target: str) -> str:
        if not target.startswith("/"):
            self.fail(flag, f"the path in the app container {target!r} must be absolute")
        if ".." in target.split("/"):
            self.fail(flag, f"the path in the app container {target!r} may not contain '..'")
        clean = _root_path(target)
        if clean == "/":
            self.fail(flag, "a data mount may not cover the app container's root folder '/'")
        for denied in _DENIED_CONTAINER_PATHS:
            if _within(clean, denied):
                self.fail(flag, f"a data mount may not cover {denied} in the app container")
        for _, existing in self.mounts:
            if existing == clean:
                self.fail(flag, f"{clean} in the app container is already the target of another -v")
        return clean

    def device(self, flag: str, value: str) -> None:
        parts = value.split(":")
        if len(parts) > 3 or not parts[0]:
            self.fail(flag, f"expected PATH or PATH:PATH[:rwm], got {value!r}")
        host = parts[0]
        if not host.startswith("/") or ".." in host.split("/"):
            self.fail(flag, f"expected an absolute device path, got {host!r}")
        path = _root_path(host)
        allowed = [_root_path(dev) for dev in self.policy.devices if dev.startswith("/")]
        if path not in allowed:
            listed = ", ".join(allowed) if allowed else "none"
            self.fail(
                flag,
                f"not allowed: {path} is not a device this device's operator lists (the agent's WAAP_DEVICES: "
                f"{listed}); {_ROOT}",
            )
        if len(parts) >= 2 and parts[1] and _root_path(parts[1]) != path:
            self.fail(flag, f"the device appears at its own path in the app container: write {path}, not {value!r}")
        if len(parts) == 3 and parts[2] != "rwm":
            self.fail(flag, f"permissions {parts[2]!r}: only the default 'rwm' is supported; write {path}")
        if path not in self.devices:
            self.devices.append(path)


_Handler = Callable[[_Parse, str, str], None]
_ALLOWED: Dict[str, Tuple[_Handler, str]] = {
    "--env": (_Parse.env_var, "-e KEY=VALUE"),
    "--memory": (_Parse.memory_limit, "-m 512m"),
    "--cpus": (_Parse.cpu_limit, "--cpus 1.5"),
    "--pids-limit": (_Parse.pids_limit, "--pids-limit 256"),
    "--volume": (_Parse.volume, "-v /host/data:/data:ro"),
    "--runtime": (_Parse.runtime_name, "--runtime nvidia"),
    "--network": (_Parse.network_mode, "--network none"),
    "--net": (_Parse.network_mode, "--net none"),
    "--device": (_Parse.device, "--device /dev/video0"),
}
_KNOWN_LONG = frozenset({*_ALLOWED, *_REFUSED, *_OTHER_DOCKER_OPTIONS})


def _refusal(name: str, shown: str) -> str:
    """The message for an option that is not allowed: its own reason when it has one, the allow-list otherwise.
    ``shown`` is the option as written, with its value when there is one (``--pid host``, ``-p8080:80``)."""
    if name in _REFUSED:
        written = "" if shown == name or len(shown) == 2 else f" ({shown})"
        return f"not allowed{written}: {_REFUSED[name]}"
    if name in _KNOWN_LONG:
        return f"not allowed: only these options may be given: {ALLOWED_OPTIONS}"
    return f"unknown option, not allowed: only these options may be given: {ALLOWED_OPTIONS}"


def _positional(token: str) -> str:
    if token == "--":
        return "'--' is not accepted: the app's command and arguments go in app_args"
    return (
        f"unexpected argument {token!r}: app_docker_args holds only options (the image goes in app_name, the "
        "app's own arguments in app_args); quote values that contain spaces"
    )


def _split(text: str, source: str) -> List[str]:
    if not isinstance(text, str):  # shlex.split(None) would read standard input
        raise SpecError(f"expected the docker options as a string, got {type(text).__name__}", source=source)
    if len(text) > MAX_DOCKER_ARGS_CHARS:
        raise SpecError(f"longer than {MAX_DOCKER_ARGS_CHARS} characters; refusing to parse it", source=source)
    if "\0" in text:
        raise SpecError("may not contain NUL characters", source=source)
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError as exc:
        if "escaped" in str(exc):
            raise SpecError(f"trailing backslash in {text!r}", source=source) from None
        raise SpecError(f"unbalanced quotes in {text!r}", source=source) from None


def parse_docker_args(
    text: str, policy: DockerPolicy, *, source: str = "app_docker_args", on_device: bool = True
) -> Tuple[DockerOptions, Limits]:
    """The user's docker options, checked against the allow-list and ``policy``.

    ``text`` is split like a POSIX shell would split it (quotes, backslashes), without running any shell. Returns
    the options the runner may apply and the resource limits (None where not given); anything else is a
    ``SpecError`` naming ``source`` and the option as written. ``on_device=False`` is for checking before a job is
    sent (``waap-submit``): host paths are then judged by form and deny list only, since only the device knows its
    data roots and files, and it checks them again."""
    tokens = _split(text, source)
    state = _Parse(policy=policy, source=source, on_device=on_device)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token == "--" or not token.startswith("-") or token == "-":
            state.fail(token, _positional(token))
        if token.startswith("--"):
            name, equals, inline = token.partition("=")
            flag, has_inline = name, bool(equals)
        else:
            long_name = "--" + token[1:].partition("=")[0]
            if len(long_name) > 3 and long_name in _KNOWN_LONG:
                # -privileged, -env=A=1: docker would read a one-letter option and a value; the user meant --.
                if long_name in _ALLOWED:
                    state.fail(token, f"a long option needs two dashes: write {long_name}")
                state.fail(token, _refusal(long_name, token))
            letter, rest = token[1], token[2:]
            name, flag = _SHORT.get(letter, f"-{letter}"), f"-{letter}"
            has_inline, inline = bool(rest), rest[1:] if rest.startswith("=") else rest
            if name not in _ALLOWED and rest and (letter in _SHORT_BOOLEAN or letter not in _SHORT):
                # -it, -dit, -Pd: one-letter options run together
                state.fail(token, f"one-letter options run together are not accepted; {flag}: {_refusal(name, flag)}")

        if name not in _ALLOWED:
            shown = token
            following = tokens[index] if index < len(tokens) else "-"
            if not has_inline and name not in _BOOLEAN_OPTIONS and not following.startswith("-"):
                shown = f"{flag} {following}"  # only to show it: "--pid host"
            state.fail(flag, _refusal(name, shown))

        handler, example = _ALLOWED[name]
        if has_inline:
            value = inline
        else:
            if index >= len(tokens):
                state.fail(flag, f"needs a value, e.g. {example}")
            value = tokens[index]
            index += 1
            if value.startswith("-") and len(value) > 1:
                state.fail(flag, f"needs a value, e.g. {example}, but the next word is the option {value!r}")
        handler(state, flag, value)

    options = DockerOptions(
        env=dict(state.env),
        data_mounts=tuple(state.mounts),
        runtime=state.runtime,
        network=state.network,
        devices=tuple(state.devices),
    )
    return options, Limits(memory_bytes=state.memory, cpus=state.cpus, pids=state.pids)
