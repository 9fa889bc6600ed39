"""The ``waap`` command: a thin layer over the library that parses options, shows progress and picks exit codes.

Exit codes: 0 profiling worked (every run complete) · 1 profiling failed or a run is partial · 2 invalid input ·
3 Docker engine unreachable · 4 (``waap agent`` only) profiling worked but an app ended abnormally ·
130 interrupted before any run finished.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

from . import __version__
from .cli_store import add_store_options, add_store_parsers, cmd_ingest, cmd_runs, store_session
from .doctor import diagnose
from .engine import connect
from .errors import DockerUnavailable, SpecError, WaapError
from .hostpath import detect_mapper
from .images import PULL_POLICIES, PullProgress
from .live import LiveMetrics, parse_address
from .pipeline.params import PARAMETERS, build_budget_s, profile_from_parameters, with_docker_args
from .profile import Profile
from .reaper import Reaped, reap
from .rundir import read_json_object
from .runner import Observer, RunInfo, Runner, RunResult, SessionResult
from .spec import load_profile, profile_from_args
from .summary import SUMMARY, format_highlights, format_table

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DOCKER, EXIT_APP_ABNORMAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class ConsoleObserver(Observer):
    """Live progress: a rewritten status line on a terminal, a line every ``every_s`` seconds otherwise."""

    def __init__(self, out: TextIO, *, quiet: bool = False, every_s: float = 10.0,
                 live: Optional[LiveMetrics] = None) -> None:
        self.out = out
        self.live = live
        self.quiet = quiet
        self.tty = out.isatty()
        self.every_s = every_s
        self._last_line = 0.0
        self._pull_shown = 0.0
        self._open_line = False

    def _print(self, text: str) -> None:
        if self._open_line:
            self.out.write("\n")
            self._open_line = False
        self.out.write(text + "\n")
        self.out.flush()

    def _status(self, text: str) -> None:
        if self.quiet:
            return
        if self.tty:
            self.out.write("\r\033[K" + text)
            self.out.flush()
            self._open_line = True
        elif time.monotonic() - self._last_line >= self.every_s:
            self._print(text)
            self._last_line = time.monotonic()

    def reaped(self, items: List[Reaped]) -> None:
        for item in items:
            self._print(f"cleaned up {item.kind} {item.name} of run {item.run_id or '?'}: {item.why}")

    def pull_progress(self, progress: PullProgress) -> None:
        now = time.monotonic()
        if now - self._pull_shown < 0.5 and self.tty is False:
            return
        self._pull_shown = now
        mb_done, mb_total = progress.bytes_done / 1e6, progress.bytes_total / 1e6
        self._status(f"pulling {progress.image}: {progress.layers_done}/{len(progress.layers)} layers, "
                     f"{mb_done:.1f}/{mb_total:.1f} MB  {progress.status}")

    def run_started(self, run: RunInfo) -> None:
        if self.live is not None:
            self.live.begin_run(run.run_id)
        args = " ".join(run.target.args) or "(image default)"
        under = f", under {run.tool}" if run.tool else ""
        self._print(f"[{run.run_number}/{run.runs_total}] {run.path.name}: args {args}{under}")
        self._last_line = time.monotonic()

    def tick(self, run: RunInfo, elapsed_s: float) -> None:
        limit = f"{run.target.timeout_s:g}s" if run.target.timeout_s > 0 else "no timeout"
        self._status(f"  running  {elapsed_s:6.1f}s / {limit}")

    def event(self, run: RunInfo, kind: str, fields: Dict[str, Any]) -> None:
        if kind == "signal_sent":
            self._print(f"  sent {fields['signal']} ({fields['reason']})")
        elif kind in ("error", "warning"):
            self._print(f"  {kind}: {fields.get('message')}")
        elif kind == "collector_failed":
            self._print(f"  collector {fields.get('collector')} failed: {fields.get('reason')}")

    def run_finished(self, result: RunResult) -> None:
        code = "-" if result.exit_code is None else str(result.exit_code)
        self._print(f"  {result.status}: {result.stop_reason}, exit code {code}, {result.duration_s:.1f}s")


def _add_run_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="profile a plugin image on the local Docker engine",
                       description="Run a plugin image under WaAP on the local Docker engine and write run "
                                   "directories under --output. Give a profile file, or --image with --args.")
    p.add_argument("--profile", "-f", type=Path, help="profile YAML, or an ECR sage.yaml with a profiling: section")
    p.add_argument("--image", help="the app image (overrides the profile's)")
    p.add_argument("--args", dest="app_args", help="app arguments, split like a shell would (never run by one)")
    p.add_argument("--timeout", help="seconds before the app is stopped (0 = none)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="app environment (repeatable)")
    p.add_argument("--metrics", help="comma-separated collector names")
    p.add_argument("--interval", help="sampling interval in seconds")
    p.add_argument("--repeat", help="runs per target")
    p.add_argument("--grace", help="seconds between SIGINT and SIGTERM at the timeout")
    p.add_argument("--memory", help="memory limit of the app container, e.g. 512m")
    p.add_argument("--cpus", help="CPU limit of the app container, e.g. 1.5")
    p.add_argument("--tools", help="run the app under profiling tools found in its image, one run each: tau, nvprof, "
                   "nsys (comma-separated; see docs/tools.md)")
    p.add_argument("--output", "-o", type=Path, default=Path("results"), help="results folder (default: ./results)")
    p.add_argument("--pull", choices=PULL_POLICIES, default="missing", help="when to pull the image")
    p.add_argument("--quiet", "-q", action="store_true", help="no live progress")
    p.add_argument("--docker-args", metavar="OPTIONS",
                   help="allow-listed docker options for the app, e.g. \"-e KEY=V --memory 512m -v /data/x:/x:ro\" "
                        "(see docs/docker-args.md)")
    p.add_argument("--live", metavar="HOST:PORT", type=parse_address,
                   help="serve current values in Prometheus text format during the run (e.g. 127.0.0.1:9464)")
    add_store_options(p)


def _add_agent_parser(sub: Any) -> None:
    p = sub.add_parser(
        "agent", help="run the profile that Jenkins job parameters in the environment describe (the pipeline step)",
        description="The agent half of the Jenkins pipeline. Reads the job parameters (app_name, app_args, "
                    "app_docker_args, timeout, metrics, interval, repeat, profile, agent_label) from environment "
                    "variables of the same names and the device's docker policy from WAAP_DATA_ROOTS, "
                    "WAAP_MAX_MEMORY, WAAP_MAX_CPUS, WAAP_MAX_PIDS, WAAP_DEVICES, WAAP_NVIDIA_RUNTIME. Exit codes: "
                    "0 profiled, every app ended normally; 4 profiled, an app ended abnormally; 1 profiling failed "
                    "or a run is partial; 2 invalid parameters; 3 Docker unreachable.")
    p.add_argument("--output", "-o", type=Path, required=True, help="results folder (the stashed one)")
    p.add_argument("--plan", type=Path, metavar="FILE",
                   help="only validate the parameters and write the build's time budget in seconds to FILE")
    p.add_argument("--no-timeout-budget", type=float, default=3600.0, metavar="S",
                   help="seconds a target without a timeout counts for in the budget (default 3600)")
    p.add_argument("--pull", choices=PULL_POLICIES, default="missing", help="when to pull the image")
    p.add_argument("--quiet", "-q", action="store_true", help="no live progress")
    p.set_defaults(live=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="waap", description="WaAP, the Waggle Application Profiler.")
    parser.add_argument("--version", action="version", version=f"waap {__version__}")
    parser.add_argument("--docker-host", help="Docker engine address (default: $DOCKER_HOST or the local socket)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run_parser(sub)
    _add_agent_parser(sub)
    _add_jenkins_parser(sub)
    add_store_parsers(sub)
    sub.add_parser("doctor", help="report what this machine can profile")
    sub.add_parser("reap", help="remove containers and networks left behind by runners that died")
    return parser


def _profile_from(ns: argparse.Namespace) -> Profile:
    overrides = {k: getattr(ns, k) for k in ("app_args", "timeout", "metrics", "interval", "repeat", "grace",
                                             "memory", "cpus", "tools")}
    if ns.profile is not None:
        given = [f"--{k.replace('app_', '')}" for k, v in overrides.items() if v is not None] + (
            ["--env"] if ns.env else [])
        if given:
            raise SpecError(f"{', '.join(given)} cannot be combined with --profile: put them in the profile file")
        return load_profile(ns.profile, image=ns.image)
    if not ns.image:
        raise SpecError("give a profile (--profile FILE) or an image (--image IMG)")
    metrics = [m.strip() for m in ns.metrics.split(",") if m.strip()] if ns.metrics else None
    return profile_from_args(
        image=ns.image, args=ns.app_args or "", timeout=ns.timeout or 0, env=ns.env, metrics=metrics,
        interval=ns.interval, repeat=ns.repeat, grace=ns.grace, memory=ns.memory, cpus=ns.cpus, tools=ns.tools,
    )


def _summary(session: SessionResult, out: TextIO) -> None:
    out.write("\nSummary\n")
    rows = [("run", "status", "stop reason", "exit code", "duration")]
    for r in session.runs:
        rows.append((r.info.path.name, r.status, r.stop_reason, "-" if r.exit_code is None else str(r.exit_code),
                     f"{r.duration_s:.1f}s"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")
    for r in session.runs:
        if r.error:
            out.write(f"  {r.info.path.name}: {r.error}\n")
    for r in session.runs:
        _run_metrics(r, out)
    out.write(f"Results: {session.path}\n")


def _tool_lines(entry: Dict[str, Any]) -> List[str]:
    """What a profiling tool left, as the manifest's ``tools`` entry says (docs/run-directory.md)."""
    name = entry.get("name", "?")
    files = entry.get("files") or []
    empty = entry.get("empty") or {}
    head = f"tool {name}: {entry.get('status', '?')}, {len(files)} file(s) of parsed results"
    if files:
        head += f" in tools/{name}/"
    if empty:
        head += f"; {len(empty)} report(s) with no data of their kind"
    lines = [head]
    if entry.get("error"):
        lines.append(f"  {entry['error']}")
    lines += [f"  {report}: {error}" for report, error in (entry.get("report_errors") or {}).items()]
    lines += [f"  {message}" for message in entry.get("messages") or []]
    highlights = format_highlights(entry.get("highlights") or [])
    lines += [f"  {line}" for line in highlights.splitlines()]
    return lines


def _run_metrics(run: RunResult, out: TextIO) -> None:
    """The key metrics of a run, its collectors that did not work (with why) and what its profiling tool left."""
    summary = read_json_object(run.info.path / SUMMARY)
    table = format_table(summary) if summary else ""
    manifest = read_json_object(run.info.path / "manifest.json")
    notes = [
        f"{c.get('name')}: {c.get('status')} ({c.get('reason', '')})"
        for c in manifest.get("collectors", [])
        if c.get("status") != "ok"
    ]
    notes += [line for entry in manifest.get("tools", []) if isinstance(entry, dict) for line in _tool_lines(entry)]
    if table or notes:
        out.write(f"\n{run.info.path.name}\n")
    if table:
        out.write("\n".join("  " + line for line in table.splitlines()) + "\n")
    for note in notes:
        out.write(f"  {note}\n")


def _cmd_run(ns: argparse.Namespace, out: TextIO) -> int:
    profile = _profile_from(ns)
    if ns.docker_args:
        from .dockerargs import DockerPolicy

        profile = with_docker_args(profile, ns.docker_args, DockerPolicy.from_env())
    session, interrupted = _profile_session(profile, ns, out)
    if session.runs and not ns.no_store:
        store_session(session.path, ns.output, ns.store, out)
    if interrupted and not session.runs:
        return EXIT_INTERRUPTED
    return EXIT_OK if session.ok else EXIT_FAILED


def _cmd_agent(ns: argparse.Namespace, out: TextIO) -> int:
    """The pipeline's agent step: the job's parameters come from the environment (Jenkins exports them there),
    are validated again here on the device, against the device's own docker policy."""
    from .dockerargs import DockerPolicy

    values = {p.name: os.environ[p.name] for p in PARAMETERS if p.name in os.environ}
    profile = profile_from_parameters(values, docker_policy=DockerPolicy.from_env())
    if ns.plan is not None:
        budget = build_budget_s(profile, no_timeout_s=ns.no_timeout_budget)
        ns.plan.write_text(f"{budget}\n")
        tools = f" under {', '.join(profile.tools)}" if profile.tools else ""
        out.write(f"plan: {profile.image}, {len(profile.targets)} target(s) x {profile.repeat}{tools}, "
                  f"budget {budget} s\n")
        return EXIT_OK
    session, interrupted = _profile_session(profile, ns, out)
    if interrupted and not session.runs:
        return EXIT_INTERRUPTED
    if not session.ok:
        return EXIT_FAILED
    return EXIT_APP_ABNORMAL if any(_abnormal(r) for r in session.runs) else EXIT_OK


def _abnormal(run: RunResult) -> bool:
    """The app ended badly on its own: killed for memory or from outside, or a non-zero exit of its own accord.
    A stop at the timeout is the plan, not the app's failure."""
    return run.stop_reason in ("oom", "killed") or (run.stop_reason == "exited" and run.exit_code not in (0, None))


def _profile_session(profile: Profile, ns: argparse.Namespace, out: TextIO) -> Tuple[SessionResult, bool]:
    """Run a session with live progress, Ctrl-C handling and the closing summary. Returns it and whether the user
    interrupted it."""
    client = connect(ns.docker_host)
    live: Optional[LiveMetrics] = None
    if ns.live is not None:
        live = LiveMetrics()
        host, port = live.serve(f"{ns.live[0]}:{ns.live[1]}")
        out.write(f"live metrics: http://{host}:{port}/metrics\n")
    observer = ConsoleObserver(out, quiet=ns.quiet, live=live)
    runner = Runner(client, output_root=ns.output, observer=observer, path_mapper=detect_mapper(client),
                    pull_policy=ns.pull, listeners=[live] if live is not None else [])
    interrupts = 0

    def on_signal(signum: int, _frame: Optional[FrameType]) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            raise KeyboardInterrupt
        runner.request_stop("interrupted")
        out.write(f"\n{signal.Signals(signum).name}: stopping the app (again to abandon it)\n")

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        out.write(f"waap {__version__}: profiling {profile.image} from {profile.source}\n")
        session = runner.run_session(profile)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if live is not None:
            live.close()
    _summary(session, out)
    return session, interrupts > 0


def _cmd_doctor(ns: argparse.Namespace, out: TextIO) -> int:
    findings = diagnose(ns.docker_host)
    for f in findings:
        mark = "ok " if f.ok else ("ERR" if f.required else " - ")
        out.write(f"[{mark}] {f.name:<11} {f.detail}\n")
        if not f.ok and f.hint:
            out.write(f"      {'':<11} fix: {f.hint}\n")
    return EXIT_OK if all(f.ok for f in findings if f.required) else EXIT_FAILED


def _cmd_reap(ns: argparse.Namespace, out: TextIO) -> int:
    items = reap(connect(ns.docker_host))
    for item in items:
        out.write(f"removed {item.kind} {item.name} (run {item.run_id or '?'}): {item.why}\n")
    out.write(f"{len(items)} leftover object(s) removed\n")
    return EXIT_OK


def _add_jenkins_parser(sub: Any) -> None:
    p = sub.add_parser("jenkins", help="render the Jenkins pipeline and job, or apply the job to the controller",
                       description="The ECR's Jenkins job for profiling (see jenkins/README.md). Deployment values "
                                   "(job_name, agent_label, profiler_image, results_dir, ...) come from --deployment "
                                   "FILE (YAML) and --set KEY=VALUE; credentials only from JENKINS_URL, JENKINS_USER "
                                   "and JENKINS_TOKEN or an owner-only config file, never from options.")
    jsub = p.add_subparsers(dest="jenkins_command", metavar="ACTION", required=True)
    for name, text in (("render", "write the Jenkinsfile and config.xml of a deployment"),
                       ("apply", "create or update the job on the Jenkins controller")):
        q = jsub.add_parser(name, help=text, description=text)
        q.add_argument("--deployment", type=Path, metavar="FILE", help="deployment values (YAML mapping)")
        q.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="one deployment value (repeatable; wins over --deployment)")
        if name == "render":
            q.add_argument("--output", "-o", type=Path, default=Path("build/jenkins"),
                           help="folder for Jenkinsfile and config.xml (default: build/jenkins)")
            q.add_argument("--print", dest="print_file", choices=("Jenkinsfile", "config.xml"),
                           help="write this one file to standard output instead")
        else:
            q.add_argument("--job", help="job name (default: the deployment's, else the settings' job)")
            q.add_argument("--config", type=Path, metavar="FILE",
                           help="Jenkins settings file (default: $WAAP_JENKINS_CONFIG or ~/.config/waap/jenkins.ini)")
            q.add_argument("--dry-run", action="store_true", help="render and check, send nothing")


def _cmd_jenkins(ns: argparse.Namespace, out: TextIO) -> int:
    from .pipeline.apply import apply_job, check_config_xml
    from .pipeline.render import DeploymentError, load_deployment, render_all
    from .pipeline.settings import SettingsError, load_settings

    try:
        if ns.jenkins_command == "render":
            files = render_all(load_deployment(ns.deployment, ns.sets))
            if ns.print_file:
                out.write(files[ns.print_file])
                return EXIT_OK
            ns.output.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                (ns.output / name).write_text(text, encoding="utf-8")
                out.write(f"wrote {ns.output / name}\n")
            return EXIT_OK
        settings = None
        try:
            settings = load_settings(config=ns.config)
        except SettingsError:
            if not ns.dry_run:
                raise
        base = {"job_name": settings.job} if settings is not None else {}
        sets = [*ns.sets, f"job_name={ns.job}"] if ns.job else ns.sets
        deployment = load_deployment(ns.deployment, sets, base=base)
        config_xml = render_all(deployment)["config.xml"]
        check_config_xml(config_xml)
        if ns.dry_run:
            where = settings.url if settings is not None else "(no Jenkins settings)"
            out.write(f"would create or update job {deployment.job_name} on {where} "
                      f"({len(config_xml.encode())} bytes of config.xml); nothing was sent\n")
            return EXIT_OK
        assert settings is not None
        result = apply_job(settings, deployment.job_name, config_xml)
        out.write(f"{result.action} job {result.job}: {result.url}\n")
        return EXIT_OK
    except DeploymentError as e:
        sys.stderr.write(f"waap: invalid deployment: {e}\n")
        return EXIT_USAGE


def main(argv: Optional[Sequence[str]] = None, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    commands = {"run": _cmd_run, "agent": _cmd_agent, "jenkins": _cmd_jenkins, "doctor": _cmd_doctor,
                "reap": _cmd_reap, "ingest": cmd_ingest, "runs": cmd_runs}
    if ns.command is None:
        parser.print_help(out)
        return EXIT_USAGE
    try:
        return commands[ns.command](ns, out)
    except SpecError as e:
        err.write(f"waap: invalid profile: {e}\n")
        return EXIT_USAGE
    except DockerUnavailable as e:
        err.write(f"waap: {e}\n")
        return EXIT_DOCKER
    except WaapError as e:
        err.write(f"waap: {e}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        err.write("waap: interrupted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
