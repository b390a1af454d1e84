"""What `queue autoscale` left in Redis, as the exporter and the dashboard read it.

The autoscaler of each host announces, per pool, its bounds, its running count and the size it
decided on in `<prefix>:autoscale:<pool>` (one field per host, stamped with the Redis clock),
keeps the last scale events in a list and counts them per (pool, host, direction): see
autoscaler.py, whose key names and event reader are used here as they are (the announcements are
read in pipelines rather than with read_slots, which costs one round trip per pool). An
announcement older than STALE_SECONDS on the Redis clock belongs to an autoscaler that stopped
(or a host that left the pool): it is not shown as the pool's live size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import redis

from .autoscaler import STALE_SECONDS, counts_key, read_events, slots_key
from .protocol import text

DIRECTIONS = ("up", "down")
Counts = dict[tuple[str, str, str], int]  # (pool, host, direction) -> scale events


@dataclass(frozen=True)
class Slot:
    """One host's last announcement for one pool."""

    pool: str
    host: str
    min: int
    max: int
    running: int
    desired: int | None  # None from an autoscaler that does not announce it
    age: float  # seconds since it was announced, on the Redis clock

    @property
    def live(self) -> bool:
        return self.age <= STALE_SECONDS


def slot_from(pool: str, host: str, doc: Mapping[str, Any], now: float) -> Slot | None:
    """A Slot from an announcement (as read_slots returns it), None when a field it needs is missing."""
    try:
        desired = doc.get("desired")
        return Slot(pool, host, int(doc["min"]), int(doc["max"]), int(doc["running"]),
                    None if desired is None else int(desired), max(0.0, now - float(doc["at"])))
    except (KeyError, TypeError, ValueError):
        return None


def parse_counts(raw: Mapping[Any, Any]) -> Counts:
    """The counts hash: fields `pool|host|up` and `pool|host|down`; anything else is skipped."""
    out: Counts = {}
    for field, value in raw.items():
        parts = text(field).split("|")
        if len(parts) == 3 and parts[2] in DIRECTIONS:
            try:
                out[(parts[0], parts[1], parts[2])] = int(value)
            except ValueError:
                continue
    return out


@dataclass(frozen=True)
class HostScale:
    """One host's announcements for the pools asked about, and its scale-event counts for them."""

    slots: tuple[Slot, ...]
    counts: Counts


def read_host_scale(client: "redis.Redis | Any", prefix: str, host: str, pools: Iterable[str], now: float) -> HostScale:
    """One round trip (a pipeline): the counts hash, and `host`'s field of each pool's hash. `now` is
    the Redis clock of the same scrape (FleetStats.now). Counts of other pools are left out: the
    label values stay those of the pools this host runs, whatever else the hash holds."""
    names = sorted(set(pools))
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(counts_key(prefix))
    for pool in names:
        pipe.hget(slots_key(prefix, pool), host)
    raw_counts, *raw_slots = pipe.execute()
    counts = {k: n for k, n in parse_counts(raw_counts).items() if k[1] == host and k[0] in names}
    slots = [slot for pool, raw in zip(names, raw_slots)
             if raw is not None and (slot := _slot(pool, host, raw, now)) is not None]  # None: not autoscaled here
    return HostScale(tuple(slots), counts)


@dataclass(frozen=True)
class FleetScale:
    """Every host's announcement of every autoscaled pool found, and the newest scale events."""

    slots: tuple[Slot, ...]
    events: tuple[dict[str, Any], ...]


def read_fleet_scale(client: "redis.Redis | Any", prefix: str, pools: Iterable[str], now: float,
                     events: int = 20) -> FleetScale:
    """For the dashboard: the pools of `pools` (the live workers'), of the last `events` scale events
    and of the counts hash, each with every host's announcement (live or not). Two round trips (the
    events, then one pipeline), a third only for a pool that is in none of those but the counts."""
    recent = tuple(e for e in read_events(client, prefix, events) if isinstance(e, dict))
    first = sorted({*pools, *(str(e["pool"]) for e in recent if "pool" in e)})
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(counts_key(prefix))
    for pool in first:
        pipe.hgetall(slots_key(prefix, pool))
    raw_counts, *raw = pipe.execute()
    hashes = dict(zip(first, raw))
    rest = sorted({pool for pool, _host, _dir in parse_counts(raw_counts)} - set(first))
    if rest:
        pipe = client.pipeline(transaction=False)
        for pool in rest:
            pipe.hgetall(slots_key(prefix, pool))
        hashes.update(zip(rest, pipe.execute()))
    slots = [slot for pool, fields in sorted(hashes.items()) for host, value in sorted(fields.items())
             if (slot := _slot(pool, text(host), value, now)) is not None]
    return FleetScale(tuple(slots), recent)


def _slot(pool: str, host: str, raw: bytes | str, now: float) -> Slot | None:
    try:
        doc = json.loads(text(raw))
    except ValueError:
        return None
    return slot_from(pool, host, doc, now) if isinstance(doc, dict) else None
