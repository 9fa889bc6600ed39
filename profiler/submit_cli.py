"""The ``waap-submit`` command: submit a profile to the ECR's Jenkins job, follow the build, fetch its results.
A thin layer over ``profiler.pipeline.client``: it parses options, checks them, shows progress and picks exit codes.

Exit codes:
  0    the build ended SUCCESS: profiling worked (with --no-wait: the build was queued)
  1    the build ended FAILURE, ABORTED or NOT_BUILT (profiling failed), or its artifacts could not be fetched safely
  2    invalid input (unknown parameter, bad value, unreadable profile file): nothing was sent to Jenkins
  3    Jenkins is not configured or unreachable, refused the credentials or a permission, or the job is missing or
       lacks a parameter (`waap jenkins apply` creates and updates it)
  4    the build ended UNSTABLE: profiling worked, the app ended abnormally (non-zero exit, timeout, OOM)
  5    the queue item was cancelled before it started, or --wait-timeout passed (the build goes on)
  130  interrupted (Ctrl-C) while waiting: the build goes on, unless --abort-on-interrupt
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple

from . import __version__
from .errors import SpecError, WaapError
from .pipeline.artifacts import ArtifactError, UnsafeArchive
from .pipeline.client import (
    FIRST_POLL_S,
    Build,
    BuildCancelled,
    JenkinsClient,
    JenkinsError,
    QueueItem,
    QueueState,
    WaitTimeout,
)
from .pipeline.params import DEFAULTS, MAX_VALUE_BYTES, check_parameters, profile_from_parameters
from .pipeline.settings import DEFAULT_JOB, JenkinsSettings, SettingsError, load_settings
from .rundir import read_json_object
from .store import ResultStore, StoreError, store_path

__all__ = ["EXIT_CODES", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_JENKINS, EXIT_UNSTABLE, EXIT_CANCELLED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
# The longest pause between polls. It bounds how late waap-submit sees the end of a build (the target: at
# most 1 s over the build, start-up and download included): 0.5 s costs Jenkins two small requests a second.
POLL_S = 0.5
EXIT_CODES: Dict[str, int] = {"SUCCESS": EXIT_OK, "UNSTABLE": EXIT_UNSTABLE, "FAILURE": EXIT_FAILED,
                              "ABORTED": EXIT_FAILED, "NOT_BUILT": EXIT_FAILED}
# options of app_docker_args whose check depends on the device (its data roots, files and devices): a refusal
# here, on the submitting machine, is only a warning; the device checks them again in any case
_DEVICE_DEPENDENT = ("-v", "--volume", "--device")
_OPTIONS = (  # option, parameter, help
    ("--app-name", "app_name", "the app image, e.g. waggle/plugin-objectcounter:0.0.0"),
    ("--app-args", "app_args", "the app's arguments (write --app-args='-x 1' when they start with '-')"),
    ("--app-docker-args", "app_docker_args", "allow-listed docker options for the app, e.g. --app-docker-args='-e "
                                             "A=1 --memory 1g'"),
    ("--timeout", "timeout", "seconds before the app is stopped; 0 = none (default: the job's)"),
    ("--metrics", "metrics", "comma-separated collectors (default: the job's)"),
    ("--interval", "interval", "sampling interval in seconds"),
    ("--repeat", "repeat", "runs per target"),
    ("--agent-label", "agent_label", "the Jenkins label of the device(s) to profile on (default: the job's)"),
)

EPILOG = """\
Parameters are checked here before Jenkins is contacted (Jenkins silently drops parameters a job does not define),
and again on the device. app_docker_args is checked against the allow-list here; its limits and mounts are checked
against this machine's WAAP_MAX_MEMORY, WAAP_MAX_CPUS, WAAP_MAX_PIDS, WAAP_DATA_ROOTS and WAAP_DEVICES, and a mount
or device refused here is only a warning: the device re-checks everything against its own ceilings and data roots.

Jenkins settings: JENKINS_URL, JENKINS_USER and JENKINS_TOKEN (an API token) from the environment, or url, user,
token (and job, timeout) in the [jenkins] section of --config / $WAAP_JENKINS_CONFIG / ~/.config/waap/jenkins.ini,
a file only you may read (chmod 600). The token is never taken from the command line and never printed.

The artifacts are downloaded to --output; --store FILE also records their runs in a SQLite results store
(docs/store.md), e.g. --store results/waap.db, the one `waap run` and `waap runs` use.

Exit codes: 0 SUCCESS (or queued, with --no-wait) · 1 FAILURE/ABORTED, or artifacts unusable · 2 invalid input,
nothing sent · 3 Jenkins not configured/unreachable, credentials or permission refused, job missing or outdated
(`waap jenkins apply`) · 4 UNSTABLE (profiling worked, the app ended abnormally) · 5 cancelled in the queue, or
--wait-timeout passed · 130 interrupted while waiting (the build goes on unless --abort-on-interrupt).
"""


class Usage(WaapError):
    """Invalid command-line input (exit 2)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="waap-submit", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Submit a profile to the ECR's Jenkins profiling job, follow the build, download its run "
                    "directories and print their summary.")
    p.add_argument("--version", action="version", version=f"waap-submit {__version__}")
    p.add_argument("--job", help=f"the Jenkins job (default: $WAAP_JENKINS_JOB, the config file's, or {DEFAULT_JOB})")
    for option, _, text in _OPTIONS:
        p.add_argument(option, help=text)
    p.add_argument("--profile", "-f", type=Path, metavar="FILE",
                   help="a WaAP profile or an ECR sage.yaml with a profiling: section, sent whole as the profile "
                        "parameter (it replaces --app-args, --timeout, --metrics, --interval, --repeat)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="any job parameter by its name (repeatable), e.g. --param agent_label=nx2")
    p.add_argument("--no-wait", action="store_true", help="print the queue item's URL once queued, and exit")
    p.add_argument("--follow", action="store_true", help="stream the build's console")
    p.add_argument("--output", "-o", type=Path, metavar="DIR",
                   help="where to put the artifacts (default: ./results/jenkins-<job>-<build number>/)")
    p.add_argument("--poll", type=float, default=POLL_S, metavar="S",
                   help=f"longest pause between polls of Jenkins, in seconds (default {POLL_S:g}): how late the end "
                        f"of the build may be seen; pauses start at {FIRST_POLL_S:g} s and grow to it")
    p.add_argument("--wait-timeout", type=float, metavar="S",
                   help="stop waiting after S seconds in all (exit 5; the build goes on)")
    p.add_argument("--abort-on-interrupt", action="store_true",
                   help="on Ctrl-C, cancel the queue item or abort the build (default: leave it running)")
    p.add_argument("--config", type=Path, metavar="FILE", help="the Jenkins settings file (see below)")
    p.add_argument("--store", metavar="FILE",
                   help="also record the downloaded runs in this SQLite results store (e.g. results/waap.db)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    return p


def collect_parameters(ns: argparse.Namespace) -> Dict[str, str]:
    """The job parameters the user gave (only those: Jenkins fills in the job's own defaults)."""
    values: Dict[str, str] = {}

    def put(name: str, value: str, where: str) -> None:
        if name in values:
            raise Usage(f"parameter {name} is given twice (last by {where})")
        values[name] = value

    for option, name, _ in _OPTIONS:
        value = getattr(ns, name)
        if value is not None:
            put(name, value, option)
    if ns.profile is not None:
        limit = MAX_VALUE_BYTES["profile"]
        try:
            with open(ns.profile, "rb") as fh:
                data = fh.read(limit + 1)
        except OSError as e:
            raise Usage(f"cannot read the profile {ns.profile}: {e.strerror or e}") from e
        if len(data) > limit:
            raise Usage(f"{ns.profile}: larger than {limit} bytes")
        try:
            put("profile", data.decode("utf-8"), "--profile")
        except UnicodeDecodeError as e:
            raise Usage(f"{ns.profile}: not UTF-8 text") from e
    for item in ns.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise Usage(f"--param {item!r}: expected NAME=VALUE")
        put(name.strip(), value, f"--param {name.strip()}")
    return values


def validate(values: Mapping[str, str]) -> List[str]:
    """Check the parameters as the device will (``SpecError`` when they are wrong); returns warnings."""
    check_parameters(values)
    docker_args = values.get("app_docker_args", "")
    profile_from_parameters({k: v for k, v in values.items() if k != "app_docker_args"})
    if not docker_args.strip():
        return []
    try:
        from .dockerargs import DockerPolicy, parse_docker_args
    except ImportError:  # pragma: no cover - the allow-list ships with WaAP; kept for partial installs
        return ["app_docker_args is not checked here (this WaAP has no profiler.dockerargs); the device checks it"]
    policy = DockerPolicy.from_env(os.environ)
    try:
        parse_docker_args(docker_args, policy, source="app_docker_args")
        return []
    except SpecError as e:
        if e.field not in _DEVICE_DEPENDENT:
            raise
    # a mount or device was refused: that may be this machine's doing. Everything else must pass here; each
    # mount/device is only warned about, and the device decides.
    others, dependent = _split_device_dependent(docker_args)  # it split once already: no ValueError
    parse_docker_args(shlex.join(others), policy, source="app_docker_args")
    warnings = []
    for option in dependent:
        try:
            parse_docker_args(shlex.join(option), policy, source="app_docker_args")
        except SpecError as e:
            warnings.append(f"{e} (checked against this machine; the device decides with its own data roots and "
                            "devices)")
    return warnings


def _split_device_dependent(text: str) -> Tuple[List[str], List[List[str]]]:
    """The options of ``text`` as (the others, each mount/device option with its value); shlex errors are left
    for ``parse_docker_args`` to report."""
    tokens = shlex.split(text, comments=False, posix=True)
    others: List[str] = []
    dependent: List[List[str]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--"):
            name, inline = token.partition("=")[0], "=" in token
        else:
            name, inline = token[:2], len(token) > 2
        if name in _DEVICE_DEPENDENT:
            dependent.append(tokens[i:i + 1] if inline else tokens[i:i + 2])
            i += 1 if inline else 2
        else:
            others.append(token)
            i += 1
    return others, dependent


class Progress:
    """Progress on stderr: a rewritten line on a terminal, otherwise a line on each change and every ``every_s``."""

    def __init__(self, err: TextIO, *, quiet: bool, follow: bool, every_s: float = 10.0) -> None:
        self.err = err
        self.quiet = quiet
        self.tty = err.isatty() and not follow  # the console on stdout would tear a rewritten line
        self.every_s = every_s
        self._open = False
        self._last_key: Tuple[str, ...] = ()
        self._last_at = 0.0

    def line(self, text: str) -> None:
        if self.quiet:
            return
        self.clear()
        self.err.write(text + "\n")
        self.err.flush()

    def clear(self) -> None:
        if self._open:
            self.err.write("\r\033[K")
            self._open = False

    def status(self, key: Tuple[str, ...], text: str) -> None:
        if self.quiet:
            return
        if self.tty:
            self.err.write("\r\033[K" + text)
            self.err.flush()
            self._open = True
            return
        now = time.monotonic()
        if key != self._last_key or now - self._last_at >= self.every_s:
            self.line(text)
            self._last_key, self._last_at = key, now

    def queue_state(self, state: QueueState, elapsed_s: float) -> None:
        if state.state == "left":
            return
        why = f": {state.why}" if state.why else ""
        self.status(("queue", state.state), f"queued ({state.state}{why})  {elapsed_s:.0f}s")

    def building(self, build: Build, info: Mapping[str, Any], elapsed_s: float) -> None:
        if info.get("building") is False:
            return
        estimate = info.get("estimatedDuration")
        expected = f" of ~{estimate / 1000:.0f}s" if isinstance(estimate, (int, float)) and estimate > 0 else ""
        self.status(("build", str(build.number)), f"building #{build.number}  {elapsed_s:.0f}s{expected}")


def _default_output(job: str, number: int) -> Path:
    base = Path("results") / f"jenkins-{job.strip('/').replace('/', '-')}-{number}"
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def print_summary(info: Mapping[str, Any], build: Build, dest: Optional[Path], files: Sequence[Path],
                  out: TextIO) -> None:
    """The build's result, then per run directory: status, stop reason, exit code, and its key metrics."""
    duration = info.get("duration")
    took = f" in {duration / 1000:.1f}s" if isinstance(duration, (int, float)) else ""
    out.write(f"\nBuild #{build.number} of {build.job}: {info.get('result')}{took}  {build.url}\n")
    if dest is None or not files:
        out.write(f"No artifacts: the build archived nothing; see its console at {build.url}console\n")
        return
    out.write(f"Artifacts: {len(files)} file(s) in {dest}\n")
    manifests = sorted(p for p in files if p.name == "manifest.json")
    if not manifests:
        out.write("No run directory (manifest.json) among the artifacts.\n")
        return
    rows = [("run", "status", "stop reason", "exit code", "duration")]
    for path in manifests:
        m = read_json_object(path)
        code = m.get("exit_code")
        seconds = m.get("duration_s")
        rows.append((
            path.parent.relative_to(dest).as_posix(), str(m.get("status", "?")), str(m.get("stop_reason", "?")),
            "-" if code is None else str(code),
            f"{seconds:.1f}s" if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else "-",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out.write("\n")
    for row in rows:
        out.write("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")
    for path in manifests:
        summary = read_json_object(path.parent / "summary.json")
        if not summary:
            continue
        from .summary import format_table  # only when there is something to show: it loads the collectors

        table = format_table(summary)
        if table:
            out.write(f"\n{path.parent.relative_to(dest).as_posix()}\n")
            out.write("\n".join("  " + line for line in table.splitlines()) + "\n")


def ingest(run_dirs: Sequence[Path], store: Optional[str], out: TextIO, err: TextIO) -> None:
    """Record the downloaded run directories in the results store ``store`` (when given). A store that fails is
    reported, not fatal: the build's outcome stands and the artifacts are on disk for ``waap ingest``."""
    if store is None or not run_dirs:
        return
    try:
        with ResultStore(store_path(store)) as s:
            report = s.ingest(run_dirs, now_ns=time.time_ns())
    except StoreError as e:
        err.write(f"waap-submit: not stored: {e}\n")
        return
    for path, why in report.skipped:
        err.write(f"waap-submit: not stored: {path}: {why}\n")
    out.write(f"Stored {len(report.stored)} run(s) in {store}\n")


def _submit(ns: argparse.Namespace, values: Dict[str, str], settings: JenkinsSettings, out: TextIO,
            err: TextIO) -> int:
    progress = Progress(err, quiet=ns.quiet, follow=ns.follow)
    job = settings.job
    item: Optional[QueueItem] = None
    build: Optional[Build] = None
    ended = False
    start = time.monotonic()

    def left() -> Optional[float]:
        return None if ns.wait_timeout is None else max(0.0, ns.wait_timeout - (time.monotonic() - start))

    with JenkinsClient(settings) as client:
        try:
            defined = client.job_parameters(job)
            undefined = [name for name in values if name not in defined]
            if undefined:
                err.write(f"waap-submit: job {job!r} on {client.base} does not define the parameter(s) "
                          f"{', '.join(undefined)}, and Jenkins would drop them silently: it was set up from an older "
                          "template; update it with `waap jenkins apply`\n")
                return EXIT_JENKINS
            item = client.trigger(job, values)
            if ns.no_wait:
                out.write(item.url + "\n")
                return EXIT_OK
            progress.line(f"queued {job} as {item.url}")
            build = started = client.wait_for_build(item, on_state=progress.queue_state, poll_s=ns.poll,
                                                    timeout_s=left())
            progress.line(f"build #{started.number} started: {started.url}")

            def console(text: str) -> None:
                progress.clear()
                out.write(text)
                out.flush()

            info = client.wait_for_result(
                started, on_progress=lambda i, e: progress.building(started, i, e),
                on_console=console if ns.follow else None, poll_s=ns.poll, timeout_s=left(),
            )
            result = str(info.get("result"))
            ended = True
            progress.line(f"build #{build.number} ended: {result}")
            dest = ns.output if ns.output is not None else _default_output(job, build.number)
            files = client.download_artifacts(build, dest, info=info)
            print_summary(info, build, dest if files else None, files, out)
            ingest(sorted({p.parent for p in files if p.name == "manifest.json"}), ns.store, out, err)
            return EXIT_CODES.get(result, EXIT_FAILED)
        except BuildCancelled as e:
            progress.clear()
            err.write(f"waap-submit: {e}\n")
            return EXIT_CANCELLED
        except WaitTimeout as e:
            progress.clear()
            where = build.url if build is not None else (item.url if item is not None else client.job_url(job))
            err.write(f"waap-submit: {e}; the build goes on: {where}\n")
            return EXIT_CANCELLED
        except KeyboardInterrupt:
            progress.clear()
            if ended and build is not None:
                err.write(f"\nwaap-submit: interrupted while fetching the artifacts of {build.url}\n")
                return EXIT_INTERRUPTED
            return _interrupted(client, item, build, ns.abort_on_interrupt, err)


def _interrupted(client: JenkinsClient, item: Optional[QueueItem], build: Optional[Build], abort: bool,
                 err: TextIO) -> int:
    where = build.url if build is not None else (item.url if item is not None else None)
    if where is None:
        err.write("\nwaap-submit: interrupted before the build was queued\n")
        return EXIT_INTERRUPTED
    if not abort:
        err.write(f"\nwaap-submit: stopped waiting; the build goes on: {where}\n")
        return EXIT_INTERRUPTED
    try:
        if build is not None:
            client.stop(build)
            err.write(f"\nwaap-submit: interrupted; build #{build.number} aborted: {where}\n")
        elif item is not None:
            client.cancel(item)
            err.write(f"\nwaap-submit: interrupted; queue item {item.id} cancelled\n")
    except JenkinsError as e:
        err.write(f"\nwaap-submit: interrupted, and could not abort it ({e}): {where}\n")
    return EXIT_INTERRUPTED


def main(argv: Optional[Sequence[str]] = None, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
         environ: Mapping[str, str] = os.environ) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        if ns.store is not None:
            try:
                store_path(ns.store)
            except StoreError as e:
                raise Usage(f"--store: {e}") from None
        if ns.poll <= 0 or (ns.wait_timeout is not None and ns.wait_timeout <= 0):
            raise Usage("--poll and --wait-timeout take a number of seconds > 0")
        values = collect_parameters(ns)
        if not values:
            raise Usage(f"nothing to profile: give --app-name IMG or --profile FILE (parameters: "
                        f"{', '.join(DEFAULTS)})")
        for warning in validate(values):
            err.write(f"waap-submit: warning: {warning}\n")
        if ns.output is not None and ns.output.exists() and (not ns.output.is_dir() or any(ns.output.iterdir())):
            raise Usage(f"--output {ns.output}: not an empty folder")
    except (Usage, SpecError) as e:
        err.write(f"waap-submit: invalid input: {e}\n")
        return EXIT_USAGE
    try:
        settings = load_settings(environ, config=ns.config, job=ns.job)
    except SettingsError as e:
        err.write(f"waap-submit: {e}\n")
        return EXIT_JENKINS
    try:
        return _submit(ns, values, settings, out, err)
    except (UnsafeArchive, ArtifactError) as e:
        err.write(f"waap-submit: the build's artifacts could not be fetched: {e}\n")
        return EXIT_FAILED
    except JenkinsError as e:
        err.write(f"waap-submit: {e}\n")
        return EXIT_JENKINS
    except KeyboardInterrupt:
        err.write("\nwaap-submit: interrupted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
