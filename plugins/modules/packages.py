#!/usr/bin/python
"""Documentation of the queuefleet.fleet.packages action (plugins/action/packages.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: packages
short_description: Install a role's packages with apt, and in check mode say when the rest of the role cannot be evaluated
description:
  - Installs O(name) with M(ansible.builtin.apt) (C(state=present), package lists refreshed when older than
    O(cache_valid_time)).
  - In check mode it first refreshes the package lists for real, because on a fresh host apt cannot say what it
    would install without them. The lists are not managed state, so this never counts as a change.
  - "In check mode, when packages would be installed (or a user in O(users) does not exist yet), the rest of the
    role works on things that do not exist yet (users, directories, units of the packages). The action then
    returns RV(pending) and a message saying what a deploy would do first; the role ends with
    C(ansible.builtin.meta: end_role) when RV(pending), instead of failing on what is not there."
  - The message is shown without C(-v), like a debug message.
version_added: 1.1.0
author: queuefleet (@queuefleet)
options:
  name:
    description: Debian packages to install.
    type: list
    elements: str
    required: true
  then:
    description:
      - What the role does once the packages exist, for the check-mode message, e.g. C(redis.conf, the data
        directory and the service).
      - With O(users), what follows the users, e.g. C(the layout under /opt/queuefleet and the supervisor programs).
    type: str
    required: true
  users:
    description: Users the rest of the role needs, created by the role after the packages; in check mode a missing one also makes RV(pending).
    type: list
    elements: str
    default: []
  install_recommends:
    description: Passed to M(ansible.builtin.apt) when set; the distribution's default otherwise.
    type: bool
  cache_valid_time:
    description: Seconds the package lists are considered fresh.
    type: int
    default: 3600
attributes:
  action:
    support: full
    description: Runs on the controller as an action, which runs M(ansible.builtin.apt) and M(ansible.builtin.getent) on the host.
  check_mode:
    support: full
    description: The package lists are refreshed (not a change); nothing is installed.
  diff_mode:
    support: none
    description: Package installs have no diff.
  platform:
    platforms: debian
    support: full
    description: Debian and its derivatives (apt).
notes:
  - Needs root (C(become)) to refresh the lists and install.
seealso:
  - module: ansible.builtin.apt
"""

EXAMPLES = r"""
- name: Install redis packages (check mode ends the role until they exist)
  queuefleet.fleet.packages:
    name: [redis-server, redis-tools]
    then: redis.conf, the data directory and the service
  register: redis_install

- name: End the role in check mode until the packages exist
  ansible.builtin.meta: end_role
  when: redis_install.pending

- name: Install Python and venv support; check mode also waits for the worker user
  queuefleet.fleet.packages:
    name: [python3, python3-venv]
    users: [queuefleet]
    then: the layout under /opt/queuefleet and the supervisor programs of the pools
  register: worker_install
"""

RETURN = r"""
pending:
  description:
    - Check mode, and packages would be installed or a user of O(users) does not exist yet; the rest of the role
      cannot be evaluated in this run. Always V(false) outside check mode.
  type: bool
  returned: always
msg:
  description: In check mode, when RV(pending), what a deploy would do first and that the rest is not evaluated; else empty.
  type: str
  returned: always
  sample: "check mode: redis-server, redis-tools would be installed first; redis.conf, the data directory and the service
    follow once they are, and are not evaluated in this run."
packages:
  description: The packages asked for.
  type: list
  elements: str
  returned: always
missing_users:
  description: In check mode, the users of O(users) that do not exist yet.
  type: list
  elements: str
  returned: always
cache_refreshed:
  description: In check mode, the package lists were refreshed (they were older than O(cache_valid_time)).
  type: bool
  returned: always
"""
