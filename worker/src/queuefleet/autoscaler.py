"""`queue autoscale`: one per host, under supervisor, sizing that host's autoscaled pools.

An autoscaled pool is `max` supervisor programs on each host (one per process, as every pool),
all with autostart off: this loop starts and stops them. The first `min` of them (in slot order)
are the pool's floor: they are started whenever they do not run, at once and without asking
Redis, so the pool comes up at min after a reboot or a supervisord restart (never at max) and
never stays below min. The others are started and stopped by the backlog.

Each tick reads the pool's queues from Redis (one read: stats.read_stats, on the Redis clock),
reads the other hosts' bounds and running counts from a hash where each announces its own,
takes this host's share of what the pool wants (autoscale_policy), and starts or stops
processes through supervisord's XML-RPC interface. A stop is supervisor's stopsignal: the
worker finishes its job and exits, as on any deploy. Every change is one log line saying why,
one entry in a capped history list (the dashboard's) and a counter (the exporter's). When Redis
cannot be read, the loop holds every size above min.

Decisions come every `interval` seconds; in between, the ready counts are read every REACT
seconds, and a pool with jobs ready and room to grow gets a decision at once that may only start
processes: the reaction to a burst does not wait for the interval.
"""

from __future__ import annotations

import json
import math
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import redis

from .autoscale_policy import DEFAULT_RUNTIME, Damper, Demand, HostSlot, ScaleRule, fleet_wanted, host_share
from .logs import JobLog
from .payload import check_pool_name, check_queue_name
from .protocol import RestartSignal, text
from .restarts import RestartWatch
from .queue import queue_sizes
from .stats import FleetStats, read_stats
from .supervisor_rpc import RUNNING_STATES, STARTABLE_STATES, ProcessInfo, Supervisor, SupervisorError

HISTORY = 500  # scale events kept in <prefix>:autoscale:events
REACT = 0.25  # seconds between two reads of the pools' ready counts, between decisions
STALE_SECONDS = 60.0  # an announcement older than this (Redis clock) is not live (metrics, dashboard, alert)
SLOT_TTL_TICKS = 3  # a host's announcement older than this many ticks (+ 10 s) is ignored


class AutoscaleConfigError(ValueError):
    """The autoscale file is not what the role writes."""


@dataclass(frozen=True)
class ScaledPool:
    name: str
    queues: tuple[str, ...]
    programs: tuple[str, ...]  # supervisor group names in slot order, `max` of them; the first `min` are the floor
    rule: ScaleRule

    @property
    def floor(self) -> tuple[str, ...]:
        return self.programs[: self.rule.min]


@dataclass(frozen=True)
class AutoscaleSettings:
    pools: tuple[ScaledPool, ...]
    supervisor_url: str = "unix:///var/run/supervisor.sock"
    interval: float = 5.0
    host: str = field(default_factory=socket.gethostname)


def load_settings(path: Path, host: str | None = None) -> AutoscaleSettings:
    """The JSON file the queue_worker role renders (see docs/autoscaling.md), checked field by field."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AutoscaleConfigError(f"{path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("pools"), list) or not doc["pools"]:
        raise AutoscaleConfigError(f"{path}: expected an object with a non-empty list `pools`")
    pools = []
    for i, raw in enumerate(doc["pools"]):
        where = f"{path}: pools[{i}]"
        if not isinstance(raw, dict):
            raise AutoscaleConfigError(f"{where}: expected an object")
        try:
            name = str(raw["name"])
            queues = tuple(str(q) for q in raw["queues"])
            programs = tuple(str(p) for p in raw["programs"])
            rule = ScaleRule(min=int(raw["min"]), max=int(raw["max"]), step=int(raw.get("step", 2)),
                             cooldown=float(raw.get("cooldown", 60)), target_wait=float(raw.get("target_wait", 10)))
        except KeyError as exc:
            raise AutoscaleConfigError(f"{where}: missing {exc}") from None
        except (TypeError, ValueError) as exc:
            raise AutoscaleConfigError(f"{where}: {exc}") from None
        if not queues:
            raise AutoscaleConfigError(f"{where}: no queues")
        try:
            for queue in queues:
                check_queue_name(queue)
            check_pool_name(name)
        except ValueError as exc:
            raise AutoscaleConfigError(f"{where}: {exc}") from None
        if len(programs) != rule.max or len(set(programs)) != len(programs):
            raise AutoscaleConfigError(f"{where}: programs must name max={rule.max} distinct programs, got {len(programs)}")
        pools.append(ScaledPool(name, queues, programs, rule))
    if len({p.name for p in pools}) != len(pools):
        raise AutoscaleConfigError(f"{path}: a pool is listed twice")
    try:
        interval = float(doc.get("interval", 5))
    except (TypeError, ValueError):
        raise AutoscaleConfigError(f"{path}: interval must be a number of seconds") from None
    if not (math.isfinite(interval) and 0 < interval <= STALE_SECONDS / 2):
        raise AutoscaleConfigError(f"{path}: interval must be > 0 and <= {STALE_SECONDS / 2:g} seconds (an announcement "
                                   f"{STALE_SECONDS:g} s old is stale), got {interval:g}")
    supervisor_url = str(doc.get("supervisor", "unix:///var/run/supervisor.sock"))
    try:
        Supervisor(supervisor_url)  # its URL is checked here; nothing is connected yet
    except ValueError as exc:
        raise AutoscaleConfigError(f"{path}: {exc}") from None
    return AutoscaleSettings(tuple(pools), supervisor_url, interval, host or socket.gethostname())


def slots_key(prefix: str, pool: str) -> str:
    return f"{prefix}:autoscale:{pool}"


def events_key(prefix: str) -> str:
    return f"{prefix}:autoscale:events"


def counts_key(prefix: str) -> str:
    return f"{prefix}:autoscale:counts"


class RuntimeEstimate:
    """The run time a pool's ready jobs are expected to take, canary jobs left out: the larger of
    the pool's lifetime average and a recent average. The recent one is moved towards the average
    of the jobs finished since the last tick by a weight that grows with their number
    (1 - (1 - WEIGHT)^finished): one short job finishing in a burst of long ones moves it a quarter
    of the way. The lifetime average is the floor: a lull of fast jobs does not make the pool
    forget its slow ones when they come back in a burst (an estimate too low costs waits; one too
    high costs processes for one cooldown). DEFAULT_RUNTIME before any job finished."""

    WEIGHT = 0.25  # how far one finished job moves the recent average towards its run time

    def __init__(self) -> None:
        self.last: tuple[float, int] | None = None
        self.recent = DEFAULT_RUNTIME
        self.value = DEFAULT_RUNTIME

    def update(self, stats: FleetStats, queues: Sequence[str]) -> float:
        # The post-deploy canaries (queuefleet.canary:*) return at once: they say nothing of the pool's jobs.
        mine = [d for (q, job), d in stats.durations.items() if q in queues and not job.startswith("queuefleet.canary:")]
        seconds = sum(d.sum_seconds for d in mine)
        runs = sum(d.count for d in mine)
        if not runs:
            return self.value
        if self.last is not None and runs > self.last[1]:
            finished = runs - self.last[1]
            self.recent += ((seconds - self.last[0]) / finished - self.recent) * (1 - (1 - self.WEIGHT) ** finished)
        elif self.last is None:
            self.recent = seconds / runs
        self.last = (seconds, runs)
        self.value = max(self.recent, seconds / runs)
        return self.value


class Autoscaler:
    def __init__(self, client: redis.Redis, settings: AutoscaleSettings, *, prefix: str, log: JobLog,
                 supervisor: Supervisor | None = None, release: str = "") -> None:
        self.client = client
        self.settings = settings
        self.prefix = prefix
        self.log = log
        self.supervisor = supervisor or Supervisor(settings.supervisor_url)
        self.dampers = {p.name: Damper(p.rule) for p in settings.pools}
        self.runtimes = {p.name: RuntimeEstimate() for p in settings.pools}
        self.stop = threading.Event()
        # Like a worker, it exits on `queue restart` (every deploy and rollback sends one), so
        # supervisor starts it again on the release `current` points at.
        self.restarts = RestartWatch(settings.host, release)
        self._booted = False
        # pool -> what its last decision saw and did: when (monotonic), the jobs ready, the size it
        # chose, and whether that size was still short of its target (the growth per decision is capped)
        self.seen: dict[str, tuple[float, int, int, bool]] = {}
        self._holding = ""  # why the last tick held every size (logged once per cause)

    def install_signals(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop.set())

    def run(self) -> int:
        names = ", ".join(f"{p.name} [{p.rule.min}..{p.rule.max}]" for p in self.settings.pools)
        self.log.event("starting", f"autoscaler on {self.settings.host} for {names}, every {self.settings.interval:g}s")
        while not self.stop.is_set():
            self.tick()
            self._react_until(time.monotonic() + self.settings.interval)
        self.log.event("stopping", "autoscaler stopped; the pools keep their current size")
        return 0

    def _react_until(self, deadline: float) -> None:
        """Between two decisions, read the pools' ready counts every REACT seconds (one call). A pool
        below its max with jobs ready gets a decision at once, one that may only start processes,
        when its backlog grew since its last decision, when that decision was still short of the
        size it wanted, or when it came `target_wait` ago: a burst is met in a fraction of a second
        whatever the interval, stops keep the interval's pace, and a steady backlog costs a
        decision per `target_wait` at most."""
        queues = [q for p in self.settings.pools for q in p.queues]
        while not self.stop.wait(min(REACT, max(deadline - time.monotonic(), 0.0))):
            if time.monotonic() >= deadline:
                return
            try:
                sizes = queue_sizes(self.client, self.prefix, queues)
            except (redis.RedisError, OSError):
                continue  # the next decision holds and says why
            ready = {queue: size["ready"] for queue, size in sizes.items()}
            if any(self._wants_a_look(pool, sum(ready[q] for q in pool.queues)) for pool in self.settings.pools):
                self.tick(grow_only=True)

    def _wants_a_look(self, pool: ScaledPool, ready: int) -> bool:
        at, seen_ready, size, short = self.seen.get(pool.name, (0.0, 0, 0, True))
        stale = time.monotonic() - at >= pool.rule.target_wait  # jobs may have waited past the target since
        return ready > 0 and size < pool.rule.max and (ready > seen_ready or short or stale)

    def tick(self, now: float | None = None, *, grow_only: bool = False) -> list[str]:
        """One decision for every pool (one that may only start processes when `grow_only`);
        returns the log lines of the changes made."""
        now = time.monotonic() if now is None else now
        try:
            procs = self.supervisor.processes()
        except SupervisorError as exc:
            self._hold(f"supervisord unreachable ({exc})")
            return []
        changes = [line for pool in self.settings.pools if (line := self._keep_floor(pool, procs))]
        try:
            if changes:
                procs = self.supervisor.processes()
        except SupervisorError as exc:
            self._hold(f"supervisord unreachable ({exc})")
            return changes
        try:
            stats = read_stats(self.client, self.prefix, queues=[q for p in self.settings.pools for q in p.queues])
            restart_due = self._restart_due()
        except (redis.RedisError, OSError) as exc:
            self._hold(f"Redis unreachable ({exc.__class__.__name__}: {exc})")
            return changes
        if self._holding:
            self.log.event("resumed", f"autoscaler resumed after: {self._holding}")
            self._holding = ""
        if restart_due:
            return changes
        for pool in self.settings.pools:
            try:
                line = self._decide(pool, procs, stats, now, grow_only)
            except (redis.RedisError, OSError, SupervisorError) as exc:
                self.log.event("error", f"pool {pool.name}: {exc}; size kept")
                continue
            if line:
                changes.append(line)
        return changes

    def _restart_due(self) -> bool:
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(f"{self.prefix}:restart", "generation", "release", "id")
        pipe.hmget(f"{self.prefix}:restart:host:{self.settings.host}", "generation", "release", "id")
        signals = [RestartSignal(int(g or 0), text(r or b""), text(i or b"")) for g, r, i in pipe.execute()]
        if not self._booted:
            self.restarts.boot(*signals)
            self._booted = True
            return False
        why = self.restarts.due(*signals)
        if why:
            self.log.event("stopping", f"autoscaler exits for supervisor to restart it: {why}; the pools keep their size")
            self.stop.set()
        return bool(why)

    def _hold(self, why: str) -> None:
        if why.split(" (")[0] != self._holding.split(" (")[0]:
            self.log.event("holding", f"{why}: every pool keeps its current size (at least its min)")
        self._holding = why

    def _keep_floor(self, pool: ScaledPool, procs: list[ProcessInfo]) -> str:
        """Start the pool's first `min` programs that do not run (a reboot, a crash supervisor gave
        up on, a stop by hand): no backlog needed, Redis not asked."""
        started = self._each("start", [p for p in procs if p.group in pool.floor and p.state in STARTABLE_STATES], pool)
        if not started:
            return ""
        line = f"pool {pool.name}: started {', '.join(p.name for p in started)} (below min {pool.rule.min}: {', '.join(f'{p.name} was {p.state}' for p in started)})"
        self.log.event("scale", line, pool_name=pool.name)
        return line

    def _decide(self, pool: ScaledPool, procs: list[ProcessInfo], stats: FleetStats, now: float,
                grow_only: bool = False) -> str:
        order = {name: slot for slot, name in enumerate(pool.programs)}
        burst = sorted((p for p in procs if p.group in order and p.group not in pool.floor), key=lambda p: order[p.group])
        # The floor counts as running whatever its state: _keep_floor and supervisor's autorestart bring
        # it back (a worker that exits on `queue restart` is EXITED for a moment), and only the
        # processes above it are this decision's to start or stop.
        above = [p for p in burst if p.state in RUNNING_STATES]
        running = len(pool.floor) + len(above)
        demand = self._demand(pool, stats)
        slots = self._slots(pool, running, stats.now)
        fleet_running = sum(s.running for s in slots)
        wanted, why = fleet_wanted(demand, fleet_running, pool.rule)
        wanted = min(max(wanted, sum(s.min for s in slots)), sum(s.max for s in slots))
        target = host_share(wanted, slots, self.settings.host)
        size, verdict = self.dampers[pool.name].next_size(running, target, now)
        if grow_only:
            size = max(size, running)
        self.seen[pool.name] = (time.monotonic(), demand.ready, size, size < min(target, pool.rule.max))
        self._publish(pool, running, size, stats.now)
        if size > running:
            chosen = self._each("start", [p for p in burst if p.state in STARTABLE_STATES][: size - running], pool)
        elif size < running:
            chosen = self._each("stop", self._to_stop(burst, stats, running - size), pool)
        else:
            return ""
        if not chosen:
            return ""
        new = running + (len(chosen) if size > running else -len(chosen))
        line = (f"pool {pool.name}: {running} -> {new} ({verdict}): fleet wants {wanted} ({why}); "
                f"{len(slots)} host(s), this host's share {target}; "
                f"{'started' if size > running else 'stopping'} {', '.join(p.name for p in chosen)}")
        self.log.event("scale", line, pool_name=pool.name, running=running, size=new, wanted=wanted)
        self._record(pool, running, new, wanted, verdict, stats.now)
        return line

    def _each(self, action: str, procs: list[ProcessInfo], pool: ScaledPool) -> list[ProcessInfo]:
        """Start or stop each process; one that supervisord refuses (SPAWN_ERROR: its command is
        gone) is logged and left out, and the others go ahead."""
        done = []
        for p in procs:
            try:
                getattr(self.supervisor, action)(p)
            except SupervisorError as exc:
                self.log.event("error", f"pool {pool.name}: cannot {action} {p.name} ({exc}); trying again next decision",
                               pool_name=pool.name)
                continue
            done.append(p)
        return done

    def _demand(self, pool: ScaledPool, stats: FleetStats) -> Demand:
        ready = sum(stats.sizes.get(q, {}).get("ready", 0) for q in pool.queues)
        oldest = max((stats.oldest_age.get(q, 0.0) for q in pool.queues), default=0.0)
        busy = sum(1 for w in stats.workers if w.get("pool") == pool.name and w.get("state") == "busy")
        return Demand(ready=ready, busy=busy, oldest_wait=oldest, runtime=self.runtimes[pool.name].update(stats, pool.queues))

    def _slots(self, pool: ScaledPool, running: int, redis_now: float) -> list[HostSlot]:
        """Every live host's last announcement for the pool, this host's as it is now; stale ones deleted."""
        key = slots_key(self.prefix, pool.name)
        mine = HostSlot(self.settings.host, pool.rule.min, pool.rule.max, running)
        fresh = redis_now - SLOT_TTL_TICKS * self.settings.interval - 10
        slots, stale = [mine], []
        for host_b, value in self.client.hgetall(key).items():
            host = text(host_b)
            if host == mine.host:
                continue
            try:
                other = json.loads(text(value))
                slot = HostSlot(host, int(other["min"]), int(other["max"]), int(other["running"]))
                at = float(other["at"])
            except (ValueError, KeyError, TypeError):
                stale.append(host)
                continue
            (slots.append(slot) if at >= fresh else stale.append(host))
        if stale:
            self.client.hdel(key, *stale)
        return slots

    def _publish(self, pool: ScaledPool, running: int, desired: int, redis_now: float) -> None:
        """This host's slot: its bounds, running count and the size it decided on (read by the other
        hosts' autoscalers, the exporter and the dashboard)."""
        doc = {"min": pool.rule.min, "max": pool.rule.max, "running": running, "desired": desired, "at": redis_now}
        self.client.hset(slots_key(self.prefix, pool.name), self.settings.host, json.dumps(doc))

    def _to_stop(self, burst: list[ProcessInfo], stats: FleetStats, count: int) -> list[ProcessInfo]:
        """Processes above the floor: idle ones first, highest slot first (a busy one finishes its job first)."""
        busy_pids = {int(w.get("pid", 0) or 0) for w in stats.workers
                     if w.get("host") == self.settings.host and w.get("state") == "busy"}
        running = [p for p in burst if p.state in RUNNING_STATES][::-1]  # the highest slots first
        return ([p for p in running if p.pid not in busy_pids] + [p for p in running if p.pid in busy_pids])[:count]

    def _record(self, pool: ScaledPool, before: int, after: int, wanted: int, verdict: str, redis_now: float) -> None:
        event = {"at": round(redis_now, 3), "host": self.settings.host, "pool": pool.name, "from": before, "to": after,
                 "wanted": wanted, "reason": verdict}
        direction = "up" if after > before else "down"
        pipe = self.client.pipeline()
        pipe.lpush(events_key(self.prefix), json.dumps(event))
        pipe.ltrim(events_key(self.prefix), 0, HISTORY - 1)
        pipe.hincrby(counts_key(self.prefix), f"{pool.name}|{self.settings.host}|{direction}", 1)
        pipe.execute()


def read_events(client: redis.Redis, prefix: str, limit: int = 50) -> list[dict[str, Any]]:
    """The last `limit` scale events, newest first (for the dashboard and `queue status`)."""
    out = []
    for raw in client.lrange(events_key(prefix), 0, limit - 1):
        try:
            out.append(json.loads(text(raw)))
        except ValueError:
            continue
    return out


def read_slots(client: redis.Redis, prefix: str, pool: str) -> dict[str, dict[str, float]]:
    """Every host's last announcement for `pool`: host -> {min, max, running, desired, at (Redis clock)}."""
    out = {}
    for host, raw in client.hgetall(slots_key(prefix, pool)).items():
        try:
            doc = json.loads(text(raw))
            out[text(host)] = {k: float(doc[k]) for k in ("min", "max", "running", "desired", "at") if k in doc}
        except (ValueError, TypeError, AttributeError):
            continue
    return out
