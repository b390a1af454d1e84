#!/usr/bin/python
"""Read the host state a role leaves behind, compare it with the role's last full run, or record that run."""

from __future__ import annotations

DOCUMENTATION = r"""
module: host_state
short_description: The host side of queuefleet.fleet.converged, reading and recording what a role left behind
description:
  - Reads, in one pass and without a shell, every piece of host state a role names
    (files by full path, packages, units, users, groups, read-only commands, supervisor programs, and
    what each running service still owes its config file) as one item per piece.
  - O(state=check) compares the items and O(inputs) with the marker C(<marker_dir>/<name>.json)
    written by the role's last full run and returns whether both are unchanged.
  - O(state=record) writes that marker. It refuses, and removes any older marker, while a service
    still owes a restart, a reload or a live setting, so a run can never certify a host whose restart
    was lost.
  - Called by the M(queuefleet.fleet.converged) action; a role does not call it directly.
version_added: 1.1.0
author: queuefleet (@queuefleet)
options:
  name:
    description: The marker's name, a plain word (the role's name).
    type: str
    required: true
  state:
    description: C(check) compares, C(record) writes the marker.
    type: str
    choices: [check, record]
    default: check
  inputs:
    description: Digest of the role's inputs, computed on the controller.
    type: str
    required: true
  marker_dir:
    description: Directory of the markers (created 0700).
    type: path
    default: /var/lib/queuefleet/converged
  paths:
    description: Files, directories or links whose kind, mode, owner and content are recorded.
    type: list
    elements: path
    default: []
  meta_paths:
    description: Files whose mode and owner only are recorded (their bytes change at run time, a SQLite database say).
    type: list
    elements: path
    default: []
  globs:
    description: Glob patterns; every path they match is recorded as in O(paths), so a new or removed match is a difference.
    type: list
    elements: str
    default: []
  packages:
    description: Debian packages whose version and status are recorded.
    type: list
    elements: str
    default: []
  services:
    description: systemd units whose enablement, activity and pending daemon-reload are recorded.
    type: list
    elements: str
    default: []
  users:
    description: Users whose uid, primary group, home, shell and groups are recorded.
    type: list
    elements: str
    default: []
  groups:
    description: Groups whose gid and members are recorded.
    type: list
    elements: str
    default: []
  commands:
    description: Read-only commands (label to argv list, no shell) whose output digest is recorded.
    type: dict
    default: {}
  programs:
    description:
      - Supervisor programs that must run, as C({config, names}); each is recorded as C(up) (RUNNING or
        STARTING) or its state, so a stopped, exited or fatal program is a difference.
    type: dict
    default: {}
  owed:
    description:
      - One entry per service whose running config is compared with its config file
        (see module_utils/service_config.py). Keys C(service), C(kind) (redis, mysql, supervisord,
        prometheus), C(config), C(running_copy), C(live), C(deferred), C(ignore), C(restart_files),
        C(reload_files), C(port), C(passwords), C(socket), C(url).
    type: list
    elements: dict
    default: []
"""

EXAMPLES = r"""
# Not called directly: the queuefleet.fleet.converged action runs it with the role's probe.
- name: Compare the host with the role's last full run
  queuefleet.fleet.host_state:
    name: redis
    inputs: 0123abcd
    paths: [/etc/redis/redis.conf]
    packages: [redis-server]
    services: [redis-server]
"""

RETURN = r"""
converged:
  description: Inputs and every item are as the last full run recorded (state=check).
  type: bool
  returned: always
differs:
  description: The items that differ, each named by kind and full path or name (state=check).
  type: list
  elements: str
  returned: always
reason:
  description: Why the host is not converged, one phrase (state=check).
  type: str
  returned: always
recorded_at:
  description: When the marker compared with was written (UTC), empty without one.
  type: str
  returned: always
items:
  description: How many items were read.
  type: int
  returned: always
owed:
  description: Per service, what it still owes (restart, live, reload), only where something is owed.
  type: dict
  returned: always
"""

import json
import os
import re
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.queuefleet.fleet.plugins.module_utils import host_probe

FORMAT = "queuefleet-converged v2"


def read_items(params: dict) -> tuple[dict, dict]:
    """({item key: value}, {service: what it owes}): the host state the role names."""
    items: dict[str, str] = {}
    for path in params["paths"]:
        items[f"path {path}"] = host_probe.describe_path(path)
    for path in params["meta_paths"]:
        items[f"path {path}"] = host_probe.describe_path(path, content=False)
    for path in host_probe.expand_globs(params["globs"]):
        items[f"path {path}"] = host_probe.describe_path(path)
    for name, value in host_probe.packages(params["packages"]).items():
        items[f"package {name}"] = value
    owed_services = [entry["service"] for entry in params["owed"]]
    unit_states = host_probe.units(list(dict.fromkeys(params["services"] + owed_services)))
    for name in params["services"]:
        items[f"service {name}"] = host_probe.describe_unit(unit_states[name])
    for name, value in host_probe.users(params["users"]).items():
        items[f"user {name}"] = value
    for name, value in host_probe.groups(params["groups"]).items():
        items[f"group {name}"] = value
    for label, argv in sorted(params["commands"].items()):
        items[f"command {label}"] = host_probe.command_digest([str(arg) for arg in argv])
    if params["programs"].get("names"):
        status = host_probe.supervisor_status(params["programs"].get("config") or "/etc/supervisor/supervisord.conf")[0]
        states = host_probe.group_states(status or {})
        for name in params["programs"]["names"]:
            state = states.get(name)
            items[f"program {name}"] = "supervisord-down" if status is None else host_probe.program_condition(state)
    owed: dict[str, dict] = {}
    for entry in params["owed"]:
        found = host_probe.owed(entry, unit_states[entry["service"]])
        summary = host_probe.owed_summary(found)
        items[f"owed {entry['service']}"] = summary
        if summary:
            owed[entry["service"]] = {key: found[key] for key in ("restart", "live", "reload") if found[key]}
    return items, owed


def compare(recorded: dict, current: dict) -> list[str]:
    return sorted(key for key in set(recorded) | set(current) if recorded.get(key) != current.get(key))


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["check", "record"], "default": "check"},
            "inputs": {"type": "str", "required": True},
            "marker_dir": {"type": "path", "default": "/var/lib/queuefleet/converged"},
            "paths": {"type": "list", "elements": "path", "default": []},
            "meta_paths": {"type": "list", "elements": "path", "default": []},
            "globs": {"type": "list", "elements": "str", "default": []},
            "packages": {"type": "list", "elements": "str", "default": []},
            "services": {"type": "list", "elements": "str", "default": []},
            "users": {"type": "list", "elements": "str", "default": []},
            "groups": {"type": "list", "elements": "str", "default": []},
            "commands": {"type": "dict", "default": {}},
            "programs": {"type": "dict", "default": {}},
            "owed": {"type": "list", "elements": "dict", "default": [], "no_log": False},
        },
        supports_check_mode=True,
    )
    params = module.params
    for entry in params["owed"]:
        for password in entry.get("passwords") or []:
            module.no_log_values.add(password)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", params["name"]):
        module.fail_json(msg=f"name must be a plain word, got {params['name']!r}")
    for label, argv in params["commands"].items():
        if not isinstance(argv, list) or not argv:
            module.fail_json(msg=f"commands.{label} must be an argv list (no shell), got {argv!r}")
    marker = os.path.join(params["marker_dir"], params["name"] + ".json")
    items, owed = read_items(params)
    result = {"changed": False, "converged": False, "differs": [], "reason": "", "recorded_at": "",
              "items": len(items), "owed": owed}

    if params["state"] == "record":
        if module.check_mode:
            module.exit_json(msg="check mode: nothing recorded", **result)
        if owed:
            _remove(marker)
            module.fail_json(msg="not recording a converged host while services still owe their config: "
                             + "; ".join(f"{service}: {host_probe.owed_summary(found)}" for service, found in sorted(owed.items())),
                             **result)
        os.makedirs(params["marker_dir"], mode=0o700, exist_ok=True)
        document = {"format": FORMAT, "inputs": params["inputs"],
                    "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "items": items}
        handle, temporary = tempfile.mkstemp(dir=params["marker_dir"], prefix=f".{params['name']}.")
        with os.fdopen(handle, "w") as out:
            json.dump(document, out, sort_keys=True, indent=1)
        os.replace(temporary, marker)
        module.exit_json(msg=f"recorded {len(items)} items", **result)

    try:
        with open(marker, encoding="utf-8") as handle:
            recorded = json.load(handle)
    except (OSError, ValueError):
        recorded = {}
    if recorded.get("format") != FORMAT:
        result["reason"] = "no record of a full run on this host"
    else:
        result["recorded_at"] = recorded.get("recorded_at", "")
        if recorded.get("inputs") != params["inputs"]:
            result["reason"] = "inputs differ (variables, role files, libraries or host facts)"
        else:
            result["differs"] = compare(recorded.get("items") or {}, items)
            if result["differs"]:
                result["reason"] = "host state differs"
            else:
                result["converged"] = True
    module.exit_json(**result)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


if __name__ == "__main__":
    main()
