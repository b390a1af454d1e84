"""The queuefleet report of one host as text, from queuefleet.fleet.host_report's result
(playbooks/report.yml). Documented in host_report_text.yml beside this file."""

from __future__ import annotations

import json
from typing import Any, Optional

from ansible.errors import AnsibleFilterError

MIB = 1048576


def _state(services: dict, unit: str) -> str:
    service = services.get(unit) or {}
    if not service.get("installed"):
        return "missing, not installed"
    return f"{service.get('state') or '?'}, {service.get('enabled') or '?'}"


def _names(values: Any) -> str:
    return ",".join(values) if values else "none"


def host_report_text(report: dict, host: str = "", distribution: str = "", distribution_version: str = "",
                     environments: Optional[list] = None, redis_password_set: bool = False,
                     mysql_bind_address: str = "127.0.0.1", redis_service: str = "redis-server",
                     mysql_service: str = "mariadb", supervisor_service: str = "supervisor") -> str:
    """The report's lines: the host, its sockets, then Redis, MariaDB and supervisor where they were read."""
    if not isinstance(report, dict) or not isinstance(report.get("services"), dict) or not isinstance(report.get("listening"), list):
        raise AnsibleFilterError("host_report_text: expected the result of queuefleet.fleet.host_report "
                                 f"(with services and listening), got {json.dumps(report, default=str)[:200]}")
    services = report["services"]
    envs = ",".join(environments or [])
    lines = [f"queuefleet report: {host} ({distribution} {distribution_version}, env {envs})",
             f"  listening TCP: {' '.join(report['listening'])}"]
    redis = report.get("redis")
    if redis:
        maxmemory = int(redis.get("maxmemory") or 0)
        memory = f"{maxmemory // MIB}MiB" if maxmemory > 0 else "unlimited"
        password = "set" if redis_password_set else "none (loopback only)"
        lines += [f"  redis {redis.get('version', '')}: {_state(services, redis_service)}",
                  f"      appendonly={redis.get('appendonly', '')} appendfsync={redis.get('appendfsync', '')} "
                  f"maxmemory={memory} policy={redis.get('maxmemory_policy', '')}",
                  f"      password: {password}; unauthenticated PING answers: {redis.get('unauthenticated_ping', '')}"]
        if redis.get("role") == "slave":
            lines.append(f"      replica of {redis.get('master', '')} (link {redis.get('master_link', '')})")
        elif int(redis.get("connected_replicas") or 0) > 0:
            lines.append(f"      master with {redis['connected_replicas']} replica(s) connected")
    mysql = report.get("mysql")
    if mysql:
        lines += [f"  mariadb {mysql.get('version', '')}: {_state(services, mysql_service)}",
                  f"      bind={mysql_bind_address} databases={_names(mysql.get('databases'))} "
                  f"app users={_names(mysql.get('app_users'))} anonymous users={mysql.get('anonymous_users', 0)}",
                  "      root: unix_socket (no password)"]
    supervisor = report.get("supervisor")
    if supervisor is not None:
        programs = supervisor.get("programs") or []
        lines += [f"  supervisor: {_state(services, supervisor_service)}",
                  f"      programs: {len(programs)}{':' if programs else ''}"]
        lines += [f"        {' '.join(filter(None, (p.get('name'), p.get('state'), p.get('info'))))}" for p in programs]
        if supervisor.get("error"):
            lines.append(f"      supervisorctl: {supervisor['error']}")
    return "\n".join(lines)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"host_report_text": host_report_text}
