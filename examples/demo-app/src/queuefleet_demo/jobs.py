"""Job handlers of the demo app: a fast one, a slow one, one that fails, and one that uses its job context."""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from queuefleet import JobContext, client_from_url, on_failure

from . import __version__

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        # queuefleet's own client: it takes every URL the workers take, redis+sentinel:// included.
        _client = client_from_url(os.environ.get("QUEUEFLEET_REDIS_URL", "redis://127.0.0.1:6379/0"))
    return _client


def _done(kind: str, data: Any) -> None:
    pipe = _redis().pipeline(transaction=False)
    pipe.incr(f"demo:done:{kind}")
    if isinstance(data, dict) and "id" in data:
        # One entry per execution, tagged with the code version that ran it,
        # so tests can count every job and spot duplicates.
        pipe.rpush("demo:executed", f"{data['id']}@{__version__}")
    pipe.execute()


def fast(data: Any) -> None:
    """Record the job and return at once."""
    _done("fast", data)


def slow(data: Any) -> None:
    """Sleep data['seconds'] (default 2), then record the job."""
    seconds = float(data.get("seconds", 2)) if isinstance(data, dict) else 2.0
    time.sleep(seconds)
    _done("slow", data)


def fail(data: Any) -> None:
    """Always fail, so the job ends up in failed_jobs."""
    raise RuntimeError(f"demo failure for {data!r}")


def _report_failure(data: Any, error: str) -> None:
    """Failure callback of `remind`: called once when a reminder fails for good."""
    _redis().rpush("demo:failures", f"{data.get('id', '?') if isinstance(data, dict) else '?'}: {error}")


@on_failure(_report_failure)
def remind(data: Any, job: JobContext) -> None:
    """Uses its job context: fails at once without data['to'], runs again after data['delay']
    seconds (default 1) until its attempt reaches data['ready_on'] (default 1), then records itself."""
    if not isinstance(data, dict) or not data.get("to"):
        job.fail("no recipient")
    if job.attempt < int(data.get("ready_on", 1)):
        job.release(float(data.get("delay", 1)))
    _done("remind", data)
