"""Creating or updating the profiling job on the Jenkins controller from a rendered ``config.xml``, through
python-jenkins. Credentials come from ``settings.load_settings`` (environment or an owner-only file); the token is
never part of a message, even when Jenkins' own error text would carry it."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Callable, Optional

import jenkins
import requests

from ..errors import WaapError
from .settings import JenkinsSettings

__all__ = ["ApplyResult", "JenkinsApplyError", "apply_job", "check_config_xml"]


class JenkinsApplyError(WaapError):
    """Jenkins could not be reached, refused the credentials, or did not accept the job."""


@dataclass(frozen=True)
class ApplyResult:
    job: str
    action: str  # "created" or "updated"
    url: str  # the job's page


def check_config_xml(config_xml: str) -> None:
    """A config.xml that Jenkins would accept as a pipeline job: well-formed, with a flow-definition root."""
    try:
        root = ET.fromstring(config_xml.encode("utf-8"))
    except ET.ParseError as e:
        raise JenkinsApplyError(f"the rendered config.xml is not well-formed XML: {e}") from None
    if root.tag != "flow-definition" or root.find("definition/script") is None:
        raise JenkinsApplyError("the rendered config.xml is not a pipeline job (flow-definition with a script)")


def apply_job(settings: JenkinsSettings, job: str, config_xml: str, *,
              connect: Optional[Callable[..., Any]] = None) -> ApplyResult:
    """Create ``job`` from ``config_xml``, or replace the configuration of the job of that name."""
    check_config_xml(config_xml)
    factory = connect or jenkins.Jenkins
    server = factory(settings.url, username=settings.user, password=settings.token, timeout=settings.timeout_s)
    step = "look up the job"
    try:
        exists = bool(server.job_exists(job))
        step = "update the job" if exists else "create the job"
        if exists:
            server.reconfig_job(job, config_xml)
        else:
            server.create_job(job, config_xml)
    except (jenkins.JenkinsException, requests.exceptions.RequestException) as e:
        raise _translate(e, settings, job, step) from None
    return ApplyResult(job=job, action="updated" if exists else "created",
                       url=f"{settings.url.rstrip('/')}/job/{job}/")


def _translate(error: Exception, settings: JenkinsSettings, job: str, step: str) -> JenkinsApplyError:
    where = f"Jenkins at {settings.url}"
    status: Optional[int] = None
    if isinstance(error, requests.exceptions.HTTPError) and error.response is not None:
        status = error.response.status_code
    elif isinstance(error, jenkins.JenkinsException):
        found = re.search(r"\[(\d{3})\]", str(error))
        status = int(found.group(1)) if found else None
    if isinstance(error, (jenkins.TimeoutException, requests.exceptions.Timeout)):
        message = f"{where} did not answer within {settings.timeout_s:g} s (trying to {step})"
    elif isinstance(error, requests.exceptions.ConnectionError):
        message = f"cannot reach {where} (trying to {step}): is the URL right and the controller up?"
    elif status == 401:
        message = (f"{where} refused the credentials of user {settings.user!r} (HTTP 401): the API token is wrong "
                   f"or revoked; make a new one (your user menu, Security, API Token) and set it in JENKINS_TOKEN "
                   f"or in {settings.source}")
    elif status == 403:
        message = (f"{where} refused to let user {settings.user!r} {step} (HTTP 403): that user needs the "
                   "Job/Create and Job/Configure permissions (and an API token, not a password)")
    elif isinstance(error, jenkins.NotFoundException) or status == 404:
        message = f"{where} has no place for job {job!r} (HTTP 404 while trying to {step}): is the URL right?"
    elif status is not None:
        message = f"{where} answered HTTP {status} when asked to {step} {job!r}"
    else:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        message = f"{where}: could not {step} {job!r}: {first_line}"
    # Jenkins' error pages are not ours to trust: never let a message carry the token
    return JenkinsApplyError(message.replace(settings.token, "<token>") if settings.token else message)
