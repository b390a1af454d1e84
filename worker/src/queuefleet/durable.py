"""Durable push: a push is acknowledged only once `replicas` replicas have it (Redis WAIT).

Redis replicates asynchronously: a push the master acknowledged can be gone after a failover
if no replica had received it yet. With durable push, the push and a `WAIT replicas timeout`
go down the same connection (one pipeline), so WAIT counts the replicas that received this
very push; fewer than asked within the timeout raises NotReplicated (never a silent "ok").
The job is on the master then: with your own id a retried push is safe (it is not pushed
twice); with a generated id, a retry pushes a second job.

Settings, first found wins: the Queue's arguments, the Redis URL's query parameters
(``?wait_replicas=1&wait_timeout_ms=500``), the environment (``QUEUEFLEET_DURABLE_PUSH=1``,
the number of replicas; ``QUEUEFLEET_DURABLE_PUSH_TIMEOUT_MS=500``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import redis

from .connection import own_params

ENV_REPLICAS = "QUEUEFLEET_DURABLE_PUSH"
ENV_TIMEOUT = "QUEUEFLEET_DURABLE_PUSH_TIMEOUT_MS"
DEFAULT_TIMEOUT_MS = 1000


class NotReplicated(redis.RedisError):
    """The push reached the master, but fewer replicas than asked confirmed it in time."""

    def __init__(self, ids: Sequence[str], acked: int, wanted: int, timeout_ms: int) -> None:
        self.ids, self.acked, self.wanted, self.timeout_ms = list(ids), acked, wanted, timeout_ms
        shown = ", ".join(self.ids[:3]) + (f" and {len(self.ids) - 3} more" if len(self.ids) > 3 else "")
        super().__init__(f"push not durable: {acked} of {wanted} replica(s) confirmed job(s) {shown} within {timeout_ms} ms; "
                         "the job is on the master but may be lost in a failover (a retry with the same id is safe)")


@dataclass(frozen=True)
class Durability:
    replicas: int = 0  # 0: acknowledge a push as soon as the master has it
    timeout_ms: int = DEFAULT_TIMEOUT_MS

    @property
    def on(self) -> bool:
        return self.replicas > 0

    @classmethod
    def build(cls, replicas: Any, timeout_ms: Any, where: str) -> "Durability":
        try:
            n = int(replicas) if replicas not in (None, "") else 0
            t = int(timeout_ms) if timeout_ms not in (None, "") else DEFAULT_TIMEOUT_MS
        except (TypeError, ValueError):
            raise ValueError(f"{where}: replicas and timeout must be whole numbers") from None
        if n < 0 or t <= 0:
            raise ValueError(f"{where}: replicas must be >= 0 and the timeout > 0 ms (WAIT 0 would wait forever)")
        return cls(n, t)

    @classmethod
    def from_url(cls, url: str) -> "Durability | None":
        """The URL's wait_replicas/wait_timeout_ms, or None when it has neither."""
        params = own_params(url)
        if not params:
            return None
        return cls.build(params.get("wait_replicas"), params.get("wait_timeout_ms"), "Redis URL wait_replicas/wait_timeout_ms")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Durability | None":
        env = os.environ if environ is None else environ
        if not env.get(ENV_REPLICAS) and not env.get(ENV_TIMEOUT):
            return None
        return cls.build(env.get(ENV_REPLICAS), env.get(ENV_TIMEOUT), f"{ENV_REPLICAS}/{ENV_TIMEOUT}")

    @classmethod
    def resolve(cls, url: str, replicas: int | None = None, timeout_ms: int | None = None) -> "Durability":
        base = cls.from_url(url) or cls.from_env() or cls()
        if replicas is None and timeout_ms is None:
            return base
        return cls.build(base.replicas if replicas is None else replicas, base.timeout_ms if timeout_ms is None else timeout_ms,
                         "Queue(wait_replicas=..., wait_timeout_ms=...)")

    def check(self, acked: Any, ids: Sequence[str]) -> None:
        """Raise NotReplicated when WAIT's reply `acked` is short of `replicas`."""
        if int(acked) < self.replicas:
            raise NotReplicated(ids, int(acked), self.replicas, self.timeout_ms)
