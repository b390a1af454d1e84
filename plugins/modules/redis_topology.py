#!/usr/bin/python
"""Which Redis is the master: as the local sentinel sees it, and as the local Redis server sees itself."""

from __future__ import annotations

DOCUMENTATION = r"""
module: redis_topology
short_description: Read the Redis master as the local sentinel and the local Redis server see it
description:
  - Read-only. Asks the sentinel on this host (if one answers) which address it knows as the master
    (C(SENTINEL get-master-addr-by-name)), and the Redis server on this host (if one answers) its role and master
    (C(INFO replication)).
  - playbooks/redis.yml reads it on every sentinel and Redis host and templates C(replicaof) from the master most of
    them name, so a deploy after a failover keeps the promoted replica as master instead of undoing the failover.
version_added: 1.1.0
author: queuefleet (@queuefleet)
options:
  name:
    description: The master's name at the sentinels.
    type: str
    default: queuefleet
  sentinel_port:
    description: The sentinel's port on this host (0 asks no sentinel).
    type: int
    default: 26379
  sentinel_passwords:
    description: Passwords to try with the sentinel, in order.
    type: list
    elements: str
    default: []
  redis_port:
    description: The Redis server's port on this host (0 asks no Redis server).
    type: int
    default: 6379
  redis_passwords:
    description: Passwords to try with the Redis server, in order.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Read who is master
  queuefleet.fleet.redis_topology:
    sentinel_passwords: ["{{ sentinel_requirepass }}"]
    redis_passwords: ["{{ redis_requirepass }}"]
  register: topology
  no_log: true
"""

RETURN = r"""
sentinel_master:
  description: C(HOST PORT) of the master the local sentinel names, empty when no sentinel answers or it monitors none.
  type: str
  returned: always
role:
  description: The local Redis server's role (master or slave), empty when none answers.
  type: str
  returned: always
master:
  description: For a replica, C(HOST PORT) of its master; empty otherwise.
  type: str
  returned: always
connected_replicas:
  description: For a master, how many replicas are connected.
  type: int
  returned: always
master_link:
  description: For a replica, C(up) or C(down); empty otherwise.
  type: str
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.queuefleet.fleet.plugins.module_utils import host_probe


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "default": "queuefleet"},
            "sentinel_port": {"type": "int", "default": 26379},
            "sentinel_passwords": {"type": "list", "elements": "str", "default": [], "no_log": True},
            "redis_port": {"type": "int", "default": 6379},
            "redis_passwords": {"type": "list", "elements": "str", "default": [], "no_log": True},
        },
        supports_check_mode=True,
    )
    params = module.params
    result = {"changed": False, "sentinel_master": "", "role": "", "master": "", "connected_replicas": 0, "master_link": ""}
    for password in (params["sentinel_passwords"] or [""]) if params["sentinel_port"] else []:
        env = {"REDISCLI_AUTH": password} if password else {}
        rc, out, unused_err = host_probe.run(["redis-cli", "--no-auth-warning", "--raw", "-h", "127.0.0.1", "-p",
                                              str(params["sentinel_port"]), "SENTINEL", "get-master-addr-by-name",
                                              params["name"]], env=env, timeout=10)
        lines = out.split()
        if rc == 0 and len(lines) == 2 and lines[1].isdigit():
            result["sentinel_master"] = " ".join(lines)
            break
    if params["redis_port"]:
        for password in params["redis_passwords"] or [""]:
            env = {"REDISCLI_AUTH": password} if password else {}
            rc, out, unused_err = host_probe.run(["redis-cli", "--no-auth-warning", "--raw", "-h", "127.0.0.1", "-p",
                                                  str(params["redis_port"]), "INFO", "replication"], env=env, timeout=10)
            if rc == 0 and "role:" in out:
                fields = dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)
                result["role"] = fields.get("role", "")
                result["master"] = host_probe.replica_of(out)
                result["connected_replicas"] = int(fields.get("connected_slaves", "0") or 0)
                result["master_link"] = fields.get("master_link_status", "") if result["role"] == "slave" else ""
                break
    module.exit_json(**result)


if __name__ == "__main__":
    main()
