#!/usr/bin/python
"""Wait until supervisord's programs leave STARTING and BACKOFF; say what of supervisord.conf waits for its next start."""

from __future__ import annotations

DOCUMENTATION = r"""
module: supervisor_settle
short_description: Wait until no supervisor program is starting or backing off, and compare supervisord.conf with what runs
description:
  - A program that crashes at start goes STARTING, BACKOFF, STARTING ... and ends FATAL after C(startretries) tries.
    This module polls C(supervisorctl status) once a second until no program is STARTING or BACKOFF, or
    O(timeout) seconds have passed, so that a check made afterwards judges programs that have settled.
    A STOPPING program (a replaced or surplus pool process finishing its job) is not waited for.
  - It also compares the supervisord.conf that the running supervisord loaded (the copy its unit drop-in makes
    at each start, O(running_copy)) with O(config), and returns the settings that differ, split into the
    O(deferred) ones, which wait for supervisord's next start on purpose, and the others, which need a restart.
  - Read-only; runs the same in check mode. Use M(queuefleet.fleet.supervisor_status) to read the programs afterwards.
version_added: 1.1.0
author: queuefleet (@queuefleet)
options:
  config:
    description: supervisord.conf, passed to C(supervisorctl -c) and compared with O(running_copy).
    type: path
    default: /etc/supervisor/supervisord.conf
  running_copy:
    description:
      - The copy of O(config) that supervisord's unit makes at each start (the supervisor role's drop-in).
      - When it is missing, O(config) counts as what runs if it was written before supervisord started.
    type: path
    default: /run/queuefleet/running/supervisor.conf
  timeout:
    description: Seconds to wait at most (0 reads once and does not wait).
    type: int
    default: 60
  deferred:
    description: Settings (C(section.key)) whose change waits for supervisord's next start on purpose.
    type: list
    elements: str
    default: []
notes:
  - Needs root to read O(config) (mode 0600) and O(running_copy).
seealso:
  - module: queuefleet.fleet.supervisor_status
"""

EXAMPLES = r"""
- name: Wait until the programs have settled (at most a minute)
  queuefleet.fleet.supervisor_settle:
    timeout: 60
    deferred: [supervisord.loglevel, supervisord.logfile_maxbytes]
  register: settle

- name: Say which settings wait for supervisord's next start
  ansible.builtin.debug:
    msg: "{{ settle.config.deferred | join(', ') }} wait for supervisord's next start"
  when: settle.config.deferred | length > 0
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
settled:
  description: No program is STARTING or BACKOFF (also V(true) when supervisord does not answer, as nothing will settle).
  type: bool
  returned: always
waited:
  description: Seconds spent waiting.
  type: float
  returned: always
  sample: 3.1
unsettled:
  description: Programs still STARTING or BACKOFF when O(timeout) ran out.
  type: list
  elements: str
  returned: always
  sample: ["queuefleet-mail-3f2a1c_00"]
config:
  description: What supervisord.conf holds that the running supervisord has not loaded.
  type: dict
  returned: always
  contains:
    deferred:
      description: Changed settings listed in O(deferred), waiting for supervisord's next start.
      type: list
      elements: str
      sample: ["supervisord.loglevel"]
    restart:
      description: Other changed settings; supervisord needs a restart for them.
      type: list
      elements: str
    note:
      description: Why the comparison could not be made (supervisord's copy is missing and the file is newer), else empty.
      type: str
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.queuefleet.fleet.plugins.module_utils import host_probe, service_config

WAITING = ("STARTING", "BACKOFF")


def settle(config, timeout, clock=time.monotonic, sleep=time.sleep, status=host_probe.supervisor_status):
    """(running, error, unsettled, waited): poll until no program is STARTING/BACKOFF or timeout passes."""
    start = clock()
    while True:
        programs, error = status(config)
        if programs is None:
            return False, error, [], clock() - start
        unsettled = [name for name, entry in programs.items() if entry["state"] in WAITING]
        waited = clock() - start
        if not unsettled or waited >= timeout:
            return True, "", unsettled, waited
        sleep(1)


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def supervisord_started(config):
    """When the running supervisord started (seconds since the epoch), or None."""
    rc, out, dummy = host_probe.run(["supervisorctl", "-c", config, "pid"])
    pid = out.strip()
    if rc != 0 or not pid.isdigit():
        return None
    return service_config.process_start_time(int(pid))


def config_pending(config, running_copy, deferred, started):
    """{"deferred", "restart", "note"}: the settings of config that the running supervisord has not loaded."""
    result = {"deferred": [], "restart": [], "note": ""}
    desired = _read(config)
    if desired is None:
        result["note"] = f"{config} cannot be read"
        return result
    running = _read(running_copy)
    if running is None:
        try:
            written = os.stat(config).st_mtime
        except OSError:
            written = None
        if started is None or written is None or written > started:
            result["note"] = (f"{running_copy} is missing and {config} was written after supervisord started: "
                              "which of its settings supervisord has not loaded is unknown")
            return result
        running = desired  # written before supervisord started: it is what runs
    try:
        found = service_config.pending("supervisord", desired, running, live_keys=[], deferred_keys=list(deferred))
    except ValueError as exc:
        result["note"] = str(exc)
        return result
    result["deferred"] = list(found["deferred"])
    result["restart"] = list(found["restart"])
    return result


def main():
    module = AnsibleModule(
        argument_spec={
            "config": {"type": "path", "default": "/etc/supervisor/supervisord.conf"},
            "running_copy": {"type": "path", "default": "/run/queuefleet/running/supervisor.conf"},
            "timeout": {"type": "int", "default": 60},
            "deferred": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    params = module.params
    if params["timeout"] < 0:
        module.fail_json(msg=f"timeout must be 0 or more seconds (got {params['timeout']})")
    running, error, unsettled, waited = settle(params["config"], params["timeout"])
    pending = {"deferred": [], "restart": [], "note": f"supervisord does not answer: {error}"}
    if running:
        pending = config_pending(params["config"], params["running_copy"], params["deferred"],
                                 supervisord_started(params["config"]))
    module.exit_json(changed=False, running=running, error=error, settled=not unsettled, waited=round(waited, 1),
                     unsettled=unsettled, config=pending)


if __name__ == "__main__":
    main()
