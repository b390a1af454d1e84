"""Which Redis server is the master, from what the sentinels and the servers themselves report."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ansible.errors import AnsibleFilterError


def redis_master(reports: list[dict[str, Any]], initial: str, addresses: dict[str, str] | None = None) -> dict[str, str]:
    """{"address": the master's address, "why": how it was chosen}.

    ``reports`` holds what each host's queuefleet.fleet.redis_topology read, with the host's private
    ``address`` (or its ``item``, the host, looked up in ``addresses``: a registered loop's results). In order:

    1. the master a majority of the answering sentinels name (they follow failovers: a deploy
       after one must keep the promoted replica as master);
    2. else the one server that reports itself master with replicas (sentinels not deployed yet);
    3. else the one server that runs as master at all: a promoted replica whose old master is down
       while most sentinels are, or the one server of a fleet that grows (never the empty new host:
       a replica takes its master's data set, so choosing it would wipe the queue);
    4. else ``initial``, the first redis host (a new fleet).
    """
    if not isinstance(reports, list) or not isinstance(initial, str) or not initial:
        raise AnsibleFilterError("redis_master: expected a list of reports and the initial master's address")
    reports = [{**r, "address": r.get("address") or (addresses or {}).get(r.get("item"), "")} for r in reports]
    named = [str(r.get("sentinel_master") or "").split(" ", maxsplit=1)[0] for r in reports if r.get("sentinel_master")]
    if named:
        address, votes = Counter(named).most_common(1)[0]
        if votes * 2 > len(named):
            return {"address": address, "why": f"{votes} of {len(named)} sentinels name it"}
    masters = [r for r in reports if r.get("role") == "master" and int(r.get("connected_replicas") or 0) > 0]
    if len(masters) == 1 and masters[0].get("address"):
        return {"address": str(masters[0]["address"]), "why": "it is the one server with replicas"}
    running = [r for r in reports if r.get("role") == "master" and r.get("address")]
    if len(running) == 1:
        return {"address": str(running[0]["address"]), "why": "it is the one server that runs as master"}
    return {"address": initial, "why": "the first redis host (no sentinel names a master, no single server runs as master)"}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"redis_master": redis_master}
