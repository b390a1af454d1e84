#!/usr/bin/python
"""What supervisord runs, each program taken apart by the pool program-name rule."""

from __future__ import annotations

DOCUMENTATION = r"""
module: supervisor_status
short_description: List the programs supervisord runs, with their state and the pool they belong to
description:
  - Reads C(supervisorctl status) and returns every process with its state, and for worker-pool processes
    (named C(<prefix><pool>-<generation>_<NN>), see the queue_worker role) its pool, generation and slot.
  - The operator playbooks act on this list, what is deployed, never on names recomputed from an
    inventory that may be ahead of the hosts.
  - Each process also says whether supervisord starts it by itself (C(autostart), from C(supervisorctl avail)); an
    autoscaled pool's processes do not, so one of them that is STOPPED was stopped by the autoscaler on purpose.
  - Each pool process also says whether it should run, as deployed (C(live)). It does when it belongs to a pool,
    is not STOPPING, and is not a STOPPED process that supervisord does not start by itself. The operator playbooks
    start, restart and count the live processes, so they keep an autoscaled pool's scale.
  - Read-only; runs the same in check mode.
version_added: 1.1.0
author: queuefleet (@queuefleet)
options:
  config:
    description: supervisord.conf passed to supervisorctl -c.
    type: path
    default: /etc/supervisor/supervisord.conf
  prefix:
    description: Program prefix of the worker pools (queue_worker_program_prefix).
    type: str
    default: queuefleet-
  stderr_lines:
    description: For every process that is not RUNNING, this many last lines of its stderr (0 for none).
    type: int
    default: 0
"""

EXAMPLES = r"""
- name: Read what supervisord runs
  queuefleet.fleet.supervisor_status:
    prefix: queuefleet-
  register: supervisor

- name: Restart the processes of pool mail, as deployed
  ansible.builtin.command:
    argv: [supervisorctl, restart, "{{ item.name }}"]
  loop: "{{ supervisor.programs | selectattr('pool', 'equalto', 'mail') | list }}"
"""

RETURN = r"""
running:
  description: supervisord answers.
  type: bool
  returned: always
error:
  description: Why supervisord does not answer, else empty.
  type: str
  returned: always
programs:
  description: Every process, in supervisorctl's order.
  type: list
  elements: dict
  returned: always
  sample: [{"name": "queuefleet-mail-3f2a1c_00", "group": "queuefleet-mail-3f2a1c_00", "state": "RUNNING",
            "info": "pid 812, uptime 1:02:03", "pool": "mail", "generation": "3f2a1c", "slot": 0, "stderr": [],
            "autostart": true, "live": true}]
pools:
  description: Per pool, its processes (names) by state.
  type: dict
  returned: always
  sample: {"mail": {"RUNNING": ["queuefleet-mail-3f2a1c_00"], "FATAL": []}}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.queuefleet.fleet.plugins.module_utils import host_probe
from ansible_collections.queuefleet.fleet.plugins.module_utils.programs import parse_program_name


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "config": {"type": "path", "default": "/etc/supervisor/supervisord.conf"},
            "prefix": {"type": "str", "default": "queuefleet-"},
            "stderr_lines": {"type": "int", "default": 0},
        },
        supports_check_mode=True,
    )
    params = module.params
    status, error = host_probe.supervisor_status(params["config"])
    result = {"changed": False, "running": status is not None, "error": error, "programs": [], "pools": {}}
    autostart = host_probe.supervisor_autostart(params["config"]) if status is not None else {}
    for name, entry in (status or {}).items():
        parsed = parse_program_name(name)
        pool = parsed.pool(params["prefix"]) if parsed else None
        program = {"name": name, "group": name.split(":", 1)[0], "state": entry["state"], "info": entry["info"],
                   "pool": pool, "generation": parsed.generation if parsed else None,
                   "slot": parsed.slot if parsed else None, "stderr": [],
                   "autostart": autostart.get(name.split(":", 1)[-1], autostart.get(name, True))}
        # STOPPED with autostart off: an autoscaled pool's process its autoscaler stopped on purpose.
        program["live"] = (pool is not None and entry["state"] != "STOPPING"
                           and not (entry["state"] == "STOPPED" and not program["autostart"]))
        if params["stderr_lines"] > 0 and entry["state"] != "RUNNING":
            out = host_probe.run(["supervisorctl", "-c", params["config"], "tail",
                                  f"-{params['stderr_lines'] * 300}", name, "stderr"])[1]
            program["stderr"] = [line for line in out.splitlines() if line.strip()][-params["stderr_lines"]:]
        result["programs"].append(program)
        if pool is not None:
            result["pools"].setdefault(pool, {}).setdefault(entry["state"], []).append(name)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
