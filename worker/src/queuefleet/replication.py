"""What the exporter says about Redis' high availability: the master's replication (role,
connected replicas, each replica's lag) and, for a redis+sentinel:// URL, the Sentinels'
view (how many answer, whether they can reach quorum, which master they name).

Read at each scrape: INFO replication from the master the client reaches, and two small
commands per Sentinel (each with the Sentinel timeout of connection.py, so a dead one costs
at most that).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

from .connection import sentinel_of


@dataclass
class ReplicaState:
    address: str
    lag_seconds: float
    lag_bytes: int
    online: bool


@dataclass
class Replication:
    role: str
    replicas: list[ReplicaState] = field(default_factory=list)

    @property
    def connected(self) -> int:
        return sum(1 for r in self.replicas if r.online)


@dataclass
class SentinelView:
    configured: int  # Sentinels in the URL
    answering: int = 0
    quorum_ok: bool = False
    master: str = ""  # "host:port" most answering Sentinels name, "" when none does


def read_replication(client: redis.Redis) -> Replication:
    info: dict[str, Any] = client.info("replication")
    role = "master" if info.get("role") == "master" else "replica"
    master_offset = int(info.get("master_repl_offset", 0))
    replicas = []
    for key, value in info.items():
        if not (key.startswith("slave") and key[5:].isdigit() and isinstance(value, dict)):
            continue
        replicas.append(ReplicaState(f"{value.get('ip')}:{value.get('port')}", float(value.get("lag", 0)),
                                     max(0, master_offset - int(value.get("offset", 0))), value.get("state") == "online"))
    return Replication(role, sorted(replicas, key=lambda r: r.address))


def read_sentinels(client: redis.Redis) -> SentinelView | None:
    """The Sentinels' view of the master, or None when `client` does not go through Sentinels."""
    found = sentinel_of(client)
    if found is None:
        return None
    manager, service = found
    view = SentinelView(configured=len(manager.sentinels))
    named: Counter[str] = Counter()
    for sentinel in list(manager.sentinels):
        try:
            address = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", service)
        except (redis.RedisError, OSError):
            continue
        view.answering += 1
        if address:
            host, port = (a.decode() if isinstance(a, bytes) else str(a) for a in address)
            named[f"{host}:{port}"] += 1
        try:
            sentinel.execute_command("SENTINEL", "CKQUORUM", service)
            view.quorum_ok = True
        except (redis.RedisError, OSError):
            pass
    if named:
        view.master = named.most_common(1)[0][0]
    return view
