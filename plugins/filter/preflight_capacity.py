"""The preflight memory estimate of one host (roles/preflight/tasks/capacity.yml).

An estimate, not a measurement: a pool's memory is the RSS after which a worker exits between
jobs (it may exceed it while a job runs), redis_maxmemory is the dataset limit (Redis itself adds
a little), and MariaDB is counted by its InnoDB buffer pool only. Good enough to catch
"19 processes x 256 MB on a 4 GB host". Documented in preflight_capacity.yml beside this file.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Optional

from ansible.errors import AnsibleFilterError

MIB = 1048576
# Redis: k/m/g are powers of 1000, kb/mb/gb of 1024 (redis.conf); MariaDB K/M/G/T of 1024.
REDIS_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000 ** 2, "mb": 1024 ** 2, "g": 1000 ** 3, "gb": 1024 ** 3}
MYSQL_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}
REDIS_SIZE = re.compile(r"^([0-9]+)\s*(|b|k|kb|m|mb|g|gb)$")
MYSQL_SIZE = re.compile(r"^([0-9]+)\s*(|b|k|m|g|t)$")
ADVICE = ("Lower numprocs or memory of a pool, redis_maxmemory or mysql_innodb_buffer_pool_size, move a service to another host,\n"
          "or lower preflight_memory_headroom_percent / set preflight_capacity_fail: false if you accept the risk.")


def _whole(value: Any, default: int) -> int:
    """An integer as Jinja's int filter reads it (a pool field already checked by the pools filter)."""
    if value is None:
        return default
    if isinstance(value, bool):
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return 0


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise AnsibleFilterError(f"preflight_capacity: {what} must be a number (got {json.dumps(value)})")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"preflight_capacity: {what} must be a number (got {json.dumps(value, default=str)})") from exc


def size(mb: float) -> str:
    """512 MB, 1.5 GB: the size as the table shows it."""
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb} MB"


def _mb(count: int, unit: int) -> int:
    return int(math.ceil(count * unit / MIB))


def preflight_capacity(pools: Optional[list], memtotal_mb: Any, host: str = "", headroom_percent: Any = 20,
                       unlimited_mb: Any = 512, redis_maxmemory: Any = None,
                       mysql_innodb_buffer_pool_size: Any = None) -> dict[str, Any]:
    """The memory estimate of a host and its table.

    ``pools`` are the host's merged pools (the pools filter's ``pools``; [] or None on a host
    without workers). ``redis_maxmemory`` / ``mysql_innodb_buffer_pool_size`` are None on a host
    that runs no Redis / MariaDB."""
    if pools is None:
        pools = []
    if not isinstance(pools, list) or not all(isinstance(pool, dict) for pool in pools):
        raise AnsibleFilterError("preflight_capacity: expected the host's merged pools (a list of dicts, the pools filter's 'pools')")
    memtotal = _number(memtotal_mb, "memtotal_mb")
    headroom = _number(headroom_percent, "headroom_percent")
    if not 0 <= headroom < 100:
        raise AnsibleFilterError(f"preflight_capacity: headroom_percent must be from 0 to 99 (got {headroom_percent})")
    unlimited = _whole(_number(unlimited_mb, "unlimited_mb"), 512)

    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    total = procs = 0
    for pool in pools:
        count = _whole(pool.get("numprocs"), 1)
        per = _whole(pool.get("memory"), 128)
        note = ""
        if per <= 0:
            per, note = unlimited, f" (memory 0 = no limit; counted as {unlimited} MB)"
        if isinstance(pool.get("autoscale"), dict):
            note += f" (autoscale max; min {pool['autoscale'].get('min')})"
        rows.append({"what": f"pool {pool.get('name', '?')}", "detail": f"{count} x {per} MB{note}", "mb": count * per})
        total += count * per
        procs += count

    if redis_maxmemory is not None:
        raw = str(redis_maxmemory).strip().lower()
        match = REDIS_SIZE.match(raw)
        if match is None:
            problems.append(f"redis_maxmemory {json.dumps(raw)} is not a size such as 256mb or 1gb")
        elif int(match.group(1)) == 0:
            rows.append({"what": "redis", "detail": "maxmemory 0 = no limit; not counted, set redis_maxmemory", "mb": 0})
        else:
            mb = _mb(int(match.group(1)), REDIS_UNITS[match.group(2)])
            rows.append({"what": "redis", "detail": f"maxmemory {raw}", "mb": mb})
            total += mb

    if mysql_innodb_buffer_pool_size is not None:
        raw = str(mysql_innodb_buffer_pool_size).strip().lower()
        match = MYSQL_SIZE.match(raw)
        if match is None:
            problems.append(f"mysql_innodb_buffer_pool_size {json.dumps(raw)} is not a size such as 128M or 2G")
        else:
            mb = _mb(int(match.group(1)), MYSQL_UNITS[match.group(2)])
            rows.append({"what": "mariadb", "detail": f"innodb_buffer_pool_size {raw}", "mb": mb})
            total += mb

    memtotal_shown = int(memtotal) if memtotal == int(memtotal) else memtotal
    usable = int(memtotal * (100 - headroom) / 100)
    fits = total <= usable
    result = {"rows": rows, "problems": problems, "procs": procs, "total_mb": total, "memtotal_mb": memtotal_shown,
              "usable_mb": usable, "fits": fits}
    result["table"] = _table(result, host, headroom_percent)
    return result


def _table(estimate: dict[str, Any], host: str, headroom_percent: Any) -> str:
    def row(what: str, mb: float, detail: str = "") -> str:
        line = f"  {what:<22} {size(mb):>9}"
        return f"{line}  {detail}" if detail else line

    pools = [r for r in estimate["rows"] if r["what"].startswith("pool ")]
    others = [r for r in estimate["rows"] if not r["what"].startswith("pool ")]
    fit = "fits" if estimate["fits"] else "DOES NOT FIT"
    room = f"{size(estimate['memtotal_mb'])} RAM minus {headroom_percent}% headroom"
    lines = [f"preflight capacity of {host}: {fit}: about {size(estimate['total_mb'])} needed, "
             f"{size(estimate['usable_mb'])} usable ({room})"]
    lines += [row(r["what"], r["mb"], r["detail"]) for r in pools]
    if estimate["procs"] > 0:
        workers = sum(r["mb"] for r in pools)
        lines.append(row("workers", workers, f"{estimate['procs']} processes, about {size(workers)}"))
    lines += [row(r["what"], r["mb"], r["detail"]) for r in others]
    lines.append(row("total", estimate["total_mb"]))
    if not estimate["fits"]:
        lines.append(ADVICE)
    return "\n".join(lines)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"preflight_capacity": preflight_capacity}
