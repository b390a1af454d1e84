"""The producer API and the read-side of the queues (status, sizes, workers).

The Redis key layout is defined in lua/common.lua; this module only passes the
prefix, queue names and ids to the scripts. All times in scripts come from
the fleet clock, Redis' own clock carried across failovers (lua/common.lua), so hosts
with skewed clocks agree on leases and delays.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import redis

from .connection import client_from_url, redacted_url
from .durable import Durability
from .payload import (MAX_DELAY, MAX_PAYLOAD, Job, check_job_id, check_job_name, check_limit, check_payload_size,
                      check_queue_name, check_seconds, check_unique_key, encode_data, new_id)
from .protocol import NOTIFY_CAP, text
from .scripts import SCRIPTS

__all__ = ["Queue", "QueueStatus", "client_from_url", "redacted_url"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "queuefleet"
PUSH_CHUNK = 5000
REMEMBER_IDS = 86400.0  # seconds a finished job's producer-given id is remembered
UNIQUE_FOR = 3600.0  # seconds a unique job's key lives at most, by default
HOST_SIGNAL_TTL = 7 * 86400  # seconds a host-scoped restart signal is kept


@dataclass
class QueueStatus:
    sizes: dict[str, dict[str, int]]
    workers: list[dict[str, str]]
    restart: dict[str, str] = field(default_factory=dict)


class Queue:
    """A connection to queuefleet's queues in one Redis database.

    Durable push (see durable.py): with `wait_replicas` > 0, every push returns only once that
    many replicas have it, else raises NotReplicated; unset, the URL's `?wait_replicas=` and
    `&wait_timeout_ms=`, then QUEUEFLEET_DURABLE_PUSH and QUEUEFLEET_DURABLE_PUSH_TIMEOUT_MS decide.
    """

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX, url: str = DEFAULT_REDIS_URL,
                 remember_ids: float = REMEMBER_IDS, max_payload: int = MAX_PAYLOAD, wait_replicas: int | None = None,
                 wait_timeout_ms: int | None = None) -> None:
        self.redis = client
        self.prefix = prefix
        self.url = url
        self.remember_ms = int(check_seconds("remember_ids", remember_ids, maximum=MAX_DELAY, allow_zero=False) * 1000)
        self.max_payload = check_limit(max_payload)
        self.durability = Durability.resolve(url, wait_replicas, wait_timeout_ms)

    @classmethod
    def from_url(cls, url: str = DEFAULT_REDIS_URL, *, prefix: str = DEFAULT_PREFIX, remember_ids: float = REMEMBER_IDS,
                 max_payload: int = MAX_PAYLOAD, wait_replicas: int | None = None, wait_timeout_ms: int | None = None,
                 **kwargs: Any) -> "Queue":
        """A Queue on `url`: redis://... or redis+sentinel://... (see connection.py); `kwargs` go to the client."""
        return cls(client_from_url(url, **kwargs), prefix=prefix, url=url, remember_ids=remember_ids,
                   max_payload=max_payload, wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms)

    def encode(self, item: Job) -> str:
        """The job's payload; PayloadTooLarge (a ValueError) when it is over `max_payload` bytes."""
        payload = item.encode()
        check_payload_size(payload, self.max_payload, "Queue(max_payload=...), QUEUEFLEET_MAX_PAYLOAD")
        return payload

    def _run(self, name: str, args: list[Any]) -> Any:
        return SCRIPTS.run(self.redis, name, args)

    def _push_run(self, calls: list[tuple[str, list[Any]]], ids: Sequence[str]) -> list[Any]:
        """Run push scripts; with durable push, in one pipeline ending in WAIT (see durable.py)."""
        d = self.durability
        if not d.on:
            return [self._run(name, args) for name, args in calls]
        replies, acked = SCRIPTS.run_then_wait(self.redis, calls, d.replicas, d.timeout_ms)
        d.check(acked, ids)
        return replies

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
        id: str | None = None,
        unique_key: str | None = None,
        unique_for: float = UNIQUE_FOR,
    ) -> str:
        """Push one job; returns its id. One round trip.

        With `id` (your own, 1-128 of A-Z a-z 0-9 _ . : -), pushing is idempotent: a job
        with that id that is queued, running, or finished within `remember_ids` seconds
        is not pushed again, so a push that raised can simply be retried.

        With `unique_key` (same characters as an id), no second job with that key is pushed
        while one is queued, delayed or running: the push returns the id of the job that
        holds the key instead. The key is let go when that job is done or stored as failed,
        or `unique_for` seconds after the push, whichever comes first.
        """
        item = Job.new(job, data, queue, tries=tries, timeout=timeout, backoff=backoff, id=id)
        if unique_key is not None:
            return self.enqueue_unique(item, unique_key, unique_for, delay=delay, given_id=id is not None)[1]
        self.enqueue(item, delay=delay, given_id=id is not None)
        return item.id

    def enqueue_unique(self, item: Job, key: str, unique_for: float = UNIQUE_FOR, *, delay: float = 0,
                       given_id: bool = True) -> tuple[bool, str]:
        """Push an already-built job holding unique `key`: (True, its id) when pushed, else (False, the id
        of the job that holds the key, or its own id when that id was pushed before)."""
        check_unique_key(key)
        lock_ms = int(round(check_seconds("unique_for", unique_for, maximum=MAX_DELAY, allow_zero=False) * 1000))
        remember = self.remember_ms if given_id else 0
        [(pushed, holder)] = self._push_run([("push_unique", [self.prefix, item.queue, _delay_ms(delay), NOTIFY_CAP, remember,
                                                             key, max(lock_ms, 1), item.id, self.encode(item)])], [item.id])
        return bool(pushed), text(holder)

    def enqueue(self, item: Job, *, delay: float = 0, given_id: bool = True) -> bool:
        """Push an already-built job under its own id; False when that id was already
        queued or running (or, for a given id, finished within `remember_ids`)."""
        return self._push_encoded(item.queue, _delay_ms(delay), [item.id, self.encode(item)], given_id) == 1

    def push_job(self, item: Job, *, delay: float = 0) -> str:
        """Push an already-built job (used by `queue retry`), keeping its id."""
        self.enqueue(item, delay=delay, given_id=False)
        return item.id

    def push_many(
        self,
        jobs: Iterable[tuple[str, Any] | tuple[str, Any, str]],
        *,
        queue: str = "default",
        delay: float = 0,
        tries: int | None = None,
        timeout: float | None = None,
        backoff: Any = None,
    ) -> list[str]:
        """Push many (job, data) pairs, or (job, data, id) triples with your own ids, in
        few round trips; returns their ids in order.

        Every job is validated and encoded before anything is written, so a bad
        item leaves the queue untouched. Items with your own ids are idempotent as in `push`.
        """
        delay_ms = _delay_ms(delay)
        # Validate the shared options once, then encode each job from a template:
        # the payload is byte-for-byte what Job.encode() would produce.
        template = Job.new("t:t", None, queue, tries=tries, timeout=timeout, backoff=backoff)
        template.id = template.job = "\0"
        head, _, tail = template.encode().partition('"data":null')
        head_id, _, head_job = head.partition('"\\u0000"')
        head_job = head_job.replace('"\\u0000"', "{job}")
        generated: list[str] = []
        given: list[str] = []
        ids: list[str] = []
        job_json: dict[str, str] = {}
        for item in jobs:
            if len(item) == 3:
                job, data, job_id = item  # type: ignore[misc]
                check_job_id(job_id)
                args = given
            else:
                job, data = item  # type: ignore[misc]
                job_id = new_id()
                args = generated
            encoded_job = job_json.get(job)
            if encoded_job is None:
                encoded_job = job_json[job] = json.dumps(check_job_name(job))
            payload = f'{head_id}"{job_id}"{head_job.replace("{job}", encoded_job)}"data":{encode_data(data)}{tail}'
            check_payload_size(payload, self.max_payload, "Queue(max_payload=...), QUEUEFLEET_MAX_PAYLOAD")
            ids.append(job_id)
            args.append(job_id)
            args.append(payload)
        calls = [self._push_call(queue, delay_ms, args[start : start + 2 * PUSH_CHUNK], is_given)
                 for args, is_given in ((generated, False), (given, True))
                 for start in range(0, len(args), 2 * PUSH_CHUNK)]
        if calls:
            self._push_run(calls, ids)  # durable: one WAIT for the whole batch
        return ids

    def _push_call(self, queue: str, delay_ms: int, pairs: list[str], given_id: bool) -> tuple[str, list[Any]]:
        remember = self.remember_ms if given_id else 0
        return "push", [self.prefix, queue, delay_ms, NOTIFY_CAP, remember, *pairs]

    def _push_encoded(self, queue: str, delay_ms: int, pairs: list[str], given_id: bool) -> int:
        [pushed] = self._push_run([self._push_call(queue, delay_ms, pairs, given_id)], pairs[::2])
        return int(pushed)

    # -- restarts -------------------------------------------------------------

    def signal_restart(self, release: str = "", hosts: Sequence[str] = ()) -> tuple[int, int]:
        """Record a restart for every worker, or for the workers of `hosts` only.

        Returns (signalled, skipped): keys bumped, and keys that already recorded
        `release` (nothing to do for those).
        """
        signalled, skipped = self._run("restart", [self.prefix, release, uuid.uuid4().hex, HOST_SIGNAL_TTL, *hosts])
        return int(signalled), int(skipped)

    # -- inspection -----------------------------------------------------------

    def status(self, queues: Sequence[str] | None = None) -> QueueStatus:
        """Queue sizes, live workers' heartbeats and the restart signal, in one round trip."""
        mode = "all" if queues is None else "given"
        names, flat, workers, restart = self._run("status", [self.prefix, mode, *(queues or ())])
        sizes = {
            text(q): {"ready": int(flat[3 * i]), "delayed": int(flat[3 * i + 1]), "reserved": int(flat[3 * i + 2])}
            for i, q in enumerate(names)
        }
        beats = [{text(w[i]): text(w[i + 1]) for i in range(0, len(w), 2)} for w in workers]
        return QueueStatus(sizes, beats, {text(restart[i]): text(restart[i + 1]) for i in range(0, len(restart), 2)})

    def known_queues(self) -> list[str]:
        return list(self.status().sizes)

    def sizes(self, queues: Sequence[str]) -> dict[str, dict[str, int]]:
        return queue_sizes(self.redis, self.prefix, queues)

    def workers(self) -> list[dict[str, str]]:
        """Live workers' heartbeats; entries of dead workers are pruned."""
        return self.status([]).workers

    def restart_state(self) -> dict[str, str]:
        return self.status([]).restart

    def clear(self, queue: str) -> int:
        """Delete every ready and delayed job of `queue` (reserved ones finish normally)."""
        check_queue_name(queue)
        return int(self._run("clear", [self.prefix, queue]))


def _delay_ms(delay: float) -> int:
    return int(round(check_seconds("delay", delay, maximum=MAX_DELAY) * 1000))


def queue_sizes(client: redis.Redis, prefix: str, queues: Sequence[str]) -> dict[str, dict[str, int]]:
    """Ready, delayed and reserved jobs of each queue, in one round trip (the `sizes` script)."""
    flat = SCRIPTS.run(client, "sizes", [prefix, *queues])
    return {q: {"ready": int(flat[3 * i]), "delayed": int(flat[3 * i + 1]), "reserved": int(flat[3 * i + 2])}
            for i, q in enumerate(queues)}
