"""Job handlers the test suite runs in real worker processes.

Each records what it did in Redis (`TEST_REDIS_URL`) so tests can count executions.
"""

import json
import os
import signal
import time
from subprocess import run  # noqa: F401 - re-exported on purpose: a payload must not be able to name it

import redis

_client = None


def client() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    return _client


def record(data):
    """Append data['tag'] to the `executed` list."""
    client().rpush(data.get("key", "executed"), data["tag"])


def _private(data):
    """A private helper: never a job, whatever its module."""
    client().rpush("executed", "private")


def incr(data):
    client().incr(data.get("key", "count"))


def slow(data):
    """Record a start, sleep data['seconds'], record an end."""
    client().rpush("started", data["tag"])
    time.sleep(data["seconds"])
    client().rpush("executed", data["tag"])


def fail(data):
    client().rpush("attempts", f"{data['tag']}@{time.time():.3f}")
    raise RuntimeError(f"failing on purpose: {data['tag']}")


def fail_then_succeed(data):
    n = client().incr(f"ftr:{data['tag']}")
    if n < data["succeed_on"]:
        raise RuntimeError(f"attempt {n} fails")
    client().rpush("executed", data["tag"])


def hog(data):
    """Allocate data['mb'] megabytes and keep them alive in the process."""
    global _hog
    _hog = bytearray(data["mb"] * 1024 * 1024)
    for i in range(0, len(_hog), 4096):
        _hog[i] = 1
    client().rpush("executed", data["tag"])


def stuck(data):
    """Ignore the timeout signal: the worker's watchdog must end the process."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGTERM})
    client().rpush("started", data["tag"])
    time.sleep(data["seconds"])


def swallow(data):
    """A handler that catches every Exception: a timeout must still stop it."""
    client().rpush("started", data["tag"])
    end = time.time() + data["seconds"]
    while time.time() < end:
        try:
            time.sleep(0.05)
        except Exception:  # noqa: BLE001 - the point of this handler
            pass
    client().rpush("executed", data["tag"])


def poison(data):
    """Kill the worker process the way a crash in C code would (no cleanup, no exception)."""
    client().rpush("started", data["tag"])
    os._exit(3)


def kill9(data):
    client().rpush("started", data["tag"])
    os.kill(os.getpid(), signal.SIGKILL)


def exits(data):
    """A handler that calls sys.exit(): a bug, not a request to stop the worker."""
    client().rpush("started", data["tag"])
    raise SystemExit(data.get("code", 0))


def quiet_fail(data):
    """Fail with a message that quotes none of the data."""
    raise RuntimeError("failing on purpose")


def sleep(data):
    """Sleep, then note the tag in data['file'] (not in Redis: it works while Redis is down)."""
    time.sleep(data["seconds"])
    fd = os.open(data["file"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{data['tag']}\n".encode())
    finally:
        os.close(fd)


# -- job context and failure callbacks ---------------------------------------------------------

from queuefleet import JobFailure, on_failure  # noqa: E402


def noted_failure(data, error):
    """A handler's on_failure callback: note (tag, error)."""
    client().rpush("callbacks", f"{data['tag']}|{error}")
    if data.get("callback") == "raise":
        raise RuntimeError("the callback itself fails")
    if data.get("callback") == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


@on_failure(noted_failure)
def with_context(data, job):
    """Note the context, then do what data['action'] says."""
    client().rpush("contexts", json.dumps({"id": job.id, "queue": job.queue, "job": job.job, "attempt": job.attempt,
                                           "max_tries": job.max_tries, "pushed_at": job.pushed_at,
                                           "last_try": job.last_try, "at": time.time()}))
    action = data.get("action", "")
    if action == "release" or (action == "release_once" and job.attempt == 1):
        try:
            job.release(data.get("delay", 0))
        except Exception:  # noqa: BLE001 - a handler's own except clause must not swallow a release
            client().rpush("swallowed", data["tag"])
    if action == "fail":
        job.fail(data.get("reason", "no reason"))
    if action == "raise":
        raise RuntimeError(f"raised on purpose (attempt {job.attempt})")
    if action == "exit" and job.last_try:
        os._exit(3)
    client().rpush("executed", data["tag"])


def stuck_callback(data, error):
    """A failure callback stuck where the timeout cannot reach it (signals blocked)."""
    client().rpush("callbacks", f"{data['tag']}|{error}")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGTERM})
    time.sleep(data.get("seconds", 60))


@on_failure(stuck_callback)
def fails_with_a_stuck_callback(data):
    raise RuntimeError(f"failing on purpose: {data['tag']}")


def data_only(data, extra="default"):
    """A second parameter with a default: still called with the data only."""
    client().rpush("executed", f"{data['tag']}:{extra}")


def hook(failure: JobFailure):
    """A worker-wide --on-failure hook."""
    client().rpush("hooked", json.dumps({"id": failure.id, "job": failure.job, "queue": failure.queue,
                                         "error": failure.error, "attempts": failure.attempts, "data": failure.data}))


def broken_hook(failure: JobFailure):
    raise RuntimeError("the hook fails")


def init_hook():
    """A `queue work --init` hook: records that it ran, and in which process."""
    client().rpush("executed", f"init:{os.getpid()}")


def broken_init():
    raise RuntimeError("the settings are broken")
