"""A worker's note of the job it runs, in a small file on its own host.

Before each job the worker overwrites one fixed-size record, "<lease token> <job id>
<crc32>", in a memory-mapped file: a memory write, no system call, no network, no
Redis work. The page outlives the process, so when the worker dies a neighbour on the
same host (typically the process supervisor starts in its place) reads the note and
blames exactly the job it names (lua/reap.lua). A record torn by a kill in the middle
of writing it fails its checksum and counts as no note. Where no neighbour can read a
note, Redis-side reaping falls back to marking the orphaned jobs suspect
(lua/common.lua).

The note names a job only while its handler runs: once the handler is over it says
"-" (nothing runs), so a worker that dies with the ack of a finished job still on its
way blames nobody. On the first stop signal the note gets a "stopping " prefix: a
worker that supervisor kills during its graceful stop (past stopwaitsecs) was stopped,
not crashed, and its job goes back unblamed, the attempt not counted.

The files live in /dev/shm (memory) when it is writable, else in the temp directory.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import time
import zlib

RECORD = 512  # bytes: a token and a job id (each at most a few hundred characters) always fit
IDLE = "-"  # the note of a worker that runs no handler
STOPPING = "stopping "  # prefix of the note of a worker that was asked to stop


def notes_dir() -> str:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else tempfile.gettempdir()


def note_path(pid: int, instance: str, directory: str | None = None) -> str:
    return os.path.join(directory or notes_dir(), f"queuefleet-{pid}-{instance}.running")


class RunningNote:
    def __init__(self, pid: int, instance: str) -> None:
        self.path = note_path(pid, instance)
        self._map: mmap.mmap | None = None
        self._body = IDLE
        self._stopping = False

    def open(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.ftruncate(fd, RECORD)
                self._map = mmap.mmap(fd, RECORD)
            finally:
                os.close(fd)
        except (OSError, ValueError):
            self._map = None  # no note: neighbours fall back to suspect marking

    def write(self, token: str, job_id: str) -> None:
        """The handler of job `job_id`, held under `token`, is about to run."""
        self._put(f"{token} {job_id}")

    def clear(self) -> None:
        """No handler runs (the last one is over)."""
        self._put(IDLE)

    def stopping(self) -> None:
        """The worker was asked to stop: a kill from now on is its supervisor's, not a crash."""
        self._stopping = True
        self._put(self._body)

    def _put(self, body: str) -> None:
        self._body = body
        if self._map is None:
            return
        raw = ((STOPPING if self._stopping else "") + body).encode()
        record = b"%b %08x\n" % (raw, zlib.crc32(raw))
        self._map[: len(record)] = record
        self._map[len(record) : len(record) + 1] = b"\0"

    def remove(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
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
    body, _, crc = line.rpartition(b" ")
    if not newline or not body or crc != b"%08x" % zlib.crc32(body):
        return ""
    return body.decode("ascii", "replace")


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
