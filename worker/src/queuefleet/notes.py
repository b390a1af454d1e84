"""A worker's note of the job it runs, in a small file on its own host.

Before each job the worker overwrites one fixed-size record: "<lease token> <job id>".
Writing it costs one local system call (no network, no Redis work), and a single
write either lands whole or not at all, whatever kills the process after it. When
the worker dies, a neighbour on the same host (typically the process supervisor
starts in its place) reads the note and blames exactly the job it names
(lua/reap.lua). Where no neighbour can read it, Redis-side reaping falls back to
marking the orphaned jobs suspect (lua/common.lua).

The files live in /dev/shm (memory) when it is writable, else in the temp directory.
"""

from __future__ import annotations

import os
import tempfile
import time

RECORD = 256  # bytes: a token and a job id (each at most 128 characters) always fit


def notes_dir() -> str:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else tempfile.gettempdir()


def note_path(pid: int, instance: str, directory: str | None = None) -> str:
    return os.path.join(directory or notes_dir(), f"queuefleet-{pid}-{instance}.running")


class RunningNote:
    def __init__(self, pid: int, instance: str) -> None:
        self.path = note_path(pid, instance)
        self._fd: int | None = None

    def open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError:
            self._fd = None  # no note: neighbours fall back to suspect marking

    def write(self, token: str, job_id: str) -> None:
        if self._fd is None:
            return
        record = f"{token} {job_id}\n".encode()
        try:
            os.pwrite(self._fd, record.ljust(RECORD, b" ")[:RECORD], 0)
        except OSError:
            pass

    def remove(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            os.unlink(self.path)
        except OSError:
            pass


def read_note(pid: int, instance: str) -> str:
    """What a (dead) worker noted as running, '' when there is no readable, whole note."""
    try:
        with open(note_path(pid, instance), "rb") as f:
            record = f.read(RECORD)
    except OSError:
        return ""
    line, newline, _ = record.partition(b"\n")
    return line.decode("ascii", "replace") if newline and b" " in line else ""


def remove_note(pid: int, instance: str) -> None:
    try:
        os.unlink(note_path(pid, instance))
    except OSError:
        pass


def remove_stale_notes(older_than: float = 3600.0) -> int:
    """Delete this user's notes of processes that are gone and untouched for `older_than`
    seconds (a crash no neighbour reaped: the lease freed its jobs long ago). Returns how many."""
    directory, uid, removed = notes_dir(), os.getuid(), 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    now = time.time()
    for name in names:
        if not (name.startswith("queuefleet-") and name.endswith(".running")):
            continue
        pid = name[len("queuefleet-") :].split("-", 1)[0]
        path = os.path.join(directory, name)
        try:
            stat = os.stat(path)
            if not pid.isdigit() or stat.st_uid != uid or now - stat.st_mtime < older_than:
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
        except OSError:
            continue
    return removed
