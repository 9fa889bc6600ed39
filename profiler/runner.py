"""One profiling session: every target of a profile, ``repeat`` times, each run in a run directory of its own,
grouped under a session folder. This is the agent half of the pipeline; ``waap run`` calls it directly."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import docker

from . import __version__
from .app import DEFAULT_LOG_LIMIT, STOP_REASONS, AppContainer, AppOutcome, AppSettings, sanitize_output
from .collectors import Sample
from .device import device_facts
from .errors import RunDirError, WaapError
from .hostpath import PathMapper
from .identity import RunnerIdentity, labels_for
from .images import ImageInfo, PullProgress, ensure_image
from .measurement import RunMeasurement, app_env, split_mounts
from .profile import Profile, Target
from .reaper import Reaped, reap
from .rundir import SCHEMA_VERSION, RunDir, now_ns, write_json_atomic
from .sampler import CollectorError
from .summary import SUMMARY
from .tools.postprocess import ToolReport, postprocess_tool
from .tools.wrap import (
    TOOLBOX_DIR,
    TOOLBOX_ENV,
    ToolError,
    ToolPlan,
    check_tool,
    image_command,
    plan_tool_run,
    run_nsys_stats,
    toolbox_path,
)

__all__ = ["Observer", "RunInfo", "RunResult", "Runner", "SessionResult", "new_session_id"]

SESSION_FILE = "session.json"
DEADLINE_MARGIN_S = 120  # beyond timeout + grace: when a reaper may call a still-running container orphaned


def new_session_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "target"


def _unique_slugs(names: List[str]) -> List[str]:
    """Folder-safe names, one per target; names that clash once sanitized get their target number appended."""
    slugs: List[str] = []
    for index, name in enumerate(names, 1):
        slug = _slug(name)
        while slug in slugs:
            slug = f"{slug}-{index}"
        slugs.append(slug)
    return slugs


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    path: Path
    target: Target
    target_index: int  # 1-based
    repeat_index: int  # 1-based
    runs_total: int
    run_number: int  # 1-based position in the session
    tool: Optional[str] = None  # the profiling tool this run is under (profile.tools, one per run)


@dataclass(frozen=True)
class RunResult:
    info: RunInfo
    status: str  # complete, partial or failed
    stop_reason: str
    exit_code: Optional[int]
    duration_s: float
    error: Optional[str] = None


@dataclass
class SessionResult:
    session_id: str
    path: Path
    image: Optional[ImageInfo]
    runs: List[RunResult] = field(default_factory=list)
    reaped: List[Reaped] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(r.status == "complete" for r in self.runs)


class Observer:
    """What a front end (the CLI, a test) hears during a session. Every method may be left as it is."""

    def reaped(self, items: List[Reaped]) -> None: ...

    def pull_progress(self, progress: PullProgress) -> None: ...

    def run_started(self, run: RunInfo) -> None: ...

    def tick(self, run: RunInfo, elapsed_s: float) -> None: ...

    def event(self, run: RunInfo, kind: str, fields: Dict[str, Any]) -> None: ...

    def run_finished(self, result: RunResult) -> None: ...


class Runner:
    """Runs profiling sessions on one Docker engine."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        output_root: Path,
        observer: Optional[Observer] = None,
        path_mapper: Optional[PathMapper] = None,
        pull_policy: str = "missing",
        log_limit: int = DEFAULT_LOG_LIMIT,
        listeners: Sequence[Callable[[Sample], None]] = (),
        toolbox: Optional[str] = None,
    ) -> None:
        self.client = client
        self.output_root = output_root
        self.observer = observer or Observer()
        self.path_mapper = path_mapper or PathMapper()
        self.pull_policy = pull_policy
        self.log_limit = log_limit
        self.listeners = list(listeners)  # every sample of every run, e.g. the live endpoint
        self.identity = RunnerIdentity.current()
        self._stop_reason: Optional[str] = None
        self._lock = threading.Lock()
        # a host folder of profiling tools, mounted read-only in the app container (profiler.tools.wrap)
        self.toolbox = toolbox or os.environ.get(TOOLBOX_ENV) or None
        self._image_command: Tuple[List[str], List[str]] = ([], [])

    def request_stop(self, reason: str = "interrupted") -> None:
        """Ask the session to stop the app now (SIGINT, grace, …) and start no further run. Thread- and
        signal-handler-safe."""
        if reason not in STOP_REASONS:
            raise ValueError(f"stop reason must be one of {STOP_REASONS}, not {reason!r}")
        with self._lock:
            self._stop_reason = self._stop_reason or reason

    def _should_stop(self) -> Optional[str]:
        return self._stop_reason

    # -- a session -------------------------------------------------------------------------------------------
    def run_session(self, profile: Profile) -> SessionResult:
        session_id = new_session_id()
        session_path = self.output_root / session_id
        try:
            session_path.mkdir(parents=True)
        except OSError as e:
            raise RunDirError(f"cannot create the results folder {session_path}: {e.strerror or e}") from e
        result = SessionResult(session_id=session_id, path=session_path, image=None)
        self.path_mapper.to_host(session_path)  # fail before any run if the app could not see the results folder
        result.reaped = reap(self.client)
        if result.reaped:
            self.observer.reaped(result.reaped)
        self._write_session(result, profile, finished=False)
        try:
            result.image = ensure_image(
                self.client, profile.image, policy=self.pull_policy, on_progress=self.observer.pull_progress
            )
            if profile.tools:
                self._check_tools(profile, result.image)
        except WaapError as e:
            # no run could start: the session folder says so instead of looking unfinished
            self._write_session(result, profile, finished=True, error=str(e))
            raise
        device = device_facts(self.client)
        total = len(profile.targets) * profile.runs_per_target
        number = 0
        slugs = _unique_slugs([t.name or f"target{i}" for i, t in enumerate(profile.targets, 1)])
        # each target under each tool in turn (one tool per run); the tool is in the run's name when there are several
        passes = [(tool, f"-{tool}" if len(profile.tools) > 1 else "") for tool in profile.tool_passes]
        for t_index, target in enumerate(profile.targets, 1):
            for (tool, tag), rep in ((p, r) for p in passes for r in range(1, profile.repeat + 1)):
                if self._should_stop():
                    break
                number += 1
                name = f"{slugs[t_index - 1]}{tag}-r{rep}"
                info = RunInfo(
                    run_id=f"{session_id}.{name}",
                    path=session_path / name,
                    target=target,
                    target_index=t_index,
                    repeat_index=rep,
                    runs_total=total,
                    run_number=number,
                    tool=tool,
                )
                run = self._run_one(profile, info, result.image, device, container_name=f"waap-{session_id}-{name}")
                result.runs.append(run)
                self.observer.run_finished(run)
                self._write_session(result, profile, finished=False)
        self._write_session(result, profile, finished=True)
        return result

    def _check_tools(self, profile: Profile, image: ImageInfo) -> None:
        """Before any run: plan every target's command under the tool and make sure its binary is in the image (or
        the toolbox). Raises ToolError, leaving no container behind."""
        try:
            self._image_command = image_command(self.client.images.get(image.id).attrs)
        except docker.errors.DockerException as e:
            raise ToolError(f"cannot read the command of the image {profile.image}: {e}") from e
        binaries = []
        for target in profile.targets:
            for tool in profile.tools:
                plan = plan_tool_run(*self._image_command, target.args, (tool,))
                if plan is not None and plan.binary not in binaries:
                    binaries.append(plan.binary)
        env = {"PATH": toolbox_path(image.env)} if self.toolbox else None
        toolbox_host = self.path_mapper.to_host(Path(self.toolbox)) if self.toolbox else None
        for binary in binaries:
            check_tool(self.client, image.id, binary, image_label=profile.image, env=env, toolbox_host=toolbox_host,
                       toolbox_label=self.toolbox, labels={"org.waggle.waap.tool-check": binary})

    def _write_session(
        self, result: SessionResult, profile: Profile, *, finished: bool, error: Optional[str] = None
    ) -> None:
        write_json_atomic(
            result.path / SESSION_FILE,
            {
                "schema_version": SCHEMA_VERSION,
                "session_id": result.session_id,
                "profile_source": profile.source,
                "image": profile.image,
                "runs_planned": len(profile.targets) * profile.runs_per_target,
                "runs": [
                    {"run_id": r.info.run_id, "dir": r.info.path.name, "status": r.status, "stop_reason": r.stop_reason}
                    for r in result.runs
                ],
                "finished": finished,
                "interrupted": self._stop_reason is not None,
                "error": error,
            },
        )

    # -- one run ---------------------------------------------------------------------------------------------
    def _run_one(
        self, profile: Profile, info: RunInfo, image: ImageInfo, device: Dict[str, Any], *, container_name: str
    ) -> RunResult:
        run_dir = RunDir(info.path)
        run_dir.output.chmod(0o777)  # the app may run as any user inside its container
        target = info.target
        env = profile.target_env(target)
        env.update(WAAP_RUN_ID=info.run_id, WAAP_OUTPUT_DIR="/app/profiling_output")
        timeout = target.timeout_s
        deadline = time.time() + timeout + profile.grace_s + DEADLINE_MARGIN_S if timeout > 0 else 0

        def on_event(kind: str, **fields: Any) -> None:
            run_dir.event(kind, **fields)
            self.observer.event(info, kind, fields)

        measurement = RunMeasurement(
            profile.metrics,
            run_id=info.run_id,
            run_dir=run_dir.path,
            output_dir=run_dir.output,
            interval_s=profile.interval_s,
            params=profile.target_params(target),
            required=profile.required,
            on_event=on_event,
            listeners=self.listeners,
        )
        additions = measurement.prepare()
        mounts = split_mounts(additions, self.path_mapper.to_host)
        env = app_env(env, image.env, additions.env)
        plan = plan_tool_run(*self._image_command, target.args, (info.tool,)) if info.tool else None
        toolbox_mount: Dict[str, Any] = {}
        if plan is not None:
            env.update(plan.env)
            if self.toolbox:
                env["PATH"] = toolbox_path({"PATH": env.get("PATH") or image.env.get("PATH", "")})
                toolbox_mount = {self.path_mapper.to_host(Path(self.toolbox)): (TOOLBOX_DIR, True)}
            tool_dir = run_dir.output / "tools" / plan.tool
            tool_dir.mkdir(parents=True, exist_ok=True)
            for folder in (tool_dir.parent, tool_dir):
                folder.chmod(0o777)  # the app may run as any user inside its container
        manifest = self._manifest(profile, info, image, device, env)
        if plan is not None:
            manifest["app"]["tool_command"] = [*plan.entrypoint, *plan.command]
            manifest["tools"] = [{"name": plan.tool, "status": "pending"}]
        run_dir.start(manifest)

        app = AppContainer(
            self.client,
            AppSettings(
                image=image.id,
                name=container_name,
                args=plan.command if plan is not None else target.args,
                entrypoint=plan.entrypoint if plan is not None else None,
                env=env,
                labels=labels_for(
                    self.identity,
                    run_id=info.run_id,
                    session_id=info.run_id.split(".")[0],
                    run_dir=str(info.path.resolve()),
                    deadline_s=deadline,
                    runner_container=self.path_mapper.container_id,
                ),
                output_host_path=self.path_mapper.to_host(run_dir.output),
                mounts={**mounts, **{host: (inside, True) for host, inside in profile.docker.data_mounts},
                        **toolbox_mount},
                network=profile.docker.network,
                runtime=profile.docker.runtime,
                devices=profile.docker.devices,
                limits=profile.limits,
                log_limit=self.log_limit,
            ),
            on_event=on_event,
        )
        self.observer.run_started(info)
        on_event("run_started", run_id=info.run_id)
        outcome: Optional[AppOutcome] = None
        error: Optional[str] = None
        started = False
        try:
            failed = measurement.required_failures()
            if failed:
                raise CollectorError(f"required collector(s) {', '.join(failed)} could not be prepared")
            app.create()
            app.start(run_dir.app_log)
            started = True
            measurement.start(app.container.id, app.pid(), app_ended=app.ended)
            outcome = app.wait(
                timeout_s=timeout,
                grace_s=profile.grace_s,
                on_tick=lambda elapsed: self.observer.tick(info, elapsed),
                should_stop=self._should_stop,
            )
        except WaapError as e:
            error = str(e)
            on_event("error", message=error)
        except BaseException:
            # a second Ctrl-C or a bug: never leave the app running or the manifest unfinished
            measurement.stop()
            self._abandon(app, run_dir, measurement)
            raise
        finally:
            measurement.stop()  # the last sample, taken at the app's exit
            if outcome is None and started:
                self._kill_quietly(app)
            app.remove()
        tool = self._tool_after(plan, run_dir, app, outcome, on_event, profile.grace_s) if plan is not None else None
        return self._finish(run_dir, info, outcome, error, measurement, tool)

    def _tool_after(
        self,
        plan: ToolPlan,
        run_dir: RunDir,
        app: AppContainer,
        outcome: Optional[AppOutcome],
        on_event: Callable[..., None],
        grace_s: float,
    ) -> Callable[[], ToolReport]:
        """What the tool needs once the app container is gone: ``nsys stats`` now (it writes into the output
        folder, which is sanitized next), the parsing later, after the sanitizing."""
        stats_error: Optional[str] = None
        stats_output: Optional[str] = None
        if plan.tool == "nsys" and outcome is not None:
            reports = [p for p in sorted((run_dir.output / "tools" / "nsys").glob("report.*"))
                       if p.suffix in (".nsys-rep", ".qdrep") and p.is_file() and not p.is_symlink()]
            if reports:
                inside = f"{plan.tool_dir}/{reports[0].name}"
                try:
                    code, out = run_nsys_stats(
                        self.client, app.settings.image, inside,
                        output_host_path=str(app.settings.output_host_path), env=app.settings.env,
                        toolbox_host=next((h for h, (i, _) in app.settings.mounts.items() if i == TOOLBOX_DIR), None),
                        labels={"org.waggle.waap.tool-stats": run_dir.path.name},
                    )
                    on_event("tool_stats", tool="nsys", exit_code=code)
                    stats_output = out
                    if code != 0:
                        stats_error = f"nsys stats exited with code {code}: {out.strip()[-500:]}"
                except ToolError as e:
                    stats_error = str(e)
        exit_code = outcome.exit_code if outcome is not None else None

        def finish() -> ToolReport:
            report = postprocess_tool(plan.tool, run_dir.path, run_dir.output, exit_code=exit_code,
                                      tool_output=stats_output)
            if stats_error:
                report.fail(stats_error)
            if report.status == "failed" and not report.files and outcome is not None and any(
                    s in outcome.signals_sent for s in ("SIGTERM", "SIGKILL")):
                report.fail(f"{plan.tool} was sent {', '.join(outcome.signals_sent)} and may have been stopped before "
                            f"it wrote its output: a longer grace (profile 'grace', --grace; {grace_s:g} s now) "
                            f"gives it the time")
            on_event("tool_processed", tool=plan.tool, status=report.status, files=len(report.files),
                     truncated=report.truncated)
            return report

        return finish

    def _finish(
        self,
        run_dir: RunDir,
        info: RunInfo,
        outcome: Optional[AppOutcome],
        error: Optional[str],
        measurement: RunMeasurement,
        tool: Optional[Callable[[], ToolReport]] = None,
    ) -> RunResult:
        summary = measurement.write_summary()
        if summary:
            run_dir.event("summary_written", metrics=len(summary.get("metrics", {})))
        removed = sanitize_output(run_dir.output)
        if removed:
            run_dir.event("output_sanitized", removed=removed)
        tool_entries = [tool().to_json()] if tool is not None else []
        if tool_entries and summary:
            summary["tools"] = [{k: e[k] for k in ("name", "status", "files", "truncated", "highlights")}
                                for e in tool_entries]
            with contextlib.suppress(RunDirError):
                write_json_atomic(run_dir.path / SUMMARY, summary)
        if outcome is None:
            status, reason, code, duration = "failed", "error", None, 0.0
            fields: Dict[str, Any] = {}
        else:
            reason, code, duration = outcome.stop_reason, outcome.exit_code, outcome.duration_s
            status = "partial" if reason == "interrupted" or error else "complete"
            fields = {
                "start_ns": outcome.started_ns,
                "end_ns": outcome.ended_ns,
                "started_at": _iso(outcome.started_ns),
                "ended_at": _iso(outcome.ended_ns),
                "duration_s": round(duration, 3),
                "oom_killed": outcome.oom_killed,
                "signals_sent": outcome.signals_sent,
                "log": {"bytes": outcome.log_bytes, "bytes_dropped": outcome.log_bytes_dropped,
                        "truncated": outcome.log_bytes_dropped > 0},
            }
        run_dir.event("run_finished", status=status, stop_reason=reason)
        fields.update(measurement.manifest_fields())
        if tool_entries:
            fields["tools"] = tool_entries
        run_dir.finish(status, stop_reason=reason, exit_code=code, error=error, **fields)
        return RunResult(info=info, status=status, stop_reason=reason, exit_code=code, duration_s=duration,
                         error=error)

    def _abandon(self, app: AppContainer, run_dir: RunDir, measurement: RunMeasurement) -> None:
        self._kill_quietly(app)
        app.remove()
        try:
            sanitize_output(run_dir.output)
            run_dir.event("run_abandoned")
            run_dir.finish(
                "partial",
                stop_reason="interrupted",
                error="the profiler was stopped before the run ended",
                **measurement.manifest_fields(),
            )
        except RunDirError:
            pass

    @staticmethod
    def _kill_quietly(app: AppContainer) -> None:
        if app.container is None:
            return
        with contextlib.suppress(docker.errors.DockerException):
            app.container.kill(signal="SIGKILL")

    def _manifest(
        self, profile: Profile, info: RunInfo, image: ImageInfo, device: Dict[str, Any], env: Dict[str, str]
    ) -> Dict[str, Any]:
        target = info.target
        return {
            "run_id": info.run_id,
            "session_id": info.run_id.split(".")[0],
            "profiler": {"name": "waap", "version": __version__},
            "profile_source": profile.source,
            "app": {"image": profile.image, "image_id": image.id, "digest": image.digest, "args": list(target.args),
                    "env": env},
            "target": {"name": target.name, "index": info.target_index, "repeat_index": info.repeat_index,
                       "timeout_s": target.timeout_s, "grace_s": profile.grace_s},
            "limits": {"memory_bytes": profile.limits.memory_bytes, "cpus": profile.limits.cpus,
                       "pids": profile.limits.pids},
            "container": {"network": profile.docker.network, "runtime": profile.docker.runtime,
                          "data_mounts": [list(m) for m in profile.docker.data_mounts],
                          "devices": list(profile.docker.devices)},
            "interval_s": profile.interval_s,
            "metrics": list(profile.metrics),
            "collectors": [{"name": m, "status": "pending"} for m in profile.metrics],
            "required": list(profile.required),
            "device": device,
            "runner": {"in_container": self.path_mapper.in_container, "pid": self.identity.pid},
            "created_ns": now_ns(),
            "stop_reason": None,
            "exit_code": None,
        }


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
