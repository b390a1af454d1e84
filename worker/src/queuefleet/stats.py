"""The fleet's numbers in one read: queue sizes and ages, job counters, live workers.

Read by `queue exporter` (metrics.py) and the dashboard. The counters are kept by
the scripts that settle jobs (job_counters.py, lua/common.lua), so they count every
job once and survive worker restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import redis

from .job_counters import DURATION_BUCKETS
from .protocol import text
from .scripts import SCRIPTS


@dataclass
class Durations:
    """One (queue, job)'s run times: runs per histogram bucket (not cumulative) and their sum."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    sum_seconds: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.buckets)

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, runs at most that long) pairs, as Prometheus wants them, ending with +Inf."""
        out, running = [], 0
        for bound, runs in zip([*map(_le, DURATION_BUCKETS), "+Inf"], self.buckets):
            running += runs
            out.append((bound, running))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


@dataclass
class FleetStats:
    now: float  # the Redis server's clock, seconds
    sizes: dict[str, dict[str, int]]  # queue -> ready, delayed, reserved
    oldest_age: dict[str, float]  # queue -> seconds the job that runs next has been ready (0: none ready)
    jobs: dict[tuple[str, str, str], int]  # (queue, job, outcome) -> jobs
    durations: dict[tuple[str, str], Durations]  # (queue, job) -> run times
    workers: list[dict[str, str]]  # live workers' heartbeats
    minutes: list[tuple[int, dict[tuple[str, str], int]]]  # (unix minute, (queue, outcome) -> jobs), oldest first

    def per_minute(self, outcome: str) -> list[tuple[int, int]]:
        """(unix minute, jobs with `outcome` over every queue) for the minutes read."""
        return [(minute, sum(n for (_q, o), n in counts.items() if o == outcome)) for minute, counts in self.minutes]


def read_stats(client: "redis.Redis | Any", prefix: str, *, queues: Sequence[str] = (), minutes: int = 0) -> FleetStats:
    """One read-only call: every known queue (and `queues`), the counters, and the last `minutes` minutes."""
    now_ms, names, flat, oldest, jobs, durations, workers, recent = SCRIPTS.run(
        client, "stats", [prefix, minutes, *queues])
    now = int(now_ms) / 1000
    sizes: dict[str, dict[str, int]] = {}
    ages: dict[str, float] = {}
    for i, raw in enumerate(names):
        queue = text(raw)
        sizes[queue] = {"ready": int(flat[3 * i]), "delayed": int(flat[3 * i + 1]), "reserved": int(flat[3 * i + 2])}
        since = text(oldest[i])  # when the job that runs next became ready, on the Redis clock
        ages[queue] = max(0.0, now - float(since)) if since else 0.0
    return FleetStats(
        now=now,
        sizes=sizes,
        oldest_age=ages,
        jobs=_job_counters(_pairs(jobs)),
        durations=_durations(_pairs(durations)),
        workers=[{text(w[i]): text(w[i + 1]) for i in range(0, len(w), 2)} for w in workers],
        minutes=[(int(recent[i]), _minute_counters(_pairs(recent[i + 1]))) for i in range(0, len(recent), 2)],
    )


def _pairs(flat: Sequence[Any]) -> list[tuple[str, int]]:
    return [(text(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]


def _job_counters(pairs: list[tuple[str, int]]) -> dict[tuple[str, str, str], int]:
    out: dict[tuple[str, str, str], int] = {}
    for name, n in pairs:
        parts = name.split(" ")
        if len(parts) == 3:
            out[(parts[0], parts[1], parts[2])] = n
    return out


def _durations(pairs: list[tuple[str, int]]) -> dict[tuple[str, str], Durations]:
    out: dict[tuple[str, str], Durations] = {}
    for name, n in pairs:
        parts = name.split(" ")
        if len(parts) != 3:
            continue
        d = out.setdefault((parts[0], parts[1]), Durations())
        if parts[2] == "sum_us":
            d.sum_seconds = n / 1_000_000
        elif parts[2].isdigit() and int(parts[2]) < len(d.buckets):
            d.buckets[int(parts[2])] += n
    return out


def _minute_counters(pairs: list[tuple[str, int]]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for name, n in pairs:
        queue, _, outcome = name.partition(" ")
        out[(queue, outcome)] = n
    return out
