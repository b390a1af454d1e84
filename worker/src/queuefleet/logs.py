"""One line per job event, plain or JSON, buffered and written with one system call.

The worker writes the buffer before each handler runs (so the START line of a
job that kills the process is on disk), before it blocks, and from its keeper
thread; the lines of a job's end wait for the next of those.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any, TextIO


class JobLog:
    def __init__(self, stream: TextIO | None = None, *, fmt: str = "plain", pool: str = "", pid: int | None = None) -> None:
        if fmt not in ("plain", "json"):
            raise ValueError(f"log format must be 'plain' or 'json', got {fmt!r}")
        self.stream = stream or sys.stdout
        self.fmt = fmt
        self.pool = pool
        self.pid = pid or os.getpid()
        self._lines: list[str] = []
        try:
            self._fd: int | None = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None
        self._lock = threading.Lock()
        self._second = -1
        self._stamp = ""

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1000):03d}Z"

    def job(self, event: str, job_id: str, job: str, queue: str, attempt: int, runtime: float | None = None, **extra: Any) -> None:
        now = time.time()
        if self.fmt == "json":
            doc: dict[str, Any] = {
                "ts": self._timestamp(now),
                "event": event,
                "id": job_id,
                "job": job,
                "queue": queue,
                "attempt": attempt,
                "pool": self.pool,
                "pid": self.pid,
            }
            if runtime is not None:
                doc["runtime_ms"] = round(runtime * 1000, 3)
            doc.update(extra)
            line = json.dumps(doc, separators=(",", ":"))
        else:
            line = f"{self._timestamp(now)} {event.upper():<8} {job_id} {job} queue={queue} attempt={attempt}"
            if runtime is not None:
                line += f" runtime={runtime * 1000:.2f}ms"
            for key, value in extra.items():
                line += f" {key}={_plain(value)}"
        with self._lock:
            self._lines.append(line)

    def event(self, event: str, message: str, **extra: Any) -> None:
        """A worker lifecycle line (starting, stopping, Redis lost, ...), flushed at once."""
        now = time.time()
        if self.fmt == "json":
            doc = {"ts": self._timestamp(now), "event": event, "message": message, "pool": self.pool, "pid": self.pid, **extra}
            line = json.dumps(doc, separators=(",", ":"), default=str)
        else:
            line = f"{self._timestamp(now)} {event.upper():<8} {message}"
            for key, value in extra.items():
                line += f" {key}={_plain(value)}"
        with self._lock:
            self._lines.append(line)
        self.flush()

    def flush(self) -> None:
        with self._lock:
            if not self._lines:
                return
            data = "\n".join(self._lines) + "\n"
            self._lines.clear()
            try:
                if self._fd is None:
                    self.stream.write(data)
                    self.stream.flush()
                    return
                raw = data.encode("utf-8", "backslashreplace")
                while raw:
                    raw = raw[os.write(self._fd, raw) :]
            except (OSError, ValueError):
                pass  # a closed stdout must not take the worker down


def _plain(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() for c in text) or '"' in text:
        return json.dumps(text)
    return text
