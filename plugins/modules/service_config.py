#!/usr/bin/python
"""Bring a running service in line with its config file: live settings now, and say what needs a restart."""

from __future__ import annotations

DOCUMENTATION = r"""
module: service_config
short_description: Compare a running service with its config file, apply live settings, report what needs a restart
description:
  - Reads what the running service loaded (the copy its unit drop-in makes at every start, see
    O(running_copy)) and the values it reports now (Redis C(CONFIG GET), MariaDB C(SHOW GLOBAL VARIABLES),
    Prometheus's reload metrics), and compares them with O(desired).
  - Settings in O(live) that differ from the running value are applied live (C(CONFIG SET), C(SET GLOBAL)),
    which also repairs a hand-made runtime change. Any other difference is returned in RV(restart), and
    the role restarts the service. A setting the service refuses live is moved to RV(restart).
  - Unit drop-ins in O(restart_files) written after the process started are owed a restart too.
  - The decision never depends on whether this run wrote the file, so a run interrupted between the write
    and the restart leaves the next run the same difference to act on.
  - Check mode reports the same without applying anything.
version_added: 1.1.0
author: queuefleet (@queuefleet)
options:
  kind:
    description: The service's config dialect.
    type: str
    required: true
    choices: [redis, mysql, supervisord, prometheus]
  service:
    description: The systemd unit.
    type: str
    required: true
  config:
    description: The config file the service reads.
    type: path
    required: true
  desired:
    description: The config as it should be (the role's rendered template); default the file as it is.
    type: str
  running_copy:
    description: Where the unit drop-in copies O(config) at each start; default C(/run/queuefleet/running/<service>.conf).
    type: path
  live:
    description: Settings the service takes live.
    type: list
    elements: str
    default: []
  deferred:
    description: Settings whose change waits for the service's next start on purpose (reported, not owed).
    type: list
    elements: str
    default: []
  ignore:
    description: Settings never compared.
    type: list
    elements: str
    default: []
  restart_files:
    description: Files the service reads only at start (unit drop-ins); one written after the process started needs a restart.
    type: list
    elements: path
    default: []
  reload_files:
    description: Further files a reload picks up (Prometheus's rules).
    type: list
    elements: path
    default: []
  port:
    description: Redis port on 127.0.0.1.
    type: int
    default: 6379
  passwords:
    description: Redis passwords to try, in order (during a rotation the new one may not be live yet).
    type: list
    elements: str
    default: []
  socket:
    description: MariaDB unix socket (root by unix_socket).
    type: path
    default: /run/mysqld/mysqld.sock
  url:
    description: Prometheus base URL.
    type: str
    default: http://127.0.0.1:9090
"""

EXAMPLES = r"""
- name: Apply redis.conf to the running redis-server, live where it can
  queuefleet.fleet.service_config:
    kind: redis
    service: redis-server
    config: /etc/redis/redis.conf
    desired: "{{ lookup('ansible.builtin.template', 'redis.conf.j2') }}"
    live: [maxmemory, maxmemory-policy]
    passwords: ["{{ redis_requirepass }}"]
  register: redis_config
  no_log: true

- name: Restart for what cannot go live
  ansible.builtin.debug:
    msg: "restart for {{ redis_config.restart | join(', ') }}"
  changed_when: true
  notify: Restart redis
  when: redis_config.restart | length > 0
"""

RETURN = r"""
restart:
  description: Settings (or files) that need a restart of the service.
  type: list
  elements: str
  returned: always
reload:
  description: Files a reload would pick up (prometheus).
  type: list
  elements: str
  returned: always
live:
  description: Settings applied live (or that would be, in check mode), setting to value.
  type: dict
  returned: always
refused:
  description: Live settings the service refused (they are in RV(restart) too).
  type: list
  elements: str
  returned: always
was:
  description: The running value of each setting in RV(live) before it was set.
  type: dict
  returned: always
deferred:
  description: Changed settings that wait for the service's next start on purpose.
  type: list
  elements: str
  returned: always
note:
  description: Why nothing could be compared (the service is not running, say), else empty.
  type: str
  returned: always
"""

import os
import re
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.queuefleet.fleet.plugins.module_utils import host_probe, service_config

MYSQL_NAME = re.compile(r"^[a-z0-9_]+$")
MYSQL_NUMBER = re.compile(r"^-?[0-9]+$")


def apply_live(module: AnsibleModule, kind: str, live: dict) -> list[str]:
    """Set each setting live; returns the ones the service refused."""
    refused = []
    params = module.params
    password = _working_password(params) if kind == "redis" else ""
    for key, value in sorted(live.items()):
        if kind == "redis":
            if key == "user":  # the default user's passwords, replaced in one command
                words = value.split()
                command = ["ACL", "SETUSER", words[0], "resetpass", *words[1:]]
            elif key == "replicaof":  # follow another master, or become one
                command = ["REPLICAOF", *(value.split() or ["NO", "ONE"])]
            else:
                command = ["CONFIG", "SET", key, value]
            rc, out, err = host_probe.run(
                ["redis-cli", "--no-auth-warning", "-h", "127.0.0.1", "-p", str(params["port"]), *command],
                env={"REDISCLI_AUTH": password}, timeout=15)
            ok = rc == 0 and out.strip() == "OK"
        elif kind == "mysql" and MYSQL_NAME.match(key):
            literal = value if MYSQL_NUMBER.match(value) else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
            rc, out, err = host_probe.run(["mysql", "--protocol=socket", "-S", params["socket"], "-NBe",
                                           f"SET GLOBAL {key} = {literal}"], timeout=15)
            ok = rc == 0
        else:
            ok = False
        if not ok:
            refused.append(key)
    return refused


def _working_password(params: dict) -> str:
    for password in params["passwords"] or [""]:
        env = {"REDISCLI_AUTH": password} if password else {}
        rc, out, unused_err = host_probe.run(
            ["redis-cli", "--no-auth-warning", "-h", "127.0.0.1", "-p", str(params["port"]), "PING"], env=env, timeout=10)
        if rc == 0 and out.strip() == "PONG":
            return password
    return (params["passwords"] or [""])[0]


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "kind": {"type": "str", "required": True, "choices": list(service_config.KINDS)},
            "service": {"type": "str", "required": True},
            "config": {"type": "path", "required": True},
            "desired": {"type": "str", "no_log": True},
            "running_copy": {"type": "path"},
            "live": {"type": "list", "elements": "str", "default": []},
            "deferred": {"type": "list", "elements": "str", "default": []},
            "ignore": {"type": "list", "elements": "str", "default": []},
            "restart_files": {"type": "list", "elements": "path", "default": []},
            "reload_files": {"type": "list", "elements": "path", "default": []},
            "port": {"type": "int", "default": 6379},
            "passwords": {"type": "list", "elements": "str", "default": [], "no_log": True},
            "socket": {"type": "path", "default": "/run/mysqld/mysqld.sock"},
            "url": {"type": "str", "default": "http://127.0.0.1:9090"},
        },
        supports_check_mode=True,
    )
    params = module.params
    spec = dict(params)
    spec["running_copy"] = params["running_copy"] or service_config.running_copy_path(params["service"])
    unit = host_probe.units([params["service"]])[params["service"]]
    found = host_probe.owed(spec, unit, params["desired"])
    result = {"changed": False, "restart": list(found["restart"]), "reload": list(found["reload"]), "was": {},
              "live": dict(found["live"]), "refused": [], "deferred": list(found["deferred"]), "note": found["note"]}
    if found["note"] and unit.get("ActiveState") != "active":
        module.exit_json(msg=found["note"], **result)

    # The process started after the file was last written but its unit has no running copy yet
    # (the drop-in came after the start): the file is what runs, so the copy can be made now.
    copy = spec["running_copy"]
    if (params["kind"] in ("redis", "mysql", "supervisord") and not os.path.exists(copy) and not module.check_mode
            and not found["restart"] and os.path.exists(params["config"])):
        os.makedirs(os.path.dirname(copy), mode=0o700, exist_ok=True)
        shutil.copyfile(params["config"], copy)
        os.chmod(copy, 0o600)

    if result["live"] and not module.check_mode:
        result["refused"] = apply_live(module, params["kind"], result["live"])
        result["restart"] += [key for key in result["refused"] if key not in result["restart"]]
    result["changed"] = bool(result["live"] or result["restart"] or result["reload"])
    result["was"] = dict(found.get("was") or {})
    parts = []
    if result["live"]:
        parts.append(("would set live: " if module.check_mode else "set live: ") + ", ".join(
            f"{key} {_shown(key, value)} (running: {_shown(key, result['was'].get(key, '?'))})"
            for key, value in sorted(result["live"].items())))
    if result["refused"]:
        parts.append("refused live: " + ", ".join(result["refused"]))
    if result["restart"]:
        parts.append("needs a restart for: " + ", ".join(result["restart"]))
    if result["reload"]:
        parts.append("needs a reload for: " + ", ".join(result["reload"]))
    if result["deferred"]:
        parts.append("waits for the next start: " + ", ".join(result["deferred"]))
    message = f"{params['service']}: " + ("; ".join(parts) or "runs its config")
    if result["changed"]:
        module.warn(message)  # shown without -v: what the run repairs, and why
    module.exit_json(msg=message, **result)


def _shown(key: str, value: str) -> str:
    """A value as the report shows it; passwords and their digests are left out."""
    if key in ("user", "masterauth", "masteruser"):
        return "(passwords)"
    if key == "replicaof":
        return value or "(none: a master)"
    return value


if __name__ == "__main__":
    main()
