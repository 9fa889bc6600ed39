"""Who owns a container: the labels WaAP puts on what it creates, and whether their runner is still alive."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional

__all__ = [
    "LABEL",
    "LABEL_DEADLINE",
    "LABEL_RUNNER",
    "LABEL_RUNNER_CONTAINER",
    "LABEL_RUN_DIR",
    "LABEL_RUN_ID",
    "LABEL_SESSION_ID",
    "RunnerIdentity",
    "deadline_of",
    "labels_for",
]

LABEL = "org.waggle.waap"
LABEL_RUN_ID = "org.waggle.waap.run-id"
LABEL_SESSION_ID = "org.waggle.waap.session-id"
LABEL_RUNNER = "org.waggle.waap.runner"
LABEL_DEADLINE = "org.waggle.waap.deadline"
LABEL_RUN_DIR = "org.waggle.waap.run-dir"
LABEL_RUNNER_CONTAINER = "org.waggle.waap.runner-container"  # set when the runner itself runs in a container


@dataclass(frozen=True)
class RunnerIdentity:
    """A runner process, named so that it can be told apart from a later process reusing its PID.

    ``pidns`` is the inode of the PID namespace: PIDs from another namespace (another runner container) cannot be
    checked from here. ``start_ticks`` is the process start time from /proc/PID/stat.
    """

    pidns: int
    pid: int
    start_ticks: int

    @classmethod
    def current(cls, proc: Path = Path("/proc")) -> RunnerIdentity:
        pid = os.getpid()
        return cls(pidns=_pidns(proc), pid=pid, start_ticks=_start_ticks(proc, pid) or 0)

    def label(self) -> str:
        return f"{self.pidns}:{self.pid}:{self.start_ticks}"

    @classmethod
    def parse(cls, text: str) -> Optional[RunnerIdentity]:
        try:
            pidns, pid, start = (int(p) for p in text.split(":"))
        except ValueError:
            return None
        return cls(pidns, pid, start)

    def is_alive(self, proc: Path = Path("/proc")) -> Optional[bool]:
        """True or False when this process can be checked from here; None when it lives in another namespace."""
        if self.pidns != _pidns(proc):
            return None
        return _start_ticks(proc, self.pid) == self.start_ticks


def labels_for(
    runner: RunnerIdentity,
    *,
    run_id: str,
    session_id: str,
    run_dir: str,
    deadline_s: float,
    runner_container: Optional[str] = None,
) -> Dict[str, str]:
    """Labels for a container or network of one run; ``deadline_s``: Unix time after which it is stale (0 = none)."""
    return {
        LABEL: "1",
        LABEL_RUN_ID: run_id,
        LABEL_SESSION_ID: session_id,
        LABEL_RUNNER: runner.label(),
        LABEL_DEADLINE: str(int(deadline_s)),
        LABEL_RUN_DIR: run_dir,
        LABEL_RUNNER_CONTAINER: runner_container or "",
    }


def deadline_of(labels: Mapping[str, str]) -> float:
    try:
        return float(labels.get(LABEL_DEADLINE, "0"))
    except ValueError:
        return 0.0


def _pidns(proc: Path) -> int:
    try:
        return os.stat(proc / "self" / "ns" / "pid").st_ino
    except OSError:
        return 0


def _start_ticks(proc: Path, pid: int) -> Optional[int]:
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its closing parenthesis
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall: starttime
    except (IndexError, ValueError):
        return None
