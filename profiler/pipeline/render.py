"""Rendering the Jenkins job of a deployment: the pipeline (``Jenkinsfile``) and the job's ``config.xml``, from the
Jinja2 templates in ``profiler/pipeline/templates/`` (``jenkins/templates`` in the repository points there).

Only deployment values (trusted, validated here) are rendered, each escaped for where it lands: shell words with
``sh`` (POSIX quoting), Groovy literals with ``groovy_str`` / ``groovy_ml`` (single-quoted, so nothing interpolates),
XML with ``xml_text`` / ``xml_attr``. User values are build parameters: they never pass through a template.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import jinja2
import yaml

from ..errors import WaapError
from ..spec import _image_problem
from .params import PARAMETERS
from .settings import DEFAULT_JOB

__all__ = [
    "BUDGET_FILE",
    "POLICY_ENV",
    "STASH_NAME",
    "TEMPLATE_DIR",
    "Deployment",
    "DeploymentError",
    "agent_script",
    "agent_scripts",
    "groovy_ml",
    "groovy_str",
    "load_deployment",
    "render_all",
    "render_config_xml",
    "render_jenkinsfile",
    "sh_word",
    "xml_attr",
    "xml_text",
]

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
# the device's docker policy for app_docker_args, set in the agent's environment (see jenkins/README.md)
POLICY_ENV: Tuple[str, ...] = (
    "WAAP_DATA_ROOTS", "WAAP_MAX_MEMORY", "WAAP_MAX_CPUS", "WAAP_MAX_PIDS", "WAAP_DEVICES", "WAAP_NVIDIA_RUNTIME",
)
BUDGET_FILE = ".waap-budget"  # written by `waap agent --plan` in the workspace, read by the pipeline
STASH_NAME = "waap-results"
AGENT_STEPS = ("plan", "run", "release")

_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_LABEL = re.compile(r"[A-Za-z0-9_.&|!() -]{1,200}")  # the same check as the pipeline's for agent_label
_DIR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DOCKER_ARG = re.compile(r"[A-Za-z0-9_.,:=/@+%-]{1,256}")
_SOCKET = re.compile(r"/[A-Za-z0-9_./-]{1,255}")
_PARAM_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


class DeploymentError(WaapError):
    """A deployment value is invalid; the message names the key."""


@dataclass(frozen=True)
class Deployment:
    """What differs between installations of the job. Every value is checked by ``check()`` before rendering."""

    job_name: str = DEFAULT_JOB
    description: str = ("WaAP, the Waggle Application Profiler: profiles a plugin image on a device and archives "
                        "its run directories. Trigger it with the parameters below (see jenkins/README.md).")
    agent_label: str = "nx"  # the default of the agent_label parameter
    controller_label: str = "built-in"  # where results are unstashed and archived
    profiler_image: str = "waap-profiler:latest"
    # `docker run --pull` of the profiler image: "never" for a locally built image (a pull would fetch whatever
    # a public registry has under that name), "missing" or "always" for one in the deployment's registry
    profiler_pull: str = "never"
    results_dir: str = "waap-results"  # in the workspace; the only folder stashed and archived
    # the profile step's time limit: `waap agent --plan`'s budget (each run's timeout, grace and start-up, and
    # 300 s to pull the app image) plus this margin; a target without a timeout counts as no_timeout_s
    build_margin_s: int = 60
    no_timeout_s: int = 3600
    docker_socket: str = "/var/run/docker.sock"
    # extra `docker run` options of the profiler container: what the container collector needs (docs/cli.md)
    docker_extras: Tuple[str, ...] = ("--pid", "host", "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro")
    publish_html: bool = False  # needs the HTML Publisher plugin
    store_url: str = ""  # networked results store to ingest into (a placeholder: only SQLite stores exist yet)
    keep_builds: int = 50  # 0 keeps every build
    sandbox: bool = True  # run the pipeline in the Groovy sandbox

    def check(self) -> Deployment:
        """Returns self when every value is acceptable, else raises DeploymentError naming the key."""
        _match(self.job_name, _JOB_NAME, "job_name", "1-100 letters, digits, '_', '.' or '-', starting with a "
                                                      "letter or digit")
        _text(self.description, "description", 2000, newlines=True)
        for key in ("agent_label", "controller_label"):
            value = getattr(self, key)
            _match(value, _LABEL, key, "a Jenkins label expression of letters, digits, '_', '.', '-', spaces and "
                                      "the operators && || ! ( )")
            if not value.strip():
                raise DeploymentError(f"{key}: must not be blank")
        problem = _image_problem(self.profiler_image) if isinstance(self.profiler_image, str) else "not text"
        if problem:
            raise DeploymentError(f"profiler_image: not a Docker image reference ({problem}): {self.profiler_image!r}")
        if self.profiler_pull not in ("never", "missing", "always"):
            raise DeploymentError(f"profiler_pull: expected never, missing or always, got {self.profiler_pull!r}")
        _match(self.results_dir, _DIR_NAME, "results_dir", "a folder name of letters, digits, '_', '.' or '-'")
        _int(self.build_margin_s, "build_margin_s", 0, 86400)
        _int(self.no_timeout_s, "no_timeout_s", 1, 7 * 86400)
        _int(self.keep_builds, "keep_builds", 0, 100000)
        _match(self.docker_socket, _SOCKET, "docker_socket", "an absolute path")
        if ".." in self.docker_socket.split("/"):
            raise DeploymentError(f"docker_socket: expected a path without '..', got {self.docker_socket!r}")
        if not isinstance(self.docker_extras, tuple):
            raise DeploymentError("docker_extras: expected a list of docker run options")
        for arg in self.docker_extras:
            _match(arg, _DOCKER_ARG, "docker_extras", "words of letters, digits and _ . , : = / @ + % -")
        for key in ("publish_html", "sandbox"):
            if not isinstance(getattr(self, key), bool):
                raise DeploymentError(f"{key}: expected true or false")
        _text(self.store_url, "store_url", 500)
        if self.store_url:
            parts = urlsplit(self.store_url)
            if parts.scheme not in ("http", "https", "postgresql") or not parts.hostname:
                raise DeploymentError("store_url: expected http(s)://host/... or postgresql://host/db")
            if parts.username or parts.password or any(c.isspace() for c in self.store_url):
                raise DeploymentError("store_url: no credentials or spaces in the URL (keep them in Jenkins "
                                      "credentials)")
        return self


def _match(value: Any, pattern: re.Pattern[str], key: str, expectation: str) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise DeploymentError(f"{key}: expected {expectation}, got {value!r}")


def _int(value: Any, key: str, least: int, most: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise DeploymentError(f"{key}: expected a whole number from {least} to {most}, got {value!r}")


def _text(value: Any, key: str, most: int, *, newlines: bool = False) -> None:
    if not isinstance(value, str):
        raise DeploymentError(f"{key}: expected text, got {value!r}")
    if len(value) > most:
        raise DeploymentError(f"{key}: at most {most} characters")
    allowed = "\n\t" if newlines else ""
    if any((ord(c) < 0x20 and c not in allowed) or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000
           or c in "\ufffe\uffff" for c in value):
        raise DeploymentError(f"{key}: contains control characters")


# --- loading ------------------------------------------------------------------------------------------------------

_FIELDS = {f.name: f for f in dataclasses.fields(Deployment)}


def _convert(key: str, value: Any, *, from_text: bool) -> Any:
    """A value from a deployment file (YAML types) or from ``--set`` (text) as the field's type."""
    default = getattr(Deployment(), key)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no",
                                                                      "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise DeploymentError(f"{key}: expected true or false, got {value!r}")
    if isinstance(default, int):
        if from_text and isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value.strip()):
            return int(value)
        return value  # checked by Deployment.check
    if isinstance(default, tuple):
        if isinstance(value, str):
            try:
                return tuple(shlex.split(value))
            except ValueError as e:
                raise DeploymentError(f"{key}: {e}") from None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise DeploymentError(f"{key}: expected a list of strings, got {value!r}")
    return "" if value is None else value


def _unknown(key: str) -> DeploymentError:
    close = difflib.get_close_matches(key, list(_FIELDS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return DeploymentError(f"unknown deployment key {key!r}{hint}; known: {', '.join(_FIELDS)}")


def load_deployment(path: Optional[Path] = None, sets: Sequence[str] = (),
                    base: Optional[Mapping[str, Any]] = None) -> Deployment:
    """The defaults, then ``base``, then the YAML mapping in ``path``, then ``KEY=VALUE`` items; checked."""
    values: Dict[str, Any] = {}
    for key, value in (base or {}).items():
        if key not in _FIELDS:
            raise _unknown(key)
        values[key] = value
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DeploymentError(f"{path}: cannot read it ({e})") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise DeploymentError(f"{path}: not valid YAML ({e})") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise DeploymentError(f"{path}: expected a mapping of deployment keys to values")
        for key, value in data.items():
            if key not in _FIELDS:
                raise DeploymentError(f"{path}: {_unknown(str(key))}")
            values[key] = _convert(key, value, from_text=False)
    for item in sets:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise DeploymentError(f"--set {item!r}: expected KEY=VALUE")
        if key not in _FIELDS:
            raise _unknown(key)
        values[key] = _convert(key, value, from_text=True)
    try:
        deployment = Deployment(**values)
    except TypeError as e:  # pragma: no cover - keys are checked above
        raise DeploymentError(str(e)) from None
    return deployment.check()


# --- escaping -----------------------------------------------------------------------------------------------------

_GROOVY_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def groovy_str(value: Any) -> str:
    """A single-quoted Groovy string literal whose value is ``value``: no interpolation happens in single quotes,
    and backslashes are doubled, which also keeps Groovy's unicode-escape preprocessing (``\\u0027``) away."""
    text = str(value)
    out = []
    for c in text:
        if c in _GROOVY_ESCAPES:
            out.append(_GROOVY_ESCAPES[c])
        elif ord(c) < 0x20:
            raise ValueError(f"control character {c!r} in a Groovy literal")
        else:
            out.append(c)
    return "'" + "".join(out) + "'"


def groovy_ml(value: Any) -> str:
    """The body of a ``'''…'''`` Groovy literal (the caller writes the quotes) whose value is ``value``.

    Backslashes are doubled (a trailing backslash would otherwise join lines, ``\\u`` would be a unicode escape), and a
    quote is escaped where it could end the literal or merge with its quotes: next to another quote, first or last.
    Anything else stays as written, so a shell script without backslashes or '' reads the same in the Jenkinsfile."""
    text = str(value)
    if any(ord(c) < 0x20 and c not in "\n\t" for c in text):
        raise ValueError("control characters in a multi-line Groovy literal")
    text = text.replace("\\", "\\\\")
    out = []
    for i, c in enumerate(text):
        if c == "'" and (i in (0, len(text) - 1) or text[i + 1] == "'" or text[i - 1] == "'"):
            out.append("\\'")
        else:
            out.append(c)
    return "".join(out)


def _xml_check(text: str) -> None:
    for c in text:
        o = ord(c)
        if (o < 0x20 and c not in "\t\n\r") or 0xD800 <= o < 0xE000 or o in (0xFFFE, 0xFFFF):
            raise ValueError(f"character U+{o:04X} cannot appear in XML 1.0")


def xml_text(value: Any) -> str:
    """XML character data: ``&``, ``<``, ``>`` as entities (``]]>`` is harmless once ``>`` is ``&gt;``); a carriage
    return as ``&#13;`` so that parsers do not fold it into the newline."""
    text = str(value)
    _xml_check(text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def xml_attr(value: Any) -> str:
    """An XML attribute value (for either quote); whitespace other than spaces kept as character references."""
    return (xml_text(value).replace('"', "&quot;").replace("'", "&apos;")
            .replace("\n", "&#10;").replace("\t", "&#9;"))


def sh_word(value: Any) -> str:
    """One POSIX shell word whose value is ``value``."""
    return shlex.quote(str(value))


# --- rendering ----------------------------------------------------------------------------------------------------

def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=False,  # every value goes through the filter of its language, explicitly
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(groovy_str=groovy_str, groovy_ml=groovy_ml, xml_text=xml_text, xml_attr=xml_attr,
                       sh=sh_word)
    return env


_ENV = _environment()


def _context(deployment: Deployment) -> Dict[str, Any]:
    deployment.check()
    names = [p.name for p in PARAMETERS]
    if not all(_PARAM_NAME.fullmatch(n) for n in names) or not all(_ENV_NAME.fullmatch(n) for n in POLICY_ENV):
        raise DeploymentError("parameter and policy variable names must be plain identifiers")  # pragma: no cover
    return {
        "d": deployment,
        "parameter_names": names,
        "policy_env": list(POLICY_ENV),
        "budget_file": BUDGET_FILE,
        "stash_name": STASH_NAME,
    }


def _render(name: str, context: Mapping[str, Any]) -> str:
    return _ENV.get_template(name).render(**context)


def agent_scripts(deployment: Deployment) -> Dict[str, str]:
    """The shell scripts the pipeline runs on the agent, by step: ``plan`` (validate the parameters, write the
    build budget), ``run`` (profile) and ``release`` (stop a leftover profiler container, hand the results to the
    agent's user). The Jenkinsfile holds exactly these texts."""
    context = _context(deployment)
    return {step: _render(f"agent-{step}.sh.j2", context) for step in AGENT_STEPS}


def agent_script(deployment: Deployment, step: str = "run") -> str:
    if step not in AGENT_STEPS:
        raise ValueError(f"no agent step {step!r}; steps: {', '.join(AGENT_STEPS)}")
    return agent_scripts(deployment)[step]


def render_jenkinsfile(deployment: Deployment) -> str:
    context = _context(deployment)
    return _render("Jenkinsfile.j2", {**context, "scripts": agent_scripts(deployment)})


def _parameters(deployment: Deployment) -> Iterable[Dict[str, str]]:
    for p in PARAMETERS:
        default = deployment.agent_label if p.name == "agent_label" else p.default
        yield {"name": p.name, "kind": p.kind, "default": default, "description": p.description}


def render_config_xml(deployment: Deployment, jenkinsfile: Optional[str] = None) -> str:
    """The job's config.xml: a parameterized pipeline job whose script is the rendered Jenkinsfile."""
    context = _context(deployment)
    script = render_jenkinsfile(deployment) if jenkinsfile is None else jenkinsfile
    return _render("config.xml.j2", {**context, "parameters": list(_parameters(deployment)), "script": script})


def render_all(deployment: Deployment) -> Dict[str, str]:
    """File name -> text of everything a deployment needs."""
    jenkinsfile = render_jenkinsfile(deployment)
    return {"Jenkinsfile": jenkinsfile, "config.xml": render_config_xml(deployment, jenkinsfile)}
