"""`queue schedule`: push jobs by cron expressions, once per tick fleet-wide.

The schedule file lists entries (name, cron, job, data, queue, catch_up, tries, timeout).
Cron expressions have five fields (minute hour day month weekday) or six (seconds first),
parsed by cronsim, and are read in **UTC against the Redis server's clock**, so schedulers on
several hosts agree on every tick whatever their own clocks say.

Several schedulers may run at once (one per host, for availability): each tick of each
entry is pushed once, because a tick is claimed in Redis with a watermark per entry (the
last tick handled, only ever moving forward: lua/schedule.lua), and the job's id is
derived from the entry and the tick.

A tick is *missed* when no scheduler ran at its time (nor within GRACE seconds after).
An entry with `catch_up: true` then gets one job for the latest missed tick (not one per
missed tick); with `catch_up: false` (the default, as cron does) missed ticks are skipped
and logged. A new entry starts from the present: it never fires for ticks before it was
first seen.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import tomllib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import redis
from cronsim import CronSim, CronSimError

from .logs import JobLog
from .outage import Backoff, Outage, is_transient
from .payload import MAX_TIMEOUT, JOB_ID, Job, check_job_name, check_queue_name, check_seconds
from .protocol import NOTIFY_CAP, parse_signal, text
from .connection import client_from_url, redacted_url
from .queue import REMEMBER_IDS
from .restarts import RestartWatch
from .scripts import SCRIPTS

GRACE = 10.0  # seconds after its time during which a tick still counts as on time
FORGET_AFTER = 86400  # seconds after which `queue status` forgets an entry no scheduler announces any more
MAX_WAIT = 1.0  # seconds between looks at the clock
ENTRY_KEYS = {"name", "cron", "job", "data", "queue", "catch_up", "tries", "timeout"}
NAME_MAX = 64


class ScheduleError(ValueError):
    """A schedule file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Entry:
    name: str
    cron: str
    job: str
    data: Any = None
    queue: str = "default"
    catch_up: bool = False
    tries: int | None = None
    timeout: float | None = None

    def after(self, moment: float) -> float:
        """The first tick strictly after `moment` (Unix seconds)."""
        return next(CronSim(self.cron, _utc(moment))).timestamp()

    def latest(self, moment: float) -> float:
        """The last tick at or before `moment` (second resolution)."""
        return next(CronSim(self.cron, _utc(math.floor(moment) + 1), reverse=True)).timestamp()

    def job_id(self, tick: float) -> str:
        return f"schedule.{self.name}.{int(tick)}"

    def payload(self, tick: float) -> Job:
        item = Job.new(self.job, self.data, self.queue, tries=self.tries, timeout=self.timeout, id=self.job_id(tick))
        item.pushed_at = tick
        return item


def _utc(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, tz=timezone.utc)


def load(path: Path) -> list[Entry]:
    """Read and check a schedule file (.json: a list of entries or {"schedule": [...]};
    .toml: [[schedule]] tables). Every problem is a ScheduleError naming file and entry."""
    try:
        raw = path.read_text()
    except OSError as exc:
        raise ScheduleError(f"cannot read schedule file {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix == ".toml":
            doc: Any = tomllib.loads(raw)
        else:
            doc = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ScheduleError(f"schedule file {path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from None
    items = doc.get("schedule") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise ScheduleError(f"schedule file {path}: expected a list of entries (or a 'schedule' list)")
    entries: list[Entry] = []
    for number, item in enumerate(items, 1):
        label = f"schedule file {path}: entry {number}" + (f" ({item.get('name')!r})" if isinstance(item, dict) else "")
        try:
            entries.append(_entry(item))
        except (ValueError, TypeError) as exc:
            raise ScheduleError(f"{label}: {exc}") from None
    names = [e.name for e in entries]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ScheduleError(f"schedule file {path}: entry names must be unique, repeated: {', '.join(twice)}")
    return entries


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _entry(item: Any) -> Entry:
    if not isinstance(item, dict):
        raise ValueError("an entry must be a mapping")
    unknown = sorted(set(item) - ENTRY_KEYS)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(ENTRY_KEYS))})")
    missing = [k for k in ("name", "cron", "job") if k not in item]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    name = item["name"]
    if not isinstance(name, str) or len(name) > NAME_MAX or not JOB_ID.fullmatch(name):
        raise ValueError(f"name must be 1-{NAME_MAX} of A-Z a-z 0-9 _ . : - (starting with a letter or digit)")
    cron = item["cron"]
    if not isinstance(cron, str):
        raise ValueError("cron must be a string like '*/5 * * * *'")
    try:
        CronSim(cron, datetime.now(tz=timezone.utc))
    except CronSimError as exc:
        raise ValueError(f"cron {cron!r}: {exc}") from None
    catch_up = item.get("catch_up", False)
    if not isinstance(catch_up, bool):
        raise ValueError("catch_up must be true or false")
    timeout = item.get("timeout")
    if timeout is not None:
        check_seconds("timeout", timeout, maximum=MAX_TIMEOUT, allow_zero=False)
    entry = Entry(name, cron, check_job_name(item["job"]), item.get("data"), check_queue_name(item.get("queue", "default")),
                  catch_up, item.get("tries"), timeout)
    entry.payload(0.0).encode()  # data must be JSON (no NaN), tries an integer >= 0: checked as a push would
    return entry


@dataclass
class Decision:
    tick: float  # the tick to claim
    push: bool  # push a job for it (else only move the watermark: skipped)
    missed: int  # ticks before it that no scheduler handled
    first: bool = False  # the entry was never seen before: no tick before now is ours


def decide(entry: Entry, last: float | None, now: float) -> Decision | None:
    """What to do for `entry` at `now` when the last tick handled was `last` (None: never seen)."""
    latest = entry.latest(now)
    if last is None:
        # First sight: start from the present. A tick this very moment is on time; older ones are not ours.
        return Decision(latest, now - latest <= GRACE, 0, first=True)
    first = entry.after(last)
    if first > now:
        return None
    missed = _count_between(entry, first, latest)
    on_time = now - latest <= GRACE
    return Decision(latest, on_time or entry.catch_up, missed)


def _count_between(entry: Entry, first: float, latest: float, cap: int = 1000) -> int:
    """Ticks from `first` up to, not including, `latest` (at most `cap` are counted)."""
    count, it = 0, CronSim(entry.cron, _utc(first - 1))
    for tick in it:
        if tick.timestamp() >= latest or count >= cap:
            break
        count += 1
    return count


class Scheduler:
    def __init__(self, redis_url: str, entries: Sequence[Entry], *, prefix: str, log: JobLog, host: str,
                 release: str = "") -> None:
        self.client = client_from_url(redis_url, socket_timeout=5)
        self.entries = list(entries)
        self.prefix = prefix
        self.log = log
        self.host = host
        self.where = redacted_url(redis_url)
        self.stop = threading.Event()
        self.outage = Outage(log, self.where)
        self.backoff = Backoff(0.1, 5.0)
        # Like a worker, the scheduler exits on a restart signal (`queue restart`, which every deploy and
        # rollback sends), for supervisor to start it on the new release.
        self.restarts = RestartWatch(host, release)
        self.booted = False

    def install_signals(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop.set())

    def run(self) -> int:
        self.log.event("starting", f"scheduler for {len(self.entries)} entries ({', '.join(e.name for e in self.entries)}) "
                                   f"on {self.where}; cron times are UTC on the Redis server's clock")
        while not self.stop.is_set():
            try:
                wait = self.step()
                self.outage.back()
                self.backoff.reset()
            except redis.RedisError as exc:
                if not is_transient(exc):
                    raise
                self.outage.lost(exc)
                self.backoff.pause(self.stop.is_set)
                continue
            self.stop.wait(wait)
        self.log.event("stopping", "scheduler stopped")
        self.log.flush()
        return 0

    def step(self) -> float:
        """Handle every due tick; returns how long to wait before looking again."""
        now_ms, everyone, this_host, raw = self._run("last", self.host, *(e.name for e in self.entries))
        now = int(now_ms) / 1000
        signals = (parse_signal(everyone), parse_signal(this_host))
        if not self.booted:
            self.restarts.boot(*signals)
            self.booted = True
        why = self.restarts.due(*signals)
        if why:
            self.log.event("stopping", f"scheduler exits for supervisor to restart it: {why}")
            self.stop.set()
            return 0.0
        lasts = [float(v) / 1000 if v else None for v in raw]
        next_runs: dict[str, float] = {}
        for entry, last in zip(self.entries, lasts):
            decision = decide(entry, last, now)
            if decision is not None:
                self._claim(entry, decision, now)
                last = decision.tick
            next_runs[entry.name] = entry.after(last if last is not None else now)
        self._announce(next_runs, now)
        self.log.flush()
        soonest = min(next_runs.values(), default=now + MAX_WAIT)
        return max(0.01, min(MAX_WAIT, soonest - now))

    def _claim(self, entry: Entry, decision: Decision, now: float) -> None:
        item = entry.payload(decision.tick)
        args = [entry.name, int(decision.tick * 1000), "1" if decision.push else "0", entry.queue, NOTIFY_CAP,
                int(REMEMBER_IDS * 1000), item.id, item.encode()]
        if not int(self._run("claim", *args)):
            return  # another scheduler handled this tick
        when = _utc(decision.tick).strftime("%Y-%m-%dT%H:%M:%SZ")
        if decision.push:
            extra = {"missed": decision.missed} if decision.missed else {}
            late = "" if now - decision.tick <= GRACE else f", {now - decision.tick:.0f}s late (catch_up)"
            self.log.job("scheduled", item.id, entry.job, entry.queue, 0, tick=when, entry=entry.name, **extra)
            if late or decision.missed:
                self.log.event("schedule", f"{entry.name}: pushed one job for the tick of {when}{late}; "
                                           f"{decision.missed} earlier tick(s) were missed")
        elif not decision.first:
            self.log.event("schedule", f"{entry.name}: the tick of {when} was missed (no scheduler ran then) and is "
                                       f"skipped (catch_up: false), with {decision.missed} earlier one(s)")

    def _announce(self, next_runs: dict[str, float], now: float) -> None:
        """What `queue status` shows: each entry, its next run and who last looked."""
        pairs: list[str] = []
        for entry in self.entries:
            pairs += [entry.name, json.dumps({"cron": entry.cron, "job": entry.job, "queue": entry.queue,
                                              "catch_up": entry.catch_up, "next": next_runs[entry.name],
                                              "seen": now, "host": self.host}, separators=(",", ":"))]
        self._run("announce", FORGET_AFTER, *pairs)

    def _run(self, mode: str, *args: Any) -> Any:
        return SCRIPTS.run(self.client, "schedule", [self.prefix, mode, *args])


def read_schedule(client: redis.Redis, prefix: str) -> dict[str, dict[str, Any]]:
    """The entries schedulers announced, with their next run and when they were last seen."""
    flat = SCRIPTS.run(client, "schedule", [prefix, "list"])
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(flat), 2):
        try:
            out[text(flat[i])] = json.loads(flat[i + 1])
        except ValueError:
            continue
    return dict(sorted(out.items()))


def describe_next(entry: Entry, now: float, count: int = 3) -> list[str]:
    it = CronSim(entry.cron, _utc(now))
    return [next(it).strftime("%Y-%m-%d %H:%M:%S UTC") for _ in range(count)]


