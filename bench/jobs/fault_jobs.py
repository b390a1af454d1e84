"""Handlers for bench/faults. Each execution is appended to the file named by
FAULTS_EXEC_LOG (one write, O_APPEND: whole lines even from several processes), not
to Redis, so executions are counted even while Redis is down or emptied."""

import os
import time

_fd = None


def _record(tag: str) -> None:
    global _fd
    if _fd is None:
        _fd = os.open(os.environ["FAULTS_EXEC_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, f"{tag} {os.getpid()} {time.time():.3f}\n".encode())


def work(data):
    time.sleep(data.get("seconds", 0))
    _record(data["id"])


def fail(data):
    _record(data["id"])
    raise RuntimeError("fails on purpose (bench/faults)")


def poison(data):
    _record(data["id"])
    os._exit(3)
