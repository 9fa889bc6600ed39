"""The measurements of one run: the profile's collectors, what they need in the app container, and the sampler
that runs them from the app's start to its exit. The runner drives it; this module knows no Docker lifecycle."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from .collectors import AppAdditions, Collector, CollectorStatus, RunContext, Sample, collector_class
from .errors import WaapError
from .rundir import SAMPLES, write_json_atomic
from .sampler import Sampler
from .summary import SUMMARY, Summarizer

__all__ = ["PATH_LIKE", "RunMeasurement", "app_env", "container_pid", "split_mounts"]

EventSink = Callable[..., None]


def container_pid(state_pid: int, container_id: str, proc: Path = Path("/proc")) -> int:
    """The app's init PID as this process can see it, or 0.

    The engine reports the PID in the host's namespace; a runner inside a container (without ``--pid host``) sees
    other PIDs, so the PID counts only when its cgroup names the container."""
    if state_pid <= 0:
        return 0
    try:
        cgroups = (proc / str(state_pid) / "cgroup").read_text()
    except OSError:
        return 0
    return state_pid if container_id in cgroups else 0


class RunMeasurement:
    def __init__(
        self,
        metrics: Sequence[str],
        *,
        run_id: str,
        run_dir: Path,
        output_dir: Path,
        interval_s: float,
        params: Mapping[str, Any],
        required: Sequence[str] = (),
        on_event: EventSink,
        listeners: Sequence[Callable[[Sample], None]] = (),
    ) -> None:
        self.run_id = run_id
        self.run_dir = run_dir
        self.output_dir = output_dir
        self.interval_s = interval_s
        self.params = dict(params)
        self.required = tuple(required)
        self.on_event = on_event
        self.collectors: List[Collector] = [collector_class(name)() for name in metrics]
        self._not_prepared: List[CollectorStatus] = []
        self.sampler: Optional[Sampler] = None
        # summary.json is built as the samples stream by, never by re-reading a possibly huge samples.jsonl
        self.summarizer = Summarizer()
        self.listeners: List[Callable[[Sample], None]] = [*listeners, self.summarizer]
        self._stopped = False

    def prepare(self) -> AppAdditions:
        """Ask every collector what it needs in the app container. One that fails here is recorded and dropped."""
        additions = AppAdditions()
        ready: List[Collector] = []
        for collector in self.collectors:
            try:
                additions.merge(collector.prepare(self.run_dir, self.output_dir, self.params))
                ready.append(collector)
            except Exception as e:  # a collector's fault must never take the run down with it
                status = CollectorStatus(collector.name, status="failed", reason=f"preparing it failed: {e}")
                self._not_prepared.append(status)
                self.on_event("collector_failed", collector=collector.name, reason=status.reason)
        self.collectors = ready
        return additions

    def required_failures(self) -> List[str]:
        return [s.name for s in self._not_prepared if s.name in self.required]

    def start(
        self,
        container_id: str,
        state_pid: int,
        *,
        proc: Path = Path("/proc"),
        app_ended: Callable[[], bool] = lambda: False,
    ) -> None:
        """Start sampling: call at once after the app container started (``app_ended``: whether it has exited).
        Raises ``CollectorError`` when a required collector cannot work."""
        ctx = RunContext(
            app_ended=app_ended,
            run_id=self.run_id,
            container_id=container_id,
            container_pid=container_pid(state_pid, container_id, proc),
            run_dir=self.run_dir,
            output_dir=self.output_dir,
            interval_s=self.interval_s,
            params=self.params,
        )
        self.sampler = Sampler(
            self.collectors,
            interval_s=self.interval_s,
            samples_path=self.run_dir / SAMPLES,
            required=self.required,
            on_event=self.on_event,
            listeners=self.listeners,
        )
        self.sampler.start(ctx)

    def stop(self) -> None:
        """The last sample and the collectors' release. Safe to call when never started, and more than once."""
        if self._stopped:
            return
        self._stopped = True
        if self.sampler is not None:
            self.sampler.stop()
            return
        for collector in self.collectors:  # prepared but never started (the app did not start): release them
            try:
                collector.stop()
            except Exception as e:  # a collector's fault must never take the run down with it
                self.on_event("collector_failed", collector=collector.name, phase="stop", reason=str(e))

    def write_summary(self) -> Dict[str, Any]:
        """Write summary.json (when there were samples) and return it; a write failure is an event, not a crash."""
        summary = self.summarizer.result()
        if summary:
            try:
                write_json_atomic(self.run_dir / SUMMARY, summary)
            except WaapError as e:
                self.on_event("warning", message=f"summary.json not written: {e}")
        return summary

    def manifest_fields(self) -> Dict[str, Any]:
        statuses: List[Dict[str, Any]] = [s.to_json() for s in self._not_prepared]
        sampling: Dict[str, Any] = {"interval_s": self.interval_s, "samples": 0, "missed_ticks": 0}
        if self.sampler is not None:
            statuses += [s.to_json() for s in self.sampler.statuses]
            sampling.update(self.sampler.counters())
        else:
            statuses += [
                CollectorStatus(c.name, status="unavailable", reason="the app never started").to_json()
                for c in self.collectors
            ]
        return {"collectors": statuses, "sampling": sampling}


# variables that are search paths: a collector's entry goes in front of the app's own value, never replaces it
PATH_LIKE = ("PYTHONPATH", "PATH", "LD_LIBRARY_PATH")


def app_env(app_env: Mapping[str, str], image_env: Mapping[str, str], additions: Mapping[str, str]) -> Dict[str, str]:
    """The app's environment with the collectors' additions: theirs win, except that search paths are prepended
    to the value the app would have had (its profile's, else its image's)."""
    env = dict(app_env)
    for key, value in additions.items():
        existing = env.get(key, image_env.get(key, ""))
        env[key] = f"{value}:{existing}" if key in PATH_LIKE and existing else value
    return env


def split_mounts(additions: AppAdditions, to_host: Callable[[Path], str]) -> Dict[str, Any]:
    """The additions' mounts as the engine needs them: keyed by host path."""
    return {to_host(Path(os.fspath(local))): spec for local, spec in additions.mounts.items()}
