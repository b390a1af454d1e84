"""Runs inside a worker container with the deployed release's Python (copied
there by the tests). Subcommands print JSON on stdout.

  produce TAG N RATE FAIL_EVERY [SLOW]
                                  push N jobs `TAG-i` at RATE/s onto `default`, or fewer:
                                  it stops once the key mh:stop:TAG exists
                                  (every FAIL_EVERY-th a failing one, 0 = none;
                                  with SLOW > 0 the others sleep SLOW seconds);
                                  a push that raises is retried (counted) under the
                                  same job id, so a retry never makes a second job
  probe TAG                       push TAG-probe onto `high` (retrying while Redis
                                  is down) and wait until it ran; seconds taken
  tally TAG                       executions of TAG-* jobs, failed_jobs rows of
                                  TAG-*, queue sizes, live workers per host
  reset                           clear demo:executed and the failed_jobs table
"""

from __future__ import annotations

import json
import os
import sys
import time

for line in open("/opt/queuefleet/shared/queuefleet.env"):
    if "=" in line and not line.startswith("#"):
        k, _, v = line.strip().partition("=")
        os.environ.setdefault(k, v)

import redis  # noqa: E402
from queuefleet import Queue  # noqa: E402

try:  # a durable push its replicas did not confirm in time: pushed again under the same id
    from queuefleet.durable import NotReplicated  # noqa: E402
except ImportError:  # pragma: no cover - a release without durable push
    NotReplicated = redis.exceptions.ConnectionError

RETRYABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError,
             redis.exceptions.ReadOnlyError, NotReplicated)


def queue() -> Queue:
    return Queue.from_url(os.environ["QUEUEFLEET_REDIS_URL"])


def push(q: Queue, job: str, data: dict, **kw) -> int:
    """Push until Redis accepts it; returns the number of retries."""
    retries = 0
    while True:
        try:
            q.push(job, data, **kw)
            return retries
        except RETRYABLE:
            retries += 1
            time.sleep(0.1)


def retry(fn):
    while True:
        try:
            return fn()
        except RETRYABLE:
            time.sleep(0.1)


def produce(tag: str, n: int, rate: float, fail_every: int, slow: float = 0.0) -> None:
    q = queue()
    retries = 0
    jobs = []
    start = time.monotonic()
    for i in range(n):
        fail = fail_every and i % fail_every == fail_every - 1
        data = {"id": f"{tag}-{i}"}
        if fail:
            job = "queuefleet_demo.jobs:fail"
        elif slow:
            job, data["seconds"] = "queuefleet_demo.jobs:slow", slow
        else:
            job = "queuefleet_demo.jobs:fast"
        if i % 10 == 0 and retry(lambda: q.redis.exists(f"mh:stop:{tag}")):
            break
        retries += push(q, job, data, queue="default", id=f"{tag}-{i}", **({"tries": 1} if fail else {}))
        jobs.append([f"{tag}-{i}", "fail" if fail else "fast"])
        retry(lambda: q.redis.set(f"mh:pushed:{tag}", i + 1))
        delay = start + (i + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(json.dumps({"jobs": jobs, "push_retries": retries, "seconds": round(time.monotonic() - start, 2)}))


def probe(tag: str) -> None:
    start = time.monotonic()
    q = queue()
    push(q, "queuefleet_demo.jobs:fast", {"id": f"{tag}-probe"}, queue="high")
    while True:
        try:
            if any(e.decode().startswith(f"{tag}-probe@") for e in q.redis.lrange("demo:executed", 0, -1)):
                break
        except RETRYABLE:
            pass
        time.sleep(0.1)
    print(json.dumps({"seconds": round(time.monotonic() - start, 2)}))


def failed_rows(tag: str | None) -> list[dict]:
    from sqlalchemy import create_engine, text

    engine = create_engine(os.environ["QUEUEFLEET_DATABASE_URL"], pool_pre_ping=True)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT uuid, payload, exception FROM failed_jobs")).fetchall()
    out = []
    for uuid, payload, exception in rows:
        data = json.loads(payload).get("data")
        job_id = data.get("id") if isinstance(data, dict) else None
        if tag is None or (job_id or "").startswith(f"{tag}-"):
            out.append({"uuid": uuid, "id": job_id, "job": json.loads(payload).get("job"),
                        "reason": (exception.strip().splitlines() or [""])[-1][:200]})
    return out


def tally(tag: str) -> None:
    q = queue()
    r = q.redis
    executed = [e.decode().split("@")[0] for e in r.lrange("demo:executed", 0, -1)]
    executed = [e for e in executed if e.startswith(f"{tag}-")]
    sizes = {}
    for name in ("default", "high"):
        sizes[name] = {
            "ready": r.llen(f"queuefleet:queue:{name}"),
            "delayed": r.zcard(f"queuefleet:queue:{name}:delayed"),
            "reserved": r.zcard(f"queuefleet:queue:{name}:reserved"),
        }
    hosts = sorted(key.decode().split(":", 2)[2] for key in r.scan_iter("queuefleet:worker:*"))
    pushed = int(r.get(f"mh:pushed:{tag}") or 0)
    print(json.dumps({"pushed": pushed, "executed": executed, "failed": failed_rows(tag), "queues": sizes, "workers": hosts}))


def reset() -> None:
    from sqlalchemy import create_engine, text

    queue().redis.delete("demo:executed")
    engine = create_engine(os.environ["QUEUEFLEET_DATABASE_URL"], pool_pre_ping=True)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM failed_jobs"))
    print("{}")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "produce":
        produce(args[0], int(args[1]), float(args[2]), int(args[3]), float(args[4]) if len(args) > 4 else 0.0)
    elif cmd == "probe":
        probe(args[0])
    elif cmd == "tally":
        tally(args[0])
    elif cmd == "reset":
        reset()
    else:
        sys.exit(f"unknown command {cmd}")
