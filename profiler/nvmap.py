"""nvmap's table of clients: how much memory each process holds through nvmap, the Tegra memory manager that
allocates the GPU's, the camera's, the codecs' and the display's buffers on a Jetson (in the RAM the CPU uses too).

L4T kernels print it in debugfs, root only: ``/sys/kernel/debug/nvmap/iovmm/clients`` for the IOVMM heap, where
user-space buffers come from. The format, from the kernel's ``client_stringify`` and ``nvmap_debug_clients_show``
(``drivers/video/tegra/nvmap/nvmap_dev.c``, later ``nvmap_debug.c``; tests/data/nvmap/README.md cites them)::

    "%-18s %18s %8s %11s\\n"                 CLIENT  PROCESS  PID  SIZE       (the header)
    "%-18s %18s %8u" " %10lluK\\n"           client name, comm, PID, KiB      (one line per open of /dev/nvmap)
    "%-18s %18s %8s %10lluK\\n"              total, "", "", KiB              (every handle of the heap)

The PID is the opener's thread-group leader as the init PID namespace numbers it (the host's PIDs); a client with no
task prints ``kernel`` and PID 0. Sizes are whole KiB and always end in ``K``. The parser reads each line from its
end (size, then PID), so a process name with spaces costs nothing, skips the lines it does not know (the note some
kernels print after the table, a line with a size in another form) and never raises. A row must end with its ``K``:
a line cut before it is skipped, never read as a smaller number.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

__all__ = ["DEFAULT_CLIENTS", "ENV_CLIENTS", "HEADER", "ClientsTable", "clients_path", "parse_clients", "read_clients"]

DEFAULT_CLIENTS = "/sys/kernel/debug/nvmap/iovmm/clients"
ENV_CLIENTS = "WAAP_NVMAP_CLIENTS"  # another path (a recorded table in tests, a debugfs mounted elsewhere)
HEADER = ("CLIENT", "PROCESS", "PID", "SIZE")

_PID = re.compile(r"[0-9]+")
_KIB = re.compile(r"([0-9]+)K")


@dataclass
class ClientsTable:
    """What one read of the table says. ``by_pid`` sums a process's clients (one per open of /dev/nvmap)."""

    header: bool = False  # the CLIENT PROCESS PID SIZE line was there
    by_pid: Dict[int, int] = field(default_factory=dict)  # PID -> bytes (KiB * 1024)
    total_bytes: Optional[int] = None  # the ``total`` line: every allocated handle of the heap
    clients: int = 0  # client lines read
    unknown: List[str] = field(default_factory=list)  # lines that are none of the three, as printed


def clients_path(path: Optional[str] = None) -> str:
    """``path``, else ``$WAAP_NVMAP_CLIENTS``, else the IOVMM heap's table in debugfs."""
    return path if path is not None else os.environ.get(ENV_CLIENTS, DEFAULT_CLIENTS)


def _kib(token: str) -> Optional[int]:
    m = _KIB.fullmatch(token)
    return int(m.group(1)) * 1024 if m else None


def parse_clients(text: str) -> ClientsTable:
    table = ClientsTable()
    for line in text.splitlines():
        tokens = line.split()
        if not tokens:
            continue
        if tuple(tokens) == HEADER:
            table.header = True
            continue
        if tokens[0] == "total" and len(tokens) == 2:
            total = _kib(tokens[1])
            if total is not None:
                table.total_bytes = total
                continue
        elif len(tokens) >= 3 and _PID.fullmatch(tokens[-2]):
            size = _kib(tokens[-1])
            if size is not None:
                pid = int(tokens[-2])
                table.by_pid[pid] = table.by_pid.get(pid, 0) + size
                table.clients += 1
                continue
        table.unknown.append(line.strip())
    return table


def read_clients(path: str) -> ClientsTable:
    """Reads and parses the table; raises ``OSError`` when the file cannot be read (missing, not root)."""
    with open(path, "rb") as f:  # a debugfs file says size 0: read to the end, not by its size
        data = f.read()
    return parse_clients(data.decode("utf-8", errors="replace"))
