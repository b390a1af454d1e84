"""What the dashboard shows, as one JSON-able document (served as is by /api/overview).

Redis and the failed-jobs database are read separately: when one is down its part of
the document is empty and `errors` says why, so the page can still show the rest. The
autoscaled pools' sizes and scale history (autoscale_state.py) are empty when nothing autoscales.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import redis
from sqlalchemy.exc import SQLAlchemyError

from .autoscale_state import read_fleet_scale
from .failed import DatabaseUnavailable, FailedJob, FailedJobStore, describe_db_error
from .payload import error_summary
from .queue import Queue, redacted_url
from .stats import FleetStats, read_stats

MINUTES = 60  # the throughput window
FAILED_ROWS = 50  # newest failed jobs shown
STATES = ("busy", "idle", "paused")
SCALE_EVENTS = 20  # newest scale events shown


def collect(queue: Queue, store: FailedJobStore) -> dict[str, Any]:
    """The whole overview; never raises for an unreachable Redis or database."""
    doc: dict[str, Any] = {"now": time.time(), "errors": {}, "workers": [], "pools": [], "queues": [],
                           "throughput": throughput(None), "failed_jobs": [], "failed_total": None,
                           "autoscale": {"pools": [], "events": []}}
    try:
        stats = read_stats(queue.redis, queue.prefix, minutes=MINUTES)
    except redis.RedisError as exc:
        what = "unreachable" if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) else "error"
        doc["errors"]["redis"] = f"Redis {what}: {redacted_url(queue.url)}: {exc}"
    else:
        doc.update(now=stats.now, workers=workers(stats), queues=queues(stats), throughput=throughput(stats))
        doc["pools"] = pools(doc["workers"])
        try:
            doc["autoscale"] = autoscale(queue.redis, queue.prefix, stats)
        except redis.RedisError as exc:
            doc["errors"]["autoscale"] = f"Redis error reading the autoscale state: {redacted_url(queue.url)}: {exc}"
    try:
        store.check()
        doc["failed_jobs"] = [failed_row(row) for row in store.recent(FAILED_ROWS)]
        doc["failed_total"] = store.count()
    except DatabaseUnavailable as exc:
        doc["errors"]["database"] = f"failed-jobs database unreachable: {redacted_url(store.url)}: {exc}"
    except SQLAlchemyError as exc:
        doc["errors"]["database"] = f"failed-jobs database unreachable: {redacted_url(store.url)}: {describe_db_error(exc)}"
    return doc


def _number(value: str, default: float = 0.0) -> float:
    try:
        return float(value)
    except ValueError:
        return default


def workers(stats: FleetStats) -> list[dict[str, Any]]:
    """Live workers by host, pool and pid, with up-time and heartbeat age in seconds (Redis' clock)."""
    out = []
    for beat in stats.workers:
        started, seen = _number(beat.get("started", ""), stats.now), _number(beat.get("last_seen", ""), stats.now)
        out.append({
            "host": beat.get("host", "?"), "pool": beat.get("pool", "?"), "pid": int(_number(beat.get("pid", ""))),
            "release": beat.get("release", ""), "state": beat.get("state", "?"), "queues": beat.get("queues", ""),
            "job": beat.get("job", ""), "job_id": beat.get("job_id", ""),
            "processed": int(_number(beat.get("processed", ""))), "failed": int(_number(beat.get("failed", ""))),
            "up_seconds": max(0.0, stats.now - started), "seen_seconds_ago": max(0.0, stats.now - seen),
        })
    return sorted(out, key=lambda w: (w["host"], w["pool"], w["pid"]))


def pools(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Process counts per (host, pool), in the order of `rows`."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for w in rows:
        pool = out.setdefault((w["host"], w["pool"]), {"host": w["host"], "pool": w["pool"], "processes": 0,
                                                        **{state: 0 for state in STATES}})
        pool["processes"] += 1
        if w["state"] in STATES:
            pool[w["state"]] += 1
    return list(out.values())


def autoscale(client: redis.Redis, prefix: str, stats: FleetStats) -> dict[str, Any]:
    """Every host's last announcement of each autoscaled pool found (`live` false when stale), and the
    newest scale events with their age, both on the Redis clock."""
    scale = read_fleet_scale(client, prefix, {w.get("pool", "") for w in stats.workers} - {""}, stats.now, SCALE_EVENTS)
    slots = [{"pool": s.pool, "host": s.host, "min": s.min, "desired": s.desired, "running": s.running, "max": s.max,
              "age": s.age, "live": s.live} for s in scale.slots]
    events = []
    for e in scale.events:
        at = _number(str(e.get("at", "")), stats.now)
        events.append({"at": at, "ago": max(0.0, stats.now - at), "host": str(e.get("host", "?")),
                       "pool": str(e.get("pool", "?")), "from": e.get("from"), "to": e.get("to"),
                       "wanted": e.get("wanted"), "reason": str(e.get("reason", ""))})
    return {"pools": slots, "events": events}


def queues(stats: FleetStats) -> list[dict[str, Any]]:
    return [{"queue": name, **size, "oldest_age": stats.oldest_age.get(name, 0.0)} for name, size in stats.sizes.items()]


def throughput(stats: FleetStats | None) -> dict[str, Any]:
    """Jobs done and failed per minute over the window (oldest first), and their totals."""
    if stats is None:
        return {"minutes": [], "done": 0, "failed": 0}
    failed = dict(stats.per_minute("failed"))
    minutes = [{"minute": minute, "done": done, "failed": failed.get(minute, 0)} for minute, done in stats.per_minute("done")]
    return {"minutes": minutes, "done": sum(m["done"] for m in minutes), "failed": sum(m["failed"] for m in minutes)}


def job_name(payload: str) -> str:
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return "(malformed)"
    name = doc.get("job") if isinstance(doc, dict) else None
    return name if isinstance(name, str) else "(malformed)"


def failed_row(row: FailedJob) -> dict[str, Any]:
    failed_at = row.failed_at.replace(tzinfo=dt.timezone.utc) if row.failed_at.tzinfo is None else row.failed_at
    return {"id": row.id, "uuid": row.uuid, "queue": row.queue, "job": job_name(row.payload),
            "failed_at": failed_at.isoformat(timespec="seconds"), "error": error_summary(row.exception or "-", 300)}
