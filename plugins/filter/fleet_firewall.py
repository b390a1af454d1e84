"""Which of a host's ports the fleet's firewall guards, and from which addresses it lets them be reached."""

from __future__ import annotations

import ipaddress
from typing import Any

from ansible.errors import AnsibleFilterError


def _address(host: str, hostvars: dict[str, Any], variable: str) -> str:
    value = (hostvars.get(host) or {}).get(variable)
    if not value:
        raise AnsibleFilterError(f"fleet_firewall: host {host} has no {variable} (its private address), "
                                 "which the firewall needs to let it in")
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError as exc:
        raise AnsibleFilterError(f"fleet_firewall: {host}'s {variable} {value!r} is not an IP address") from exc


def default_services(own: dict[str, Any]) -> list[dict[str, Any]]:
    """The fleet's guarded services, with the ports this host's variables give them."""
    exporter = str(own.get("queue_worker_exporter_listen") or "127.0.0.1:9818").rsplit(":", 1)[-1]
    return [
        {"name": "redis", "port": own.get("redis_port") or 6379, "group": "redis",
         "clients": ["workers", "producers", "monitoring", "redis", "sentinels"]},
        {"name": "sentinel", "port": own.get("sentinel_port") or 26379, "group": "sentinels",
         "clients": ["workers", "producers", "monitoring", "redis", "sentinels"]},
        {"name": "mysql", "port": own.get("mysql_port") or 3306, "group": "mysql", "clients": ["workers", "producers"]},
        {"name": "exporter", "port": exporter, "group": "workers", "clients": ["monitoring"]},
    ]


def fleet_firewall(host: str, hostvars: dict[str, Any], groups: dict[str, list[str]],
                   services: list[dict[str, Any]] | None = None,
                   address_variable: str = "queuefleet_private_address") -> list[dict[str, Any]]:
    """The rules of one host: for every service whose group it is in, the service's port reachable
    only from the private addresses of the hosts in the service's client groups (and from itself).

    ``services`` is a list of {name, port, group, clients: [groups]} (None: Redis from the workers,
    producers, monitoring and redis hosts, MariaDB from the workers and producers, the exporter from
    the monitoring hosts); a service whose port is 0 is left out. Returns [{name, port, from:
    [addresses]}] in service order."""
    if services is None:
        services = default_services(hostvars.get(host) or {})
    if not isinstance(services, list):
        raise AnsibleFilterError("fleet_firewall: services must be a list")
    rules = []
    for service in services:
        if not isinstance(service, dict) or not {"name", "port", "group", "clients"} <= set(service):
            raise AnsibleFilterError(f"fleet_firewall: a service needs name, port, group and clients, got {service!r}")
        if host not in groups.get(service["group"], []) or not service["port"]:
            continue
        try:
            port = int(service["port"])
        except (TypeError, ValueError) as exc:
            raise AnsibleFilterError(f"fleet_firewall: service {service['name']}: port {service['port']!r} is not a number") from exc
        if not 1 <= port <= 65535:
            raise AnsibleFilterError(f"fleet_firewall: service {service['name']}: port {port} is out of range")
        clients = [client for group in service["clients"] for client in groups.get(group, [])] + [host]
        addresses = sorted({_address(client, hostvars, address_variable) for client in clients},
                           key=lambda a: (":" in a, a))
        rules.append({"name": service["name"], "port": port, "from": addresses})
    return rules


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"fleet_firewall": fleet_firewall}
