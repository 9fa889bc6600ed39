"""Running the app under a profiling tool (TAU, nvprof, Nsight Systems): rewrite its command, check the tool is there.

Docker semantics decide what the app runs: the target's args replace the image's CMD, and the app's argv is the
image's ENTRYPOINT followed by (args or CMD). Wrapping puts the tool in front of that argv: the container's
entrypoint becomes the tool and its command the tool's options and the app's argv. The tool writes its dumps under
``/app/profiling_output/tools/<name>/``, inside the output mount, so they survive the container.

The stop signals reach the tool and the app together, as Ctrl-C in a terminal reaches the whole foreground
process group: the container's init (Docker's ``docker-init``, tini) is told to signal the process group
(``TINI_KILL_PROCESS_GROUP=1``). nvprof does not pass SIGINT on to the app it launched; without this the app ran on
until SIGTERM, and nvprof, killed, wrote nothing.

A tool may come with the image or from a *toolbox*: a host folder (``WAAP_TOOLBOX``) mounted read-only at
``/opt/waap-tools``, whose ``bin`` folder and root are put in front of ``PATH``.
"""

from __future__ import annotations

import contextlib
import posixpath
import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import docker
import requests

from ..errors import WaapError

__all__ = [
    "KNOWN_TOOLS",
    "TOOLBOX_DIR",
    "TOOLBOX_ENV",
    "TOOLS_OUT_DIR",
    "ToolError",
    "ToolPlan",
    "check_tool",
    "image_command",
    "nsys_stats_command",
    "plan_tool_run",
    "run_nsys_stats",
    "toolbox_path",
    "wrap_command",
]

KNOWN_TOOLS: Tuple[str, ...] = ("tau", "nvprof", "nsys")
TOOLS_OUT_DIR = "/app/profiling_output/tools"
TOOLBOX_DIR = "/opt/waap-tools"
TOOLBOX_ENV = "WAAP_TOOLBOX"  # on the runner: a host folder of tools, mounted read-only at TOOLBOX_DIR
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CHECK_TIMEOUT_S = 60.0
_PYTHONS = ("python", "python3")
# read by tini, which Docker runs as PID 1 for --init: forward signals to the child's whole process group
GROUP_SIGNALS_ENV = {"TINI_KILL_PROCESS_GROUP": "1"}


class ToolError(WaapError):
    """A profiling tool cannot be used: unknown, missing from the image, or nothing to run under it."""


@dataclass(frozen=True)
class ToolPlan:
    """How the app container runs under one tool."""

    tool: str
    binary: str  # the executable the container starts (checked to exist before the run)
    entrypoint: List[str]
    command: List[str]
    env: Dict[str, str] = field(default_factory=dict)
    out_dir: str = TOOLS_OUT_DIR

    @property
    def tool_dir(self) -> str:
        return posixpath.join(self.out_dir, self.tool)


def image_command(image_attrs: Mapping[str, Any]) -> Tuple[List[str], List[str]]:
    """The image's ENTRYPOINT and CMD as lists (an image built with the shell form has ``["/bin/sh", "-c", ...]``)."""
    config = image_attrs.get("Config") or {}
    return list(config.get("Entrypoint") or []), list(config.get("Cmd") or [])


def _is_python(word: str) -> bool:
    base = posixpath.basename(word)
    return base in _PYTHONS or (base.startswith("python3.") and base[len("python3."):].isdigit())


def plan_tool_run(
    entrypoint: Sequence[str],
    cmd: Sequence[str],
    args: Sequence[str],
    tools: Sequence[str],
    out_dir: str = TOOLS_OUT_DIR,
) -> Optional[ToolPlan]:
    """The container's entrypoint, command and extra environment to run the app under ``tools`` (None: no tool)."""
    if not tools:
        return None
    if len(tools) > 1:
        raise ToolError(f"only one tool per run is supported, got {', '.join(tools)}")
    tool = tools[0]
    if tool not in KNOWN_TOOLS:
        raise ToolError(f"unknown tool {tool!r}; expected one of: {', '.join(KNOWN_TOOLS)}")
    argv = [*entrypoint, *(args or cmd)]  # Docker: the target's args replace CMD, never ENTRYPOINT
    if not argv:
        raise ToolError(f"the image has neither ENTRYPOINT nor CMD and the target gives no args: nothing to run "
                        f"under {tool}")
    where = posixpath.join(out_dir, tool)
    env: Dict[str, str] = dict(GROUP_SIGNALS_ENV)
    if tool == "tau":
        env["PROFILEDIR"] = where
        if _is_python(argv[0]):
            rest = argv[1:]
            # tau_python starts its own interpreter: python's own leading options are not its options
            while rest and rest[0].startswith("-") and rest[0] not in ("-m", "-c"):
                if rest[0] == "-u":
                    env["PYTHONUNBUFFERED"] = "1"
                rest = rest[1:]
            return ToolPlan(tool, "tau_python", ["tau_python"], rest, env, out_dir)
        return ToolPlan(tool, "tau_exec", ["tau_exec"], ["-T", "serial", *argv], env, out_dir)
    if tool == "nvprof":
        command = ["--csv", "--log-file", posixpath.join(where, "summary.csv"),
                   "--export-profile", posixpath.join(where, "profile.nvvp"), *argv]
        return ToolPlan(tool, "nvprof", ["nvprof"], command, env, out_dir)
    command = ["profile", "--output", posixpath.join(where, "report"), "--force-overwrite", "true", *argv]
    return ToolPlan(tool, "nsys", ["nsys"], command, env, out_dir)


def wrap_command(
    entrypoint: Sequence[str],
    cmd: Sequence[str],
    args: Sequence[str],
    tools: Sequence[str],
    out_dir: str = TOOLS_OUT_DIR,
) -> Tuple[List[str], List[str]]:
    """(entrypoint override, command) for the app container; with no tool, the app's own (args or CMD)."""
    plan = plan_tool_run(entrypoint, cmd, args, tools, out_dir)
    if plan is None:
        return list(entrypoint), list(args or cmd)
    return plan.entrypoint, plan.command


def toolbox_path(image_env: Mapping[str, str]) -> str:
    """PATH inside the app container when a toolbox is mounted: the toolbox first, then the image's own."""
    return f"{TOOLBOX_DIR}/bin:{TOOLBOX_DIR}:{image_env.get('PATH') or DEFAULT_PATH}"


def _missing(binary: str, image: str, toolbox: Optional[str], detail: str = "") -> ToolError:
    where = f"nor in the toolbox {toolbox} mounted at {TOOLBOX_DIR}" if toolbox else "nor in a toolbox mount"
    hint = (
        f"build it into the image, or put it in a toolbox folder and set {TOOLBOX_ENV}=/path/to/tools "
        f"(mounted read-only at {TOOLBOX_DIR}, {TOOLBOX_DIR}/bin on PATH)"
    )
    more = f" ({detail})" if detail else ""
    return ToolError(f"{binary} is not in the image {image} ({where}){more}: {hint}")


def check_tool(
    client: docker.DockerClient,
    image: str,
    binary: str,
    *,
    image_label: str = "",
    env: Optional[Mapping[str, str]] = None,
    toolbox_host: Optional[str] = None,
    toolbox_label: Optional[str] = None,
    labels: Optional[Mapping[str, str]] = None,
) -> str:
    """Make sure ``binary`` can be started in ``image`` (with the toolbox mounted, if any); returns its path.

    Runs ``sh -c 'command -v BINARY'`` in a short-lived container (always removed). An image without a shell gets
    the tool itself started with ``--version``: only an engine's "executable file not found" counts as missing."""
    shown = image_label or image
    volumes = {toolbox_host: {"bind": TOOLBOX_DIR, "mode": "ro"}} if toolbox_host else {}
    try:
        code, out = _run_short(client, image, ["sh"], ["-c", f"command -v {shlex.quote(binary)}"], env, volumes,
                               labels)
    except _NoExecutable:
        try:
            _run_short(client, image, [binary], ["--version"], env, volumes, labels)
        except _NoExecutable as e:
            raise _missing(binary, shown, toolbox_label or toolbox_host, str(e)) from None
        return binary
    if code != 0 or not out.strip():
        raise _missing(binary, shown, toolbox_label or toolbox_host)
    return out.strip().splitlines()[0]


class _NoExecutable(Exception):
    pass


def _run_short(
    client: docker.DockerClient,
    image: str,
    entrypoint: List[str],
    command: List[str],
    env: Optional[Mapping[str, str]],
    volumes: Dict[str, Dict[str, str]],
    labels: Optional[Mapping[str, str]],
    *,
    stderr: bool = False,
) -> Tuple[int, str]:
    container: Any = None
    try:
        container = client.containers.create(
            image, entrypoint=entrypoint, command=command, environment=dict(env or {}), volumes=volumes,
            labels=dict(labels or {}), network_mode="none", detach=True,
        )
        try:
            container.start()
        except docker.errors.APIError as e:
            text = str(e.explanation or e)
            if "executable file not found" in text or "no such file or directory" in text:
                raise _NoExecutable(text) from None
            raise
        try:
            result = container.wait(timeout=CHECK_TIMEOUT_S)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            raise ToolError(f"checking for the tool in {image} took longer than {CHECK_TIMEOUT_S:g}s") from None
        out = container.logs(stdout=True, stderr=stderr).decode("utf-8", "replace")
        return int(result.get("StatusCode", 1)), out
    except docker.errors.APIError as e:
        raise ToolError(f"cannot check for the tool in {image}: {e.explanation or e}") from e
    finally:
        if container is not None:
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True, v=True)


def nsys_stats_command(report_file: str, out_dir: str = TOOLS_OUT_DIR) -> List[str]:
    """``nsys stats`` over the report ``nsys profile`` left: CSV files ``<tools>/nsys/stats_<report>.csv``."""
    prefix = posixpath.join(out_dir, "nsys", "stats")
    return ["stats", "--format", "csv", "--output", prefix, "--force-export", "true", report_file]


def run_nsys_stats(
    client: docker.DockerClient,
    image: str,
    report_file: str,
    *,
    output_host_path: str,
    env: Optional[Mapping[str, str]] = None,
    toolbox_host: Optional[str] = None,
    labels: Optional[Mapping[str, str]] = None,
) -> Tuple[int, str]:
    """Run ``nsys stats`` in a short-lived container from the app's image, with the run's output mounted (the app
    container is gone by then: ``docker exec`` needs a running one). Returns its exit code and output."""
    from ..app import APP_OUTPUT_DIR

    volumes = {output_host_path: {"bind": APP_OUTPUT_DIR, "mode": "rw"}}
    if toolbox_host:
        volumes[toolbox_host] = {"bind": TOOLBOX_DIR, "mode": "ro"}
    try:
        return _run_short(client, image, ["nsys"], nsys_stats_command(report_file), env, volumes, labels,
                          stderr=True)
    except _NoExecutable as e:
        raise ToolError(f"nsys stats could not start: {e}") from None
