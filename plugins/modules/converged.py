#!/usr/bin/python
"""Documentation of the queuefleet.fleet.converged action plugin (plugins/action/converged.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: converged
short_description: Skip a role whose last full run still holds on a host, or record that run
description:
  - A role asks, before it changes anything, whether its last full run on this host had the same inputs, whether
    what it left behind is still there, byte for byte, and whether every service it runs still runs what it was given.
    If all three hold, a re-run would change nothing, and the role ends there (C(meta end_role)).
  - Inputs are hashed on the controller, the host only ever sees the digest. They are every variable of the role's
    argument specs as this run resolves them, except the controller-side ones named in O(controller_inputs) (a path
    on the controller is not an input; another checkout or operator must get the same skip; the role gives their
    content's digest in O(inputs) instead), plus O(inputs), the role's files, the collection's plugins, the versions
    of ansible-core, Jinja2 and community.mysql, and the host facts the roles read.
  - The host state is read by M(queuefleet.fleet.host_state), one item per full path or name, without a shell.
  - O(state=record) writes the marker after a full run, once its handlers have run; it refuses while a service still
    owes its config (a restart, a reload, a live setting), so a run never certifies a host whose restart was lost.
  - Runs on the controller as an action plugin; this file only documents it.
version_added: 1.0.0
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
  enabled:
    description: false forces a full run (the role's C(<role>_converged_skip)); C(queuefleet_converged_skip=false) does so for every role.
    type: bool
    default: true
  inputs:
    description: Further inputs of the role, such as the release id or the digest of a template outside the role.
    type: raw
  role_variables:
    description: Include the role's argument-spec variables in the inputs.
    type: bool
    default: true
  controller_inputs:
    description: Variables (C(var)) or keys of list items (C(var[].key)) that hold controller paths, left out of the inputs.
    type: list
    elements: str
    default: []
  paths:
    description: See M(queuefleet.fleet.host_state).
    type: list
    elements: str
    default: []
  meta_paths:
    description: See M(queuefleet.fleet.host_state).
    type: list
    elements: str
    default: []
  globs:
    description: See M(queuefleet.fleet.host_state).
    type: list
    elements: str
    default: []
  packages:
    description: See M(queuefleet.fleet.host_state).
    type: list
    elements: str
    default: []
  services:
    description: See M(queuefleet.fleet.host_state).
    type: list
    elements: str
    default: []
  users:
    description: See M(queuefleet.fleet.host_state).
    type: list
    elements: str
    default: []
  groups:
    description: See M(queuefleet.fleet.host_state).
    type: list
    elements: str
    default: []
  commands:
    description: See M(queuefleet.fleet.host_state).
    type: dict
    default: {}
  programs:
    description: See M(queuefleet.fleet.host_state).
    type: dict
    default: {}
  owed:
    description: See M(queuefleet.fleet.host_state).
    type: list
    elements: dict
    default: []
"""

EXAMPLES = r"""
- name: Compare the host with the role's last full run
  queuefleet.fleet.converged: &redis_state
    name: redis
    paths: [/etc/redis/redis.conf]
    packages: [redis-server]
    services: [redis-server]
  register: redis_converged

- name: End the role, a full run would change nothing on this host
  ansible.builtin.meta: end_role
  when: redis_converged.converged

# ... the role's tasks, then its handlers ...

- name: Record this full run, for the next one to compare with
  queuefleet.fleet.converged:
    <<: *redis_state
    state: record
"""

RETURN = r"""
converged:
  description: Inputs and host state are as the last full run left them (state=check).
  type: bool
  returned: always
differs:
  description: The host-state items that differ, by kind and full path or name.
  type: list
  elements: str
  returned: when the host state differs
inputs:
  description: The digest of this run's inputs.
  type: str
  returned: when the host was probed
msg:
  description: What was found, in one sentence.
  type: str
  returned: always
"""
