"""Telling a Redis outage from a bug, and riding it out: one line when Redis is lost,
one when it is back, capped and jittered backoff in between.

Transient: the connection failed or timed out, or the server said it cannot serve
now (loading its data, out of memory, read-only replica, disk errors). A wrong
password is not transient: retrying cannot fix it.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Callable

import redis

from .logs import JobLog

# Server replies that mean "not now" (redis-py maps some to classes and drops the code).
TRANSIENT_CLASSES = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError, redis.exceptions.TryAgainError,
                     redis.exceptions.ClusterDownError)
# UNBLOCKED: a blocking call (the idle worker's BRPOP) on a master that was just turned into a replica.
TRANSIENT_REPLIES = ("MISCONF", "NOREPLICAS", "BUSY ", "OOM", "READONLY", "LOADING", "MASTERDOWN", "UNBLOCKED")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (redis.AuthenticationError, redis.exceptions.AuthorizationError)):
        return False
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, *TRANSIENT_CLASSES)):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(TRANSIENT_REPLIES)


def describe(exc: BaseException) -> str:
    """One line about a Redis error (redis-py's messages never carry command arguments)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        text = f"out of memory (OOM): {text}"
    text = text or exc.__class__.__name__
    return text if len(text) <= 200 else text[:197] + "..."


class Outage:
    """Shared by the worker's threads: logs each outage once, however many threads notice it."""

    def __init__(self, log: JobLog, where: str) -> None:
        self.log = log
        self.where = where
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self._noticed_by = ""

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def lost(self, exc: BaseException, *, waiting: bool = False, by: str = "main") -> None:
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since, self._noticed_by = time.monotonic(), by
        what = "waiting for Redis" if waiting else "lost Redis"
        self.log.event("redis", f"{what} at {self.where}: {describe(exc)}; retrying with backoff")

    def back(self, by: str = "main") -> None:
        """Redis answered `by` (a thread). Only the main thread, or the thread that noticed
        the outage, ends it: Redis can serve one kind of call and still refuse another
        (out of memory refuses writes that could grow it)."""
        if self.down_since is None:
            return
        with self._lock:
            if by != "main" and by != self._noticed_by:
                return
            since, self.down_since = self.down_since, None
        if since is not None:
            self.log.event("redis", f"Redis is back after {time.monotonic() - since:.1f}s")


class Backoff:
    """Jittered pauses doubling from `first` up to `cap` seconds; one per thread."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.next = first

    def reset(self) -> None:
        self.next = self.first

    def pause(self, give_up: Callable[[], bool] = lambda: False) -> None:
        """Sleep the next pause (returns early once `give_up()` is true)."""
        end = time.monotonic() + self.next * (0.5 + random.random() / 2)
        self.next = min(self.next * 2, self.cap)
        while time.monotonic() < end and not give_up():
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
