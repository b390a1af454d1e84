#!/usr/bin/python
"""Make the local Redis Sentinel monitor the queue's master with the settings asked for, live."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sentinel_monitor
short_description: Make the local Redis Sentinel monitor a master with the given settings, live
description:
  - Asks the sentinel on this host what it monitors (C(SENTINEL MASTER)). A master it does not monitor yet is added
    (C(SENTINEL MONITOR)) at O(master_host); one it monitors is never moved, since the sentinel follows failovers itself.
  - Quorum, C(down-after-milliseconds), C(failover-timeout), C(parallel-syncs) and C(auth-pass) that differ from what the
    running sentinel reports (C(auth-pass) from its config file, which it rewrites itself) are set live (C(SENTINEL SET)).
  - The passwords clients give the sentinel (its default user) are compared by their SHA-256 digests with O(passwords)
    and replaced live (C(ACL SETUSER)), then persisted (C(SENTINEL FLUSHCONFIG)), so during a rotation it accepts the new
    and the previous password at once.
  - Reports, without changing it, what only a restart applies, the sentinel not listening on every address of O(bind)
    at O(port) (RV(restart)).
  - Check mode reports what would be set.
version_added: 1.1.0
author: queuefleet (@queuefleet)
options:
  name:
    description: The master's name.
    type: str
    required: true
  master_host:
    description: Where the master is, for a sentinel that does not monitor it yet.
    type: str
    required: true
  master_port:
    description: The master's port.
    type: int
    default: 6379
  quorum:
    description: Sentinels that must agree the master is down.
    type: int
    required: true
  down_after_ms:
    description: Milliseconds of silence before the master counts as down.
    type: int
    required: true
  failover_timeout_ms:
    description: Milliseconds a failover may take.
    type: int
    required: true
  parallel_syncs:
    description: Replicas resynchronised at once after a failover.
    type: int
    default: 1
  auth_pass:
    description: The Redis password the sentinel uses with the master and replicas.
    type: str
    default: ""
  port:
    description: The sentinel's port on this host.
    type: int
    default: 26379
  bind:
    description: Addresses the sentinel must listen on (a leading "-" makes one optional).
    type: list
    elements: str
    default: [127.0.0.1]
  passwords:
    description: The passwords clients give the sentinel, the current one first (two during a rotation); none for no password.
    type: list
    elements: str
    default: []
  sentinel_pass:
    description:
      - The password this sentinel gives the other sentinels (C(sentinel-pass)), set live (C(SENTINEL CONFIG SET)) when the
        running sentinel has another. Without it sentinels that take a password cannot reach each other, so they can
        neither agree that a master is down nor authorize a failover.
      - Set after O(passwords), so during a rotation the new password is accepted before it is given.
    type: str
    default: ""
  config:
    description: The sentinel's config file.
    type: path
    default: /etc/redis/sentinel.conf
"""

EXAMPLES = r"""
- name: Monitor the queue's master
  queuefleet.fleet.sentinel_monitor:
    name: queuefleet
    master_host: 10.0.0.11
    quorum: 2
    down_after_ms: 5000
    failover_timeout_ms: 60000
    auth_pass: "{{ redis_requirepass }}"
    passwords: ["{{ sentinel_requirepass }}"]
    sentinel_pass: "{{ sentinel_requirepass }}"
  no_log: true
"""

RETURN = r"""
master:
  description: The master the sentinel monitors now, as C(HOST PORT).
  type: str
  returned: always
set:
  description: The settings set live (auth-pass shown as C((password))), setting to value.
  type: dict
  returned: always
monitored:
  description: The sentinel started monitoring the master in this run.
  type: bool
  returned: always
restart:
  description: Why only a restart of the sentinel applies its config file (empty when nothing is owed).
  type: list
  elements: str
  returned: always
"""

import hashlib
import re

from ansible.module_utils.basic import AnsibleModule

SETTINGS = (("quorum", "quorum"), ("down-after-milliseconds", "down_after_ms"),
            ("failover-timeout", "failover_timeout_ms"), ("parallel-syncs", "parallel_syncs"))


class Sentinel:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        params = module.params
        self.base = ["redis-cli", "--no-auth-warning", "--raw", "-h", "127.0.0.1", "-p", str(params["port"])]
        self.env: dict[str, str] = {}
        for password in [p for p in params["passwords"] if p] + [""]:  # the first one the sentinel takes
            self.env = {"REDISCLI_AUTH": password} if password else {}
            if self.call("PING")[1] == "PONG":
                break

    def call(self, *args: str) -> tuple[int, str]:
        rc, out, err = self.module.run_command([*self.base, *args], environ_update=self.env)
        return rc, (out or err).strip()

    def master(self, name: str) -> dict[str, str] | None:
        rc, out = self.call("SENTINEL", "MASTER", name)
        if rc != 0 or out.startswith(("ERR", "NOAUTH", "WRONGPASS", "Could not connect")):
            return None
        lines = out.splitlines()
        return {lines[i]: lines[i + 1] for i in range(0, len(lines) - 1, 2)}


def configured_auth_pass(path: str, name: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                words = line.split(None, 3)
                if words[:3] == ["sentinel", "auth-pass", name] and len(words) == 4:
                    return words[3].rstrip("\n")
    except OSError:
        pass
    return None


def listening(module: AnsibleModule, port: int) -> set[str]:
    rc, out, err = module.run_command(["ss", "-Hltn", f"sport = :{port}"])
    found = set()
    for line in out.splitlines() if rc == 0 else []:
        local = line.split()[3] if len(line.split()) > 3 else ""
        found.add(re.sub(r"^\[?(.*?)\]?:\d+$", r"\1", local))
    return found


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "master_host": {"type": "str", "required": True},
            "master_port": {"type": "int", "default": 6379},
            "quorum": {"type": "int", "required": True},
            "down_after_ms": {"type": "int", "required": True},
            "failover_timeout_ms": {"type": "int", "required": True},
            "parallel_syncs": {"type": "int", "default": 1},
            "auth_pass": {"type": "str", "default": "", "no_log": True},
            "port": {"type": "int", "default": 26379},
            "bind": {"type": "list", "elements": "str", "default": ["127.0.0.1"]},
            "passwords": {"type": "list", "elements": "str", "default": [], "no_log": True},
            "sentinel_pass": {"type": "str", "default": "", "no_log": True},
            "config": {"type": "path", "default": "/etc/redis/sentinel.conf"},
        },
        supports_check_mode=True,
    )
    params = module.params
    sentinel = Sentinel(module)
    result = {"changed": False, "master": "", "set": {}, "monitored": False, "restart": []}

    pong = sentinel.call("PING")[1]
    if pong != "PONG":
        module.fail_json(msg=f"the sentinel on port {params['port']} takes none of the passwords given: {pong[:120]}", **result)
    wanted = {address.lstrip("-") for address in params["bind"] if not address.startswith("-")}
    found_listeners = listening(module, params["port"])
    wildcard = bool(found_listeners & {"*", "0.0.0.0", "::"})
    missing = [] if wildcard else sorted(wanted - found_listeners)
    if missing:
        result["restart"].append(f"not listening on {', '.join(missing)} port {params['port']}")

    found = sentinel.master(params["name"])
    if found is None:
        result["monitored"] = result["changed"] = True
        if not module.check_mode:
            rc, out = sentinel.call("SENTINEL", "MONITOR", params["name"], params["master_host"], str(params["master_port"]),
                                    str(params["quorum"]))
            if out != "OK":
                module.fail_json(msg=f"SENTINEL MONITOR {params['name']} failed: {out}", **result)
            found = sentinel.master(params["name"]) or {}
        else:
            found = {}
    result["master"] = f"{found.get('ip', params['master_host'])} {found.get('port', params['master_port'])}"

    changes = {key: str(params[option]) for key, option in SETTINGS if found.get(key) != str(params[option])}
    if params["auth_pass"] and configured_auth_pass(params["config"], params["name"]) != params["auth_pass"]:
        changes["auth-pass"] = params["auth_pass"]
    for key, value in sorted(changes.items()):
        result["set"][key] = "(password)" if key == "auth-pass" else value
        if not module.check_mode:
            rc, out = sentinel.call("SENTINEL", "SET", params["name"], key, value)
            if out != "OK":
                module.fail_json(msg=f"SENTINEL SET {params['name']} {key} failed: {out}", **result)
    wanted_digests = sorted({hashlib.sha256(p.encode()).hexdigest() for p in params["passwords"] if p})
    acl = sentinel.call("ACL", "LIST")[1]
    default_user = next((line.split() for line in acl.splitlines() if line.startswith("user default ")), [])
    if sorted(word[1:] for word in default_user if word.startswith("#")) != wanted_digests or \
            (not wanted_digests and "nopass" not in default_user):
        result["set"]["passwords"] = "(passwords)"
        if not module.check_mode:
            access = [f"#{digest}" for digest in wanted_digests] or ["nopass"]
            out = sentinel.call("ACL", "SETUSER", "default", "on", "resetpass", *access, "~*", "&*", "+@all")[1]
            if out != "OK":
                module.fail_json(msg=f"ACL SETUSER default failed: {out}", **result)
            sentinel.env = {"REDISCLI_AUTH": next(p for p in params["passwords"] if p)} if wanted_digests else {}
            out = sentinel.call("SENTINEL", "FLUSHCONFIG")[1]
            if out != "OK":
                module.fail_json(msg=f"SENTINEL FLUSHCONFIG (persisting the passwords) failed: {out}", **result)
    found_lines = sentinel.call("SENTINEL", "CONFIG", "GET", "sentinel-pass")[1].splitlines()
    if (found_lines[1] if len(found_lines) > 1 else "") != params["sentinel_pass"]:
        result["set"]["sentinel-pass"] = "(password)"
        if not module.check_mode:
            out = sentinel.call("SENTINEL", "CONFIG", "SET", "sentinel-pass", params["sentinel_pass"])[1]
            if out != "OK":
                module.fail_json(msg=f"SENTINEL CONFIG SET sentinel-pass failed: {out}", **result)
    result["changed"] = result["changed"] or bool(result["set"])
    parts = ([f"now monitors {params['name']} at {result['master']}"] if result["monitored"] else []) + \
            ([f"set live: {', '.join(f'{k} {v}' for k, v in sorted(result['set'].items()))}"] if result["set"] else []) + \
            ([f"needs a restart: {'; '.join(result['restart'])}"] if result["restart"] else [])
    message = "sentinel: " + ("; ".join(parts) or f"monitors {params['name']} at {result['master']} as asked")
    if result["changed"]:
        module.warn(message)
    module.exit_json(msg=message, **result)


if __name__ == "__main__":
    main()
