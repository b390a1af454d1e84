"""Who a worker process is, and whether a neighbour on the same host is still alive.

Supervisor restarts a killed worker at once. Waiting for the dead process's lease
to run out would hold its jobs for up to `--lease` seconds, and it would make a
job that kills its worker (a poison job) take minutes to be failed. Workers that
share a process namespace (same boot of the same machine or container, same PID
namespace) can instead check each other's PIDs: a registered neighbour whose
process is gone (or whose PID now belongs to a younger process) is dead for sure,
and its reservations are taken back at once (see lua/reap.lua).
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

_BOOT_ID = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True)
class ProcessIdentity:
    host: str
    pid: int
    instance: str  # random per process start: tokens of a reused PID never match
    namespace: str  # '' when PIDs cannot be checked here (then only leases free a dead worker's jobs)
    starttime: str

    @property
    def worker_id(self) -> str:
        return f"{self.host}:{self.pid}"

    @property
    def token_base(self) -> str:
        return f"{self.host}:{self.pid}:{self.instance}"

    def registry_value(self, queues: list[str]) -> str:
        return f"{self.pid} {self.starttime} {self.instance} {','.join(queues)}"


@dataclass(frozen=True)
class Neighbour:
    worker_id: str
    value: str
    pid: int
    starttime: str
    instance: str
    token_base: str
    queues: list[str]


def current_identity() -> ProcessIdentity:
    pid = os.getpid()
    return ProcessIdentity(socket.gethostname(), pid, os.urandom(4).hex(), _namespace(), process_starttime(pid) or "")


def _namespace() -> str:
    try:
        with open(_BOOT_ID, encoding="ascii") as f:
            boot = f.read().strip().replace("-", "")[:16]
        ns = os.stat("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}-{ns.st_dev:x}-{ns.st_ino:x}"


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3 onwards of /proc/<pid>/stat (state first), or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    return stat[stat.rfind(")") + 2 :].split()


def process_starttime(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), or None if unreadable."""
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


def parse_neighbour(worker_id: str, value: str) -> Neighbour | None:
    parts = value.split(" ")
    if len(parts) != 4 or not parts[0].isdigit():
        return None
    pid, starttime, instance, queues = parts
    host = worker_id.rsplit(":", 1)[0]
    return Neighbour(worker_id, value, int(pid), starttime, instance, f"{host}:{pid}:{instance}", [q for q in queues.split(",") if q])


def is_dead(pid: int, starttime: str) -> bool:
    """True only when certain: no such process, or the PID belongs to another (younger) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError as exc:
        return exc.errno == errno.ESRCH
    seen = process_starttime(pid)
    if seen is None:
        return False  # cannot tell (hidden /proc): assume alive, its lease will tell
    if seen == starttime:
        # A zombie has not been reaped by its parent yet but runs no more code.
        return _is_zombie(pid)
    return True


def _is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    if fields is None:
        return True
    return bool(fields) and fields[0] in ("Z", "X")
