"""Which host PIDs belong to the app container, for sources that list processes by the host's PIDs (NVML's process
lists, nvmap's table of clients).

A PID belongs to the app when its ``/proc/<pid>/cgroup`` names the container. That needs the runner to see the host's
PIDs: a runner in its own PID namespace (a container without ``--pid host``) sees neither the app's processes nor
the numbers these sources print, and must say so rather than guess. ``RunContext.container_pid`` is 0 exactly then.
"""

from __future__ import annotations

from typing import Dict, Optional

from .base import RunContext

__all__ = ["HOST_PIDS_NEEDED", "AppProcesses"]

HOST_PIDS_NEEDED = "the runner cannot see the app's host PIDs (run it with --pid host)"


class AppProcesses:
    """``pid in app``: whether a host PID runs in the app container. An answer is remembered for the run (a PID is
    not reused while the source still lists it); a PID whose ``/proc`` entry cannot be read is asked again next time
    (gone, or not yet visible) rather than remembered as a guess."""

    def __init__(self, ctx: RunContext) -> None:
        self._proc = ctx.proc
        self._container_id = ctx.container_id
        self._known: Dict[int, bool] = {}

    @staticmethod
    def unavailable(ctx: RunContext) -> Optional[str]:
        """Why the app's processes cannot be told apart here, or None."""
        return HOST_PIDS_NEEDED if ctx.container_pid <= 0 else None

    def __contains__(self, pid: object) -> bool:
        if not isinstance(pid, int) or pid <= 0:
            return False
        known = self._known.get(pid)
        if known is not None:
            return known
        found = False
        if self._container_id:
            try:
                found = self._container_id in (self._proc / str(pid) / "cgroup").read_text()
            except OSError:
                return False
        self._known[pid] = found
        return found
