"""The workers' Redis URL for an environment: the master itself, or its sentinels when it has them."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ansible.errors import AnsibleFilterError


def redis_url(redis_hosts: list[str], sentinel_hosts: list[str], hostvars: dict[str, Any], password: str = "",
              db: int = 0, sentinel_password: str | None = None) -> str:
    """``redis://:PASSWORD@MASTER:PORT/DB`` for a fleet without sentinels (the master: the first redis host);
    ``redis+sentinel://:PASSWORD@S1:26379,S2:26379,S3:26379/MASTER-NAME/DB?sentinel_password=...`` with
    sentinels (the sentinels' own password: ``sentinel_password``, by default the Redis one, as
    playbooks/sentinel.yml sets it). Every part is fully percent-encoded, so any password works.
    Hosts are named by their private address."""
    if not isinstance(redis_hosts, list) or not redis_hosts:
        raise AnsibleFilterError("redis_url: expected the environment's redis hosts (at least one)")

    def address(host: str) -> str:
        value = (hostvars.get(host) or {}).get("queuefleet_private_address")
        if not value:
            raise AnsibleFilterError(f"redis_url: host {host} has no queuefleet_private_address")
        value = str(value)
        return f"[{value}]" if ":" in value else value

    auth = f":{quote(str(password), safe='')}@" if password else ""
    if not sentinel_hosts:
        master = redis_hosts[0]
        return f"redis://{auth}{address(master)}:{(hostvars.get(master) or {}).get('redis_port') or 6379}/{int(db)}"
    nodes = ",".join(f"{address(h)}:{(hostvars.get(h) or {}).get('sentinel_port') or 26379}" for h in sentinel_hosts)
    name = (hostvars.get(sentinel_hosts[0]) or {}).get("sentinel_master_name") or "queuefleet"
    sentinel_password = password if sentinel_password is None else sentinel_password
    query = "?sentinel_password=" + quote(str(sentinel_password), safe="") if sentinel_password else ""
    return f"redis+sentinel://{auth}{nodes}/{quote(str(name), safe='')}/{int(db)}{query}"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"redis_url": redis_url}
