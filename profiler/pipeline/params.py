"""The job's parameters: the contract between the people who trigger a profile (curl, the ECR UI's button,
``waap-submit``) and the runner on the device. The seed's names (``app_name``, ``app_args``, ``app_docker_args``)
keep working as they were; the rest extend them. Values are untrusted: they are validated by ``waap-submit`` before
Jenkins is contacted (Jenkins silently drops parameters it does not define) and again by the runner on the agent.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Tuple

from ..errors import SpecError
from ..profile import KNOWN_METRICS, Limits, Profile
from ..spec import MAX_SPEC_BYTES, parse_profile, profile_from_args
from ..tools.wrap import KNOWN_TOOLS

if TYPE_CHECKING:
    from ..dockerargs import DockerPolicy

__all__ = [
    "DEFAULTS",
    "MAX_VALUE_BYTES",
    "PARAMETERS",
    "JobParameter",
    "build_budget_s",
    "check_parameters",
    "profile_from_parameters",
    "with_docker_args",
    "within_ceilings",
]

SOURCE = "job parameters"


@dataclass(frozen=True)
class JobParameter:
    name: str
    kind: str  # "string" (one line) or "text" (several lines)
    default: str
    description: str


PARAMETERS: Tuple[JobParameter, ...] = (
    JobParameter("app_name", "string", "",
                 "The app image to profile, e.g. waggle/plugin-objectcounter:0.0.0 (any registry reference). "
                 "May be left empty when the profile parameter names the image."),
    JobParameter("app_args", "string", "",
                 "The app's arguments, split as a POSIX shell would split them but never run by a shell."),
    JobParameter("app_docker_args", "string", "",
                 "Allow-listed docker options for the app: -e KEY=VALUE, --memory/--cpus/--pids-limit within the "
                 "device's ceilings, -v HOST:PATH:ro under the device's data folders, --runtime nvidia, "
                 "--network none. Anything else is refused."),
    JobParameter("timeout", "string", "300", "Seconds before the app is stopped (SIGINT, grace, SIGTERM, SIGKILL); "
                 "0 = none, the app ends by itself."),
    JobParameter("metrics", "string", ",".join(m for m in ("system", "container", "custom", "gpu-summary")
                                               if m in KNOWN_METRICS),
                 f"Comma-separated collectors: {', '.join(KNOWN_METRICS)}; a profiling tool named here ("
                 f"{', '.join(KNOWN_TOOLS)}) runs each target under it too."),
    JobParameter("interval", "string", "1", "Sampling interval in seconds."),
    JobParameter("repeat", "string", "1", "Runs per target."),
    JobParameter("profile", "text", "",
                 "A whole WaAP profile (YAML: a standalone profile or an ECR sage.yaml with a profiling: section). "
                 "When given, it replaces app_args, timeout, metrics, interval and repeat."),
    JobParameter("agent_label", "string", "nx", "The Jenkins label of the device(s) to profile on."),
)
DEFAULTS: Dict[str, str] = {p.name: p.default for p in PARAMETERS}
# what a curl user can send; the profile may be as large as a profile file
MAX_VALUE_BYTES: Dict[str, int] = {p.name: (MAX_SPEC_BYTES if p.kind == "text" else 8192) for p in PARAMETERS}
_REPLACED_BY_PROFILE = ("app_args", "timeout", "metrics", "interval", "repeat")


def check_parameters(values: Mapping[str, str]) -> Dict[str, str]:
    """Known names only, strings within their size, one line for string parameters; returns them with defaults
    filled in. Raises ``SpecError`` naming the parameter."""
    checked = dict(DEFAULTS)
    for name, value in values.items():
        if name not in DEFAULTS:
            close = difflib.get_close_matches(name, list(DEFAULTS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"unknown parameter (Jenkins would silently drop it){hint}; known: "
                            f"{', '.join(DEFAULTS)}", source=SOURCE, field=name)
        if not isinstance(value, str):
            raise SpecError(f"expected a string, got {type(value).__name__}", source=SOURCE, field=name)
        if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES[name]:
            raise SpecError(f"too long: at most {MAX_VALUE_BYTES[name]} bytes", source=SOURCE, field=name)
        if "\x00" in value:
            raise SpecError("contains a NUL character", source=SOURCE, field=name)
        kind = next(p.kind for p in PARAMETERS if p.name == name)
        if kind == "string" and ("\n" in value or "\r" in value):
            raise SpecError("must be a single line", source=SOURCE, field=name)
        checked[name] = value
    return checked


def profile_from_parameters(
    values: Mapping[str, str], *, docker_policy: Optional[DockerPolicy] = None, on_device: bool = True
) -> Profile:
    """The profile the parameters describe. ``docker_policy`` (a ``profiler.dockerargs.DockerPolicy``) judges
    ``app_docker_args``; without one, any non-empty ``app_docker_args`` is refused."""
    params = check_parameters(values)
    image = params["app_name"].strip() or None
    if params["profile"].strip():
        given = [n for n in _REPLACED_BY_PROFILE if params[n].strip() != DEFAULTS[n]]
        if given:
            raise SpecError(f"{', '.join(given)} cannot be combined with the profile parameter: put them in the "
                            "profile", source=SOURCE, field=given[0])
        profile = parse_profile(params["profile"], source="profile parameter", image=image)
    else:
        if image is None:
            raise SpecError("give the app image (app_name) or a profile", source=SOURCE, field="app_name")
        profile = profile_from_args(
            image=image, args=params["app_args"], timeout=params["timeout"] or "0",
            metrics=[m for m in params["metrics"].split(",") if m.strip()] or None,
            interval=params["interval"] or None, repeat=params["repeat"] or None, source=SOURCE,
        )
    if params["app_docker_args"].strip():
        from ..dockerargs import DockerPolicy  # the device's policy, with the allow-list

        profile = with_docker_args(profile, params["app_docker_args"], docker_policy or DockerPolicy(),
                                   on_device=on_device)
    if on_device and docker_policy is not None:
        profile = within_ceilings(profile, docker_policy)
    return profile


def within_ceilings(profile: Profile, policy: DockerPolicy) -> Profile:
    """The device's ceilings as the limits of an app that asked for none: a job may not run unbounded on a device
    whose operator set ceilings."""
    limits = Limits(
        memory_bytes=profile.limits.memory_bytes or policy.max_memory_bytes,
        cpus=profile.limits.cpus or policy.max_cpus,
        pids=profile.limits.pids or policy.max_pids,
    )
    return dataclasses.replace(profile, limits=limits)


def with_docker_args(profile: Profile, text: str, policy: DockerPolicy, *, on_device: bool = True) -> Profile:
    """The profile with allow-listed docker options applied (shared by ``waap run --docker-args`` and the job's
    ``app_docker_args``): their environment and limits win over the profile's."""
    from ..dockerargs import parse_docker_args

    options, limits = parse_docker_args(text, policy, source="app_docker_args", on_device=on_device)
    merged = Limits(
        memory_bytes=limits.memory_bytes or profile.limits.memory_bytes,
        cpus=limits.cpus or profile.limits.cpus,
        pids=limits.pids or profile.limits.pids,
    )
    env = {**profile.env, **options.env}
    return dataclasses.replace(profile, docker=options, limits=merged, env=env)


def build_budget_s(profile: Profile, *, no_timeout_s: float, margin_s: float = 300.0) -> int:
    """How long a build may take before Jenkins aborts it: every run's timeout plus its stop grace and start-up
    (each target runs ``repeat`` times under each tool), plus a margin for pulling the image. A target without a
    timeout counts as ``no_timeout_s``."""
    per_run = 0.0
    for target in profile.targets:
        timeout = target.timeout_s if target.timeout_s > 0 else no_timeout_s
        per_run += timeout + profile.grace_s + 3 + 15 + 30  # SIGTERM grace, SIGKILL wait, start-up and teardown
    return math.ceil(per_run * profile.runs_per_target + margin_s)
