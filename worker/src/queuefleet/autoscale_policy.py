"""How many worker processes a pool wants, and how many of them this host runs: pure decisions.

`queue autoscale` (autoscaler.py) feeds these functions with what it read from Redis and
supervisor; they hold no state but the cooldown clock of `Damper`, so every rule is testable
without a server.

The demand of a pool is the processes that let every job it holds (running or ready) start
within `target_wait` seconds, at the run time its jobs have recently taken:

    wanted = max(busy, min(busy + ready, ceil((busy + ready) x average run time / target_wait)))

A running job cannot be moved, so never fewer than the busy processes; one process per job at
most, as more could not start any job sooner. So one fast job waiting asks for one process, not
for `max` (the way Horizon's auto balancing goes wrong, laravel/horizon#1552), a job waiting a
moment behind a busy process of fast jobs asks for none (no flapping at a steady 80 % load), and
a pool whose processes are all busy with long jobs still grows while jobs wait (#1539). When the
job that runs next has already waited longer than `target_wait`, the estimate was too low: the
pool grows by `step` at least.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

DEFAULT_RUNTIME = 1.0  # seconds a job is assumed to take before any of the pool's jobs finished


@dataclass(frozen=True)
class ScaleRule:
    """A pool's bounds and knobs on one host, from the inventory (`autoscale:` of a pool)."""

    min: int
    max: int
    step: int = 2  # most processes stopped per decision; started: this or the running count, whichever is larger
    cooldown: float = 60.0  # seconds the pool must want fewer processes before one is stopped
    target_wait: float = 10.0  # seconds a ready job should wait at most

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.max or self.max < 1:
            raise ValueError(f"autoscale needs 0 <= min <= max and max >= 1, got min={self.min} max={self.max}")
        if self.step < 1:
            raise ValueError(f"autoscale step must be at least 1, got {self.step}")
        if not (math.isfinite(self.cooldown) and self.cooldown >= 0):
            raise ValueError(f"autoscale cooldown must be a finite number of seconds >= 0, got {self.cooldown}")
        if not (math.isfinite(self.target_wait) and self.target_wait > 0):
            raise ValueError(f"autoscale target_wait must be a finite number of seconds > 0, got {self.target_wait}")


@dataclass(frozen=True)
class Demand:
    """A pool's work, fleet-wide, as read from Redis at one instant."""

    ready: int  # jobs ready to run in the pool's queues
    busy: int  # the pool's processes running a job, on every host
    oldest_wait: float  # seconds the job that runs next has been ready (0: none ready)
    runtime: float = DEFAULT_RUNTIME  # recent average run time of the pool's jobs, seconds


@dataclass(frozen=True)
class HostSlot:
    """One host serving a pool, as its autoscaler last announced it."""

    host: str
    min: int
    max: int
    running: int


def fleet_wanted(demand: Demand, running: int, rule: ScaleRule) -> tuple[int, str]:
    """Processes the pool wants fleet-wide (before any host's bounds), and why, in words."""
    jobs = demand.busy + demand.ready
    clearing = min(jobs, math.ceil(jobs * max(demand.runtime, 0.0) / rule.target_wait))
    wanted = max(demand.busy, clearing)
    reason = (f"{demand.busy} busy + {demand.ready} ready at {demand.runtime:.2f}s a job, "
              f"each to start within {rule.target_wait:g}s")
    if demand.ready and demand.oldest_wait > rule.target_wait and wanted < running + rule.step:
        wanted = running + rule.step
        reason = f"the next job has waited {demand.oldest_wait:.1f}s > {rule.target_wait:g}s: {running} + step {rule.step}"
    return wanted, reason


def host_share(wanted: int, slots: Sequence[HostSlot], host: str) -> int:
    """This host's part of `wanted`: every host first gets its min, then each further process goes
    to the host with the fewest so far (ties in name order), up to each host's max. Every
    autoscaler of the pool computes the same split from the same announcements, so the hosts do not
    all add `step` for one backlog, and the pool is spread evenly over them."""
    share = {s.host: s.min for s in slots}
    room = {s.host: s.max for s in slots}
    for _ in range(max(wanted - sum(share.values()), 0)):
        open_hosts = [h for h in share if share[h] < room[h]]
        if not open_hosts:
            break
        least = min(open_hosts, key=lambda h: (share[h], h))
        share[least] += 1
    return share.get(host, 0)


class Damper:
    """Turns a host's target into the next size: up by at most `step` or the running count, whichever
    is larger, at once; down only once the
    target has stayed below the running count for `cooldown` seconds, then by at most `step` per
    decision while it stays below (a burst that comes back within the cooldown finds the pool still
    up; a pool that is done shrinks in `cooldown` plus a few decisions, not a cooldown per step)."""

    def __init__(self, rule: ScaleRule) -> None:
        self.rule = rule
        self.below_since: float | None = None

    def next_size(self, running: int, target: int, now: float) -> tuple[int, str]:
        rule = self.rule
        target = min(max(target, rule.min), rule.max)
        if running < rule.min:  # a process died or was stopped by hand: back to min at once
            self.below_since = None
            return max(target, rule.min), f"below min {rule.min}"
        if target >= running:
            self.below_since = None
            # Up by step, or by as many as run already when that is more: a pool doubles, so a
            # spike finds it at max in a few decisions whatever its size (a cold start costs waits).
            return (min(target, running + max(rule.step, running)), "scale up") if target > running else (running, "steady")
        if self.below_since is None:
            self.below_since = now
        waited = now - self.below_since
        if waited < rule.cooldown:
            return running, f"cooling down ({waited:.0f}s of {rule.cooldown:g}s)"
        return max(target, running - rule.step), f"scale down (wanted fewer for {waited:.0f}s)"
