#!/usr/bin/python
"""What a host runs, read in one pass for the deploy's report (playbooks/report.yml)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: host_report
short_description: Read what a host runs for the queuefleet report (services, sockets, Redis, MariaDB, supervisor)
description:
  - Returns, for every host, the state of the services of the collection's roles and the TCP sockets it listens on,
    whatever its groups are.
  - Where asked (O(redis), O(mysql), O(supervisor)) and only when the service runs, also the Redis version and its
    persistence and memory settings, the MariaDB version, databases and users, and the programs supervisord runs.
  - Read-only; runs the same in check mode (a host where nothing is installed yet answers with missing services).
  - Render the result as text with P(queuefleet.fleet.host_report_text#filter).
version_added: 1.1.0
author: queuefleet (@queuefleet)
options:
  redis:
    description: Ask Redis (on 127.0.0.1) when O(redis_service) runs.
    type: bool
    default: false
  redis_service:
    description: systemd unit of Redis.
    type: str
    default: redis-server
  redis_port:
    description: Redis port on 127.0.0.1.
    type: int
    default: 6379
  redis_password:
    description: Password Redis is asked with (never returned; the unauthenticated PING is made without it).
    type: str
    default: ""
  mysql:
    description: Ask MariaDB (as root, by its unix socket) when O(mysql_service) runs.
    type: bool
    default: false
  mysql_service:
    description: systemd unit of MariaDB/MySQL.
    type: str
    default: mariadb
  supervisor:
    description: Ask supervisord for its programs when O(supervisor_service) runs.
    type: bool
    default: false
  supervisor_service:
    description: systemd unit of supervisord.
    type: str
    default: supervisor
  supervisor_config:
    description: supervisord.conf, passed to C(supervisorctl -c).
    type: path
    default: /etc/supervisor/supervisord.conf
"""

EXAMPLES = r"""
- name: Read what the host runs
  queuefleet.fleet.host_report:
    redis: "{{ inventory_hostname in groups['redis'] }}"
    redis_password: "{{ redis_requirepass }}"
    mysql: "{{ inventory_hostname in groups['mysql'] }}"
    supervisor: "{{ inventory_hostname in groups['workers'] }}"
  register: report

- name: Show it
  ansible.builtin.debug:
    msg: "{{ (report | queuefleet.fleet.host_report_text(host=inventory_hostname)).splitlines() }}"
"""

RETURN = r"""
services:
  description: Per unit (Redis, MariaDB, supervisor, in that order), whether it is installed, its state and whether it is enabled.
  type: dict
  returned: always
  sample: {"redis-server": {"installed": true, "state": "running", "enabled": "enabled"},
           "mariadb": {"installed": false, "state": "", "enabled": ""}}
listening:
  description: The TCP addresses the host listens on, sorted.
  type: list
  elements: str
  returned: always
  sample: ["127.0.0.1:3306", "127.0.0.1:6379"]
redis:
  description: What Redis says, or V(null) when not asked or not running.
  type: dict
  returned: always
  contains:
    version:
      description: redis_version of C(INFO server).
      type: str
      sample: 8.0.2
    appendonly:
      description: C(CONFIG GET appendonly).
      type: str
    appendfsync:
      description: C(CONFIG GET appendfsync).
      type: str
    maxmemory:
      description: C(CONFIG GET maxmemory), in bytes (0 is no limit).
      type: int
    maxmemory_policy:
      description: C(CONFIG GET maxmemory-policy).
      type: str
    unauthenticated_ping:
      description: The first line Redis answers a PING without password with.
      type: str
      sample: NOAUTH Authentication required.
    role:
      description: C(master) or C(slave) (a replica), from C(INFO replication).
      type: str
    master:
      description: For a replica, its master as C(HOST:PORT); empty for a master.
      type: str
    master_link:
      description: For a replica, C(up) or C(down).
      type: str
    connected_replicas:
      description: For a master, how many replicas are connected.
      type: int
mysql:
  description: What MariaDB says, or V(null) when not asked or not running.
  type: dict
  returned: always
  contains:
    version:
      description: C(@@version).
      type: str
    databases:
      description: Databases other than the system ones.
      type: list
      elements: str
    app_users:
      description: Accounts (user@host) other than root, mysql and mariadb.sys.
      type: list
      elements: str
    anonymous_users:
      description: Accounts with an empty user name.
      type: int
supervisor:
  description: The programs supervisord runs, or V(null) when not asked or not running.
  type: dict
  returned: always
  contains:
    programs:
      description: Each program's name, state and supervisorctl's info, in supervisorctl's order.
      type: list
      elements: dict
      sample: [{"name": "queuefleet-default-d3668b_00", "state": "RUNNING", "info": "pid 3230, uptime 0:00:17"}]
    error:
      description: Why supervisord did not list its programs, else empty.
      type: str
"""

import os
import subprocess

from ansible.module_utils.basic import AnsibleModule

MYSQL_QUERY = """SELECT @@version;
SELECT GROUP_CONCAT(schema_name ORDER BY schema_name) FROM information_schema.schemata
  WHERE schema_name NOT IN ('information_schema','mysql','performance_schema','sys');
SELECT GROUP_CONCAT(CONCAT(user,'@',host) ORDER BY user) FROM mysql.user WHERE user NOT IN ('root','mysql','mariadb.sys');
SELECT COUNT(*) FROM mysql.user WHERE user='';"""


def run(argv, env=None, timeout=20):
    """(rc, stdout, stderr); a missing program is rc 127. Environment: this process's without REDISCLI_AUTH, plus env."""
    base = {key: value for key, value in os.environ.items() if key != "REDISCLI_AUTH"}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env={**base, **(env or {})})
    except FileNotFoundError as exc:
        return 127, "", str(exc)
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]} timed out after {timeout}s"
    return done.returncode, done.stdout, done.stderr


def parse_units(names, text):
    """{unit: {installed, state, enabled}} from `systemctl show -p LoadState,SubState,UnitFileState` of names, in order."""
    blocks = text.strip().split("\n\n") if text.strip() else []
    services = {}
    for index, name in enumerate(names):
        values = {}
        if index < len(blocks):
            values = dict(line.split("=", 1) for line in blocks[index].splitlines() if "=" in line)
        installed = values.get("LoadState", "not-found") not in ("not-found", "")
        services[name] = {"installed": installed, "state": values.get("SubState", "") if installed else "",
                          "enabled": values.get("UnitFileState", "") if installed else ""}
    return services


def parse_listening(text):
    """The local addresses of `ss -Hltn`, unique and sorted."""
    return sorted({fields[3] for fields in (line.split() for line in text.splitlines()) if len(fields) >= 4})


def _first_line(text):
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def read_redis(port, password):
    cli = ["redis-cli", "--no-auth-warning", "-h", "127.0.0.1", "-p", str(port)]
    auth = {"REDISCLI_AUTH": password} if password else {}
    dummy, info, dummy = run(cli + ["info", "server"], env=auth)
    version = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("redis_version:")), "")
    settings = {}
    for key in ("appendonly", "appendfsync", "maxmemory", "maxmemory-policy"):
        dummy, out, dummy = run(cli + ["--raw", "config", "get", key], env=auth)
        lines = out.splitlines()
        settings[key] = lines[1].strip() if len(lines) > 1 else ""
    dummy, replication, dummy = run(cli + ["info", "replication"], env=auth)
    fields = dict(line.strip().split(":", 1) for line in replication.splitlines() if ":" in line)
    rc, out, err = run(cli + ["ping"])  # without the password
    maxmemory = settings["maxmemory"]
    return {"version": version, "appendonly": settings["appendonly"], "appendfsync": settings["appendfsync"],
            "maxmemory": int(maxmemory) if maxmemory.isdigit() else 0, "maxmemory_policy": settings["maxmemory-policy"],
            "unauthenticated_ping": _first_line(out or err), "role": fields.get("role", ""),
            "master": f"{fields.get('master_host', '')}:{fields.get('master_port', '')}" if fields.get("role") == "slave" else "",
            "master_link": fields.get("master_link_status", ""),
            "connected_replicas": int(fields.get("connected_slaves", "0") or 0)}


def parse_mysql(text):
    lines = text.splitlines() + [""] * 4

    def names(value):
        return [] if value in ("", "NULL") else value.split(",")

    count = lines[3].strip()
    return {"version": lines[0].strip(), "databases": names(lines[1].strip()), "app_users": names(lines[2].strip()),
            "anonymous_users": int(count) if count.isdigit() else 0}


def parse_supervisor(text):
    programs = []
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[1].isupper():
            programs.append({"name": parts[0], "state": parts[1], "info": " ".join(parts[2].split()) if len(parts) > 2 else ""})
    return programs


def main():
    module = AnsibleModule(
        argument_spec={
            "redis": {"type": "bool", "default": False},
            "redis_service": {"type": "str", "default": "redis-server"},
            "redis_port": {"type": "int", "default": 6379},
            "redis_password": {"type": "str", "default": "", "no_log": True},
            "mysql": {"type": "bool", "default": False},
            "mysql_service": {"type": "str", "default": "mariadb"},
            "supervisor": {"type": "bool", "default": False},
            "supervisor_service": {"type": "str", "default": "supervisor"},
            "supervisor_config": {"type": "path", "default": "/etc/supervisor/supervisord.conf"},
        },
        supports_check_mode=True,
    )
    p = module.params
    units = list(dict.fromkeys([p["redis_service"], p["mysql_service"], p["supervisor_service"]]))
    rc, out, err = run(["systemctl", "show", "-p", "LoadState,SubState,UnitFileState", "--"] + [f"{unit}.service" for unit in units])
    services = parse_units(units, out if rc == 0 else "")
    dummy, sockets, dummy = run(["ss", "-Hltn"])
    result = {"changed": False, "services": services, "listening": parse_listening(sockets),
              "redis": None, "mysql": None, "supervisor": None}

    def running(unit):
        return services.get(unit, {}).get("state") == "running"

    if p["redis"] and running(p["redis_service"]):
        result["redis"] = read_redis(p["redis_port"], p["redis_password"])
    if p["mysql"] and running(p["mysql_service"]):
        rc, out, err = run(["mysql", "-NBe", MYSQL_QUERY])
        result["mysql"] = parse_mysql(out) if rc == 0 else None
        if rc != 0:
            module.warn(f"MariaDB did not answer the report's query: {_first_line(err or out)}")
    if p["supervisor"] and running(p["supervisor_service"]):
        rc, out, err = run(["supervisorctl", "-c", p["supervisor_config"], "status"])
        # rc 3: some program is not running; the list is still complete.
        result["supervisor"] = {"programs": parse_supervisor(out), "error": "" if rc in (0, 3) else _first_line(err or out)}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
