"""The worker's side of the Redis protocol: one function per script, typed results.

Each function takes a `run(script_name, args)` callable, so the same call works
on a plain redis-py client (`client_runner`) and on the worker's own link (redis_link.py).
The key layout itself is defined once, in lua/common.lua.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import redis

from .scripts import SCRIPTS

Runner = Callable[[str, list[Any]], Any]
AckEntry = tuple[str, str, str, str]  # queue, id, lease token, tally ('' when not counted)
NOTIFY_CAP = 64


def client_runner(client: redis.Redis) -> Runner:
    return lambda name, args: SCRIPTS.run(client, name, args)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(eq=False)
class Reserved:
    """A job reserved by a worker under a lease token."""

    queue: str
    id: str
    token: str
    attempts: int
    lost: int
    suspect: bool
    raw: bytes
    valid_until: float = 0.0  # monotonic time until which this worker knows the lease holds
    tally: str = ""  # how it ended, counted when it is acked (job_counters.tally); '' counts nothing

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.queue, self.id, self.token)

    @property
    def ack_key(self) -> AckEntry:
        return (self.queue, self.id, self.token, self.tally)


@dataclass(frozen=True)
class RestartSignal:
    generation: int = 0
    release: str = ""
    id: str = ""


@dataclass
class FetchResult:
    restart: RestartSignal
    host_restart: RestartSignal
    next_due_ms: int
    now_ms: int
    lost_acks: list[str]
    jobs: list[Reserved]
    wait_keys: list[str]
    running_key: str
    reclaimed: int = 0


@dataclass
class ReleaseEntry:
    queue: str
    id: str
    token: str
    delay_ms: int = 0
    count_attempt: bool = True
    front: bool = False
    payload: str = ""
    tally: str = ""  # job_counters.tally() of the attempt that ended, '' when none is counted


def parse_signal(raw: Sequence[Any]) -> RestartSignal:
    return RestartSignal(int(raw[0]), text(raw[1]), text(raw[2]) if len(raw) > 2 else "")


def fetch(
    run: Runner,
    prefix: str,
    queues: Sequence[str],
    *,
    token_base: str,
    host: str,
    lease_ms: int,
    max_jobs: int,
    acks: Sequence[AckEntry] = (),
    keep: Sequence[str] | None = None,
    migrate_limit: int = 1000,
) -> FetchResult:
    """Ack `acks`, migrate due and expired jobs, reserve up to `max_jobs`. One round trip.
    With `keep` (the ids this worker knows it holds), first take back any other reservation
    of this worker: one made by an earlier fetch whose reply was lost."""
    return parse_fetch(run("fetch", fetch_args(prefix, queues, token_base, host, lease_ms, max_jobs, acks, keep, migrate_limit)))


def fetch_args(prefix: str, queues: Sequence[str], token_base: str, host: str, lease_ms: int, max_jobs: int,
               acks: Sequence[AckEntry], keep: Sequence[str] | None, migrate_limit: int = 1000) -> list[Any]:
    args: list[Any] = [prefix, token_base, host, lease_ms, max_jobs, migrate_limit, len(acks), -1 if keep is None else len(keep)]
    for entry in acks:
        args.extend(entry)
    args.extend(keep or ())
    args.extend(queues)
    return args


def parse_fetch(reply: Sequence[Any]) -> FetchResult:
    restart, host_restart, next_due, now, lost, token, flat, wait_keys, running_key, reclaimed = reply
    token_text = text(token)
    jobs = [
        Reserved(flat[i].decode(), flat[i + 1].decode(), token_text, flat[i + 2], int(flat[i + 3]), flat[i + 4] == 1,
                 flat[i + 5])
        for i in range(0, len(flat), 6)
    ]
    return FetchResult(parse_signal(restart), parse_signal(host_restart), int(next_due), int(now), [text(s) for s in lost], jobs,
                       [text(k) for k in wait_keys], text(running_key), int(reclaimed))


def ack(run: Runner, prefix: str, entries: Sequence[AckEntry]) -> list[str]:
    """Delete finished jobs whose lease we still hold; returns the ids another worker may run again."""
    if not entries:
        return []
    args: list[Any] = [prefix, len(entries)]
    for entry in entries:
        args.extend(entry)
    return [text(s) for s in run("ack", args)]


def release(run: Runner, prefix: str, entries: Sequence[ReleaseEntry]) -> list[str]:
    """Put reserved jobs back (see release.lua); returns the ids that were not released."""
    if not entries:
        return []
    args: list[Any] = [prefix, NOTIFY_CAP, len(entries)]
    for e in entries:
        args.extend((e.queue, e.id, e.token, e.delay_ms, "1" if e.count_attempt else "0", "1" if e.front else "0", e.payload,
                     e.tally))
    return [text(s) for s in run("release", args)]


def rewrite(run: Runner, prefix: str, entry: Reserved, payload: str) -> bool:
    """Replace the payload of a job we hold; False when its lease was lost (nothing written)."""
    return bool(run("rewrite", [prefix, entry.id, entry.token, payload]))


def extend(run: Runner, prefix: str, entries: Sequence[tuple[str, str, str]], lease_ms: int) -> list[str]:
    """Extend leases we hold; returns the ids we no longer held."""
    if not entries:
        return []
    args: list[Any] = [prefix, lease_ms, len(entries)]
    for entry in entries:
        args.extend(entry)
    return [text(s) for s in run("extend", args)]


def heartbeat(run: Runner, prefix: str, worker_id: str, ttl_s: int, namespace: str, registry_ttl_s: int,
              registry_value: str, token_base: str, running_ttl_ms: int, fields: dict[str, Any]) -> dict[str, str]:
    """Write the heartbeat (and keep the running-job marker alive); returns the registry
    of this worker's process namespace."""
    args: list[Any] = [prefix, worker_id, ttl_s, namespace, registry_ttl_s, registry_value, token_base, running_ttl_ms]
    for key, value in fields.items():
        args.extend((key, value))
    flat = run("heartbeat", args)
    return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat), 2)}


def reap(run: Runner, prefix: str, namespace: str, worker_id: str, registry_value: str, token_base: str,
         known: str) -> tuple[list[str], int]:
    """Take back a dead worker's reservations (`known`: the job it noted as running, '' if
    unreadable); returns (blamed job ids, jobs given back unblamed)."""
    blamed, given_back = run("reap", [prefix, namespace, worker_id, registry_value, token_base, known])
    return [text(b) for b in blamed], int(given_back)


def deregister(run: Runner, prefix: str, worker_id: str, namespace: str, registry_value: str, token_base: str) -> None:
    run("deregister", [prefix, worker_id, namespace, registry_value, token_base])
