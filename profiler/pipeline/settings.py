"""Where WaAP finds the Jenkins controller and its credentials: the environment, or a config file only its owner
can read. Never the command line (it would land in shell histories and process lists), and never printed."""

from __future__ import annotations

import configparser
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional
from urllib.parse import urlsplit

from ..errors import WaapError

__all__ = ["DEFAULT_CONFIG", "JenkinsSettings", "SettingsError", "load_settings"]

DEFAULT_CONFIG = Path("~/.config/waap/jenkins.ini")
DEFAULT_JOB = "nvidia-nx-profiling-pipeline"


class SettingsError(WaapError):
    """The Jenkins settings are missing or unsafe."""


@dataclass(frozen=True)
class JenkinsSettings:
    url: str
    user: str
    token: str = field(repr=False)  # an API token: never in reprs, logs or messages
    job: str = DEFAULT_JOB
    timeout_s: float = 30.0
    source: str = "environment"

    def __str__(self) -> str:
        return f"{self.user}@{self.url} (job {self.job}, credentials from {self.source})"


def load_settings(
    environ: Mapping[str, str] = os.environ, *, config: Optional[Path] = None, job: Optional[str] = None
) -> JenkinsSettings:
    """``JENKINS_URL``, ``JENKINS_USER`` and ``JENKINS_TOKEN`` from the environment when all are set, else the
    ``[jenkins]`` section (url, user, token, job) of ``config`` / ``$WAAP_JENKINS_CONFIG`` / DEFAULT_CONFIG."""
    if all(environ.get(k) for k in ("JENKINS_URL", "JENKINS_USER", "JENKINS_TOKEN")):
        settings = JenkinsSettings(
            url=environ["JENKINS_URL"], user=environ["JENKINS_USER"], token=environ["JENKINS_TOKEN"],
            job=job or environ.get("WAAP_JENKINS_JOB") or DEFAULT_JOB, source="environment",
        )
    else:
        path = Path(config or environ.get("WAAP_JENKINS_CONFIG") or DEFAULT_CONFIG).expanduser()
        settings = _from_file(path, job)
    _check_url(settings.url)
    return settings


def _from_file(path: Path, job: Optional[str]) -> JenkinsSettings:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SettingsError(
            "no Jenkins settings: set JENKINS_URL, JENKINS_USER and JENKINS_TOKEN, or write them as url, user and "
            f"token in the [jenkins] section of {path} (chmod 600)"
        ) from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(f"{path} holds an API token but others can read it: run `chmod 600 {path}`")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise SettingsError(f"{path} belongs to another user; WaAP reads credentials only from your own file")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as e:
        # the parser's message quotes the file's text, which may hold the token: name the error type only
        raise SettingsError(f"{path}: not a valid INI file ({type(e).__name__})") from None
    if not parser.has_section("jenkins"):
        raise SettingsError(f"{path}: no [jenkins] section")
    section = parser["jenkins"]
    missing = [k for k in ("url", "user", "token") if not section.get(k, "").strip()]
    if missing:
        raise SettingsError(f"{path}: [jenkins] lacks {', '.join(missing)}")
    timeout = section.get("timeout", "30")
    try:
        timeout_s = float(timeout)
    except ValueError:
        raise SettingsError(f"{path}: [jenkins] timeout must be a number of seconds") from None
    return JenkinsSettings(
        url=section["url"].strip(), user=section["user"].strip(), token=section["token"].strip(),
        job=job or section.get("job", DEFAULT_JOB).strip(), timeout_s=timeout_s, source=str(path),
    )


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"the Jenkins URL must be http(s)://host[:port][/prefix], not {url!r}")
    if parts.username or parts.password:
        raise SettingsError("put the Jenkins user and token in their own settings, not in the URL")
