"""The producer API and the Redis operations a worker uses.

Layout in Redis (prefix ``queuefleet`` by default), per queue ``q``:

* ``queue:q``           list of ready job ids (pushed left, taken right: FIFO)
* ``queue:q:delayed``   sorted set of job ids by due time (ms, Redis clock)
* ``queue:q:reserved``  sorted set of job ids by lease deadline (ms, Redis clock)
* ``queue:q:notify``    short list a blocked worker waits on (BRPOP) to wake up

and shared: ``payloads`` / ``attempts`` / ``tokens`` / ``lost`` hashes by job id,
``queues`` (set of known queues), ``restart`` (generation and release),
``workers`` plus one ``worker:<id>`` heartbeat hash per live worker.
All times in scripts come from Redis' own clock, so hosts with skewed clocks
agree on leases and delays.
"""

from __future__ import annotations

import math
import json
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import redis

from .payload import Job, check_job_name, check_queue_name, encode_data, new_id
from .scripts import SCRIPTS

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "queuefleet"
NOTIFY_CAP = 64
PUSH_CHUNK = 5000


@dataclass
class Reserved:
    """A job reserved by a worker under a lease token."""

    queue: str
    id: str
    token: str
    attempts: int
    lost: int
    raw: bytes


@dataclass(frozen=True)
class RestartSignal:
    generation: int = 0
    release: str = ""


@dataclass
class FetchResult:
    restart: RestartSignal
    host_restart: RestartSignal
    next_due_ms: int
    now_ms: int
    stale: list[str]
    jobs: list[Reserved]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def redacted_url(url: str) -> str:
    """The URL without its password, for logs and the failed_jobs table."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}"
    else:
        netloc = f":***@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


class Queue:
    """A connection to queuefleet's queues in one Redis database."""

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX, url: str = DEFAULT_REDIS_URL) -> None:
        self.redis = client
        self.prefix = prefix
        self.url = url

    @classmethod
    def from_url(cls, url: str = DEFAULT_REDIS_URL, *, prefix: str = DEFAULT_PREFIX, **kwargs: Any) -> "Queue":
        kwargs.setdefault("socket_connect_timeout", 5)
        kwargs.setdefault("health_check_interval", 30)
        return cls(redis.Redis.from_url(url, **kwargs), prefix=prefix, url=url)

    # -- keys ---------------------------------------------------------------

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def ready_key(self, queue: str) -> str:
        return self.key("queue", queue)

    def notify_key(self, queue: str) -> str:
        return self.key("queue", queue, "notify")

    # -- producing ----------------------------------------------------------

    def push(
        self,
        job: str,
        data: Any = None,
        *,
        queue: str = "default",
        delay: float = 0,
        tries: int | None = None,
        timeout: float | None = None,
        backoff: Any = None,
    ) -> str:
        """Push one job; returns its id. One round trip."""
        item = Job.new(job, data, queue, tries=tries, timeout=timeout, backoff=backoff)
        self._push_encoded(queue, _delay_ms(delay), [item.id, item.encode()])
        return item.id

    def push_many(
        self,
        jobs: Iterable[tuple[str, Any]],
        *,
        queue: str = "default",
        delay: float = 0,
        tries: int | None = None,
        timeout: float | None = None,
        backoff: Any = None,
    ) -> list[str]:
        """Push many (job, data) pairs in few round trips; returns their ids in order.

        Every job is validated and encoded before anything is written, so a bad
        item leaves the queue untouched.
        """
        delay_ms = _delay_ms(delay)
        # Validate the shared options once, then encode each job from a template:
        # the payload is byte-for-byte what Job.encode() would produce.
        template = Job.new("t:t", None, queue, tries=tries, timeout=timeout, backoff=backoff)
        template.id = template.job = "\0"
        head, _, tail = template.encode().partition('"data":null')
        head_id, _, head_job = head.partition('"\\u0000"')
        head_job = head_job.replace('"\\u0000"', "{job}")
        args: list[str] = []
        ids: list[str] = []
        job_json: dict[str, str] = {}
        for job, data in jobs:
            encoded_job = job_json.get(job)
            if encoded_job is None:
                encoded_job = job_json[job] = json.dumps(check_job_name(job))
            job_id = new_id()
            ids.append(job_id)
            args.append(job_id)
            args.append(f'{head_id}"{job_id}"{head_job.replace("{job}", encoded_job)}"data":{encode_data(data)}{tail}')
        if not ids:
            return ids
        for start in range(0, len(args), 2 * PUSH_CHUNK):
            self._push_encoded(queue, delay_ms, args[start : start + 2 * PUSH_CHUNK])
        return ids

    def push_job(self, item: Job, *, delay: float = 0) -> str:
        """Push an already-built job (used by `queue retry`), keeping its id."""
        self._push_encoded(item.queue, _delay_ms(delay), [item.id, item.encode()])
        return item.id

    def _push_encoded(self, queue: str, delay_ms: int, pairs: list[str]) -> None:
        SCRIPTS.run(self.redis, "push", [self.prefix, queue, delay_ms, NOTIFY_CAP, *pairs])

    # -- consuming (used by the worker) --------------------------------------

    def fetch(
        self,
        queues: Sequence[str],
        *,
        worker_id: str,
        max_jobs: int,
        host: str = "",
        lease_ms: int,
        acks: Sequence[tuple[str, str, str]] = (),
        migrate_limit: int = 1000,
    ) -> FetchResult:
        """Ack `acks`, migrate due/expired jobs, and reserve up to `max_jobs`. One round trip."""
        args: list[Any] = [self.prefix, worker_id, host or worker_id, lease_ms, max_jobs, migrate_limit, len(acks)]
        for entry in acks:
            args.extend(entry)
        args.extend(queues)
        restart, host_restart, next_due, now, stale, token, flat = SCRIPTS.run(self.redis, "fetch", args)
        token_text = _text(token)
        jobs = [
            Reserved(
                queue=_text(flat[i]),
                id=_text(flat[i + 1]),
                token=token_text,
                attempts=int(flat[i + 2]),
                lost=int(flat[i + 3]),
                raw=flat[i + 4],
            )
            for i in range(0, len(flat), 5)
        ]
        return FetchResult(
            restart=RestartSignal(int(restart[0]), _text(restart[1])),
            host_restart=RestartSignal(int(host_restart[0]), _text(host_restart[1])),
            next_due_ms=int(next_due),
            now_ms=int(now),
            stale=[_text(s) for s in stale],
            jobs=jobs,
        )

    def ack(self, entries: Sequence[tuple[str, str, str]], client: redis.Redis | None = None) -> list[str]:
        """Delete finished jobs whose lease we still hold; returns the ids we no longer held."""
        if not entries:
            return []
        args: list[Any] = [self.prefix, len(entries)]
        for entry in entries:
            args.extend(entry)
        return [_text(s) for s in SCRIPTS.run(client or self.redis, "ack", args)]

    def release(self, entries: Sequence["ReleaseEntry"]) -> list[str]:
        """Put reserved jobs back (see release.lua); returns the ids we no longer held."""
        if not entries:
            return []
        args: list[Any] = [self.prefix, NOTIFY_CAP, len(entries)]
        for e in entries:
            args.extend((e.queue, e.id, e.token, e.delay_ms, "1" if e.count_attempt else "0", "1" if e.front else "0", e.payload))
        return [_text(s) for s in SCRIPTS.run(self.redis, "release", args)]

    def extend(self, entries: Sequence[tuple[str, str, str]], lease_ms: int, client: redis.Redis | None = None) -> list[str]:
        """Extend leases we hold; returns the ids we no longer held."""
        if not entries:
            return []
        args: list[Any] = [self.prefix, lease_ms, len(entries)]
        for entry in entries:
            args.extend(entry)
        return [_text(s) for s in SCRIPTS.run(client or self.redis, "extend", args)]

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        """Block until a push wakes us (True) or `timeout` seconds pass (False)."""
        if timeout <= 0:
            return False
        # BRPOP takes fractional seconds since Redis 6.
        return self.redis.brpop([self.notify_key(q) for q in queues], timeout=timeout) is not None

    # -- restarts -------------------------------------------------------------

    def signal_restart(self, release: str = "", hosts: Sequence[str] = ()) -> tuple[int, int]:
        """Record a restart for every worker, or for the workers of `hosts` only.

        Returns (signalled, skipped): keys bumped, and keys that already recorded
        `release` (nothing to do for those).
        """
        signalled, skipped = SCRIPTS.run(self.redis, "restart", [self.prefix, release, *hosts])
        return int(signalled), int(skipped)

    def restart_signals(self, host: str) -> tuple[RestartSignal, RestartSignal]:
        """The global and the per-host restart signal, as a worker on `host` sees them."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(self.key("restart"), "generation", "release")
        pipe.hmget(self.key("restart", "host", host), "generation", "release")
        return tuple(RestartSignal(int(g or 0), _text(r or b"")) for g, r in pipe.execute())  # type: ignore[return-value]

    def restart_state(self) -> dict[str, str]:
        raw = self.redis.hgetall(self.key("restart"))
        return {_text(k): _text(v) for k, v in raw.items()}

    # -- inspection -----------------------------------------------------------

    def known_queues(self) -> list[str]:
        return sorted(_text(q) for q in self.redis.smembers(self.key("queues")))

    def sizes(self, queues: Sequence[str]) -> dict[str, dict[str, int]]:
        pipe = self.redis.pipeline(transaction=False)
        for q in queues:
            pipe.llen(self.ready_key(q))
            pipe.zcard(self.key("queue", q, "delayed"))
            pipe.zcard(self.key("queue", q, "reserved"))
        counts = pipe.execute()
        return {
            q: {"ready": counts[3 * i], "delayed": counts[3 * i + 1], "reserved": counts[3 * i + 2]}
            for i, q in enumerate(queues)
        }

    def workers(self) -> list[dict[str, str]]:
        """Live workers' heartbeats; entries of dead workers are pruned."""
        members = sorted(_text(m) for m in self.redis.smembers(self.key("workers")))
        if not members:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for m in members:
            pipe.hgetall(self.key("worker", m))
        found: list[dict[str, str]] = []
        gone: list[str] = []
        for member, raw in zip(members, pipe.execute()):
            if raw:
                found.append({_text(k): _text(v) for k, v in raw.items()})
            else:
                gone.append(member)
        if gone:
            self.redis.srem(self.key("workers"), *gone)
        return found

    def clear(self, queue: str) -> int:
        """Delete every ready and delayed job of `queue` (reserved ones finish normally)."""
        check_queue_name(queue)
        pipe = self.redis.pipeline(transaction=True)
        pipe.lrange(self.ready_key(queue), 0, -1)
        pipe.zrange(self.key("queue", queue, "delayed"), 0, -1)
        pipe.delete(self.ready_key(queue), self.key("queue", queue, "delayed"), self.notify_key(queue))
        ready, delayed, _ = pipe.execute()
        # The ids are unreachable now, so dropping their payloads cannot race a worker.
        ids = [_text(i) for i in (*ready, *delayed)]
        if ids:
            pipe = self.redis.pipeline(transaction=False)
            for name in ("payloads", "attempts", "lost"):
                pipe.hdel(self.key(name), *ids)
            pipe.execute()
        return len(ids)


@dataclass
class ReleaseEntry:
    queue: str
    id: str
    token: str
    delay_ms: int = 0
    count_attempt: bool = True
    front: bool = False
    payload: str = ""


def _delay_ms(delay: float) -> int:
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not math.isfinite(delay) or delay < 0:
        raise ValueError(f"delay must be a finite number of seconds >= 0, got {delay!r}")
    return int(round(delay * 1000))
