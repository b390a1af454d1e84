"""Refuse a Redis topology that cannot fail over safely, before anything changes."""

from __future__ import annotations

import re
from typing import Any

from ansible.errors import AnsibleFilterError


def redis_topology_problems(redis_hosts: list[str], sentinel_hosts: list[str], hostvars: dict[str, Any]) -> list[str]:
    """The problems of one environment's Redis servers and sentinels, each a sentence; [] when it can fail over
    safely (or has no sentinels and no replicas).

    With sentinels: at least three, an odd number (an even one can split in two halves that both wait), on as
    many hosts (two on one host fall together), a quorum that is a majority of them, and Redis passwords
    Sentinel can keep (no whitespace or quotes). With replicas: a password, which every server also presents
    to its master (masterauth), and a private address on every server."""
    if not isinstance(redis_hosts, list) or not isinstance(sentinel_hosts, list):
        raise AnsibleFilterError("redis_topology_problems: expected the lists of redis and sentinel hosts")
    problems = []
    first = hostvars.get(redis_hosts[0], {}) if redis_hosts else {}
    password = str(first.get("redis_requirepass") or "")
    if len(redis_hosts) > 1:
        if not password:
            problems.append(f"the redis group has {len(redis_hosts)} servers (a master and replicas) but redis_requirepass is "
                            "empty: replicas authenticate to their master with it (masterauth)")
        for host in redis_hosts:
            if not (hostvars.get(host) or {}).get("queuefleet_private_address"):
                problems.append(f"redis server {host} has no queuefleet_private_address: replicas follow the master by it")
    if not sentinel_hosts:
        return problems
    count = len(sentinel_hosts)
    if count < 3:
        problems.append(f"{count} sentinel(s): at least three, on three hosts, are needed to agree on a failover")
    elif count % 2 == 0:
        problems.append(f"{count} sentinels: an even number can split into two halves that both wait; use an odd number")
    if len(redis_hosts) < 2:
        problems.append("sentinels without a replica: the redis group needs a master and at least one replica to fail over to")
    where: dict[str, list[str]] = {}
    for host in sentinel_hosts:
        own = hostvars.get(host) or {}
        address = own.get("queuefleet_private_address")
        if not address:
            problems.append(f"sentinel {host} has no queuefleet_private_address")
            continue
        where.setdefault(str(own.get("ansible_host") or address), []).append(host)
    for machine, hosts in sorted(where.items()):
        if len(hosts) > 1:
            problems.append(f"sentinels {', '.join(hosts)} share one host ({machine}): they would fail together")
    quorum = int((hostvars.get(sentinel_hosts[0]) or {}).get("sentinel_quorum") or 2)
    if not count // 2 < quorum <= count:
        problems.append(f"sentinel_quorum {quorum} with {count} sentinels: make it a majority ({count // 2 + 1} to {count})")
    own_password = str((hostvars.get(sentinel_hosts[0]) or {}).get("redis_sentinel_password") or "")
    for name, value in (("redis_requirepass", password), ("redis_sentinel_password", own_password)):
        if re.search(r"[\s\"']", value):
            problems.append(f"{name} holds whitespace or a quote: Sentinel writes it unquoted into sentinel.conf "
                            "and would not start again; choose one without")
    return problems


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"redis_topology_problems": redis_topology_problems}
