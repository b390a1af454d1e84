#!/usr/bin/python
"""Give MariaDB accounts exactly the passwords asked for: one, or two during a rotation."""

from __future__ import annotations

DOCUMENTATION = r"""
module: mysql_passwords
short_description: Set the passwords a MariaDB account accepts, two at once during a rotation
description:
  - MariaDB has no C(RETAIN CURRENT PASSWORD), but an account may be identified by several authentication
    methods, tried in turn (C(IDENTIFIED VIA mysql_native_password USING ... OR mysql_native_password USING ...)).
    During a rotation the account accepts both the new and the previous password, so clients move one by one.
  - Compares the password digests of each account (C(SHOW CREATE USER)) with the ones asked for, in order,
    and changes only accounts that differ (C(ALTER USER)). Passwords never appear in a statement, a command line
    or the result; only their C(mysql_native_password) digests are sent, over the server's unix socket as root.
  - Accounts must exist (create them with community.mysql.mysql_user and C(update_password=on_create)).
  - Check mode reports the accounts that would change.
version_added: 1.1.0
author: queuefleet (@queuefleet)
options:
  accounts:
    description: The accounts and the passwords each accepts, the current one first.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: User name.
        type: str
        required: true
      host:
        description: Host part of the account.
        type: str
        default: localhost
      passwords:
        description: Passwords the account accepts, the current one first; at most two.
        type: list
        elements: str
        required: true
  socket:
    description: The server's unix socket (root by unix_socket).
    type: path
    default: /run/mysqld/mysqld.sock
"""

EXAMPLES = r"""
- name: The app user accepts the new and, until the rotation ends, the previous password
  queuefleet.fleet.mysql_passwords:
    accounts:
      - name: shop
        host: 10.0.0.%
        passwords: ["{{ vault_shop_db_password }}", "{{ vault_shop_db_password_previous }}"]
  no_log: true
"""

RETURN = r"""
changed_accounts:
  description: The accounts whose passwords were (or in check mode would be) changed, as user@host.
  type: list
  elements: str
  returned: always
"""

import hashlib
import re
import subprocess

from ansible.module_utils.basic import AnsibleModule

DIGEST = re.compile(r"(?:USING|PASSWORD)\s+'(\*[0-9A-F]{40})'", re.I)


def native_digest(password: str) -> str:
    """mysql_native_password's stored form: '*' and the upper-case hex of SHA1(SHA1(password))."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


def quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql(socket: str, statement: str) -> tuple[int, str, str]:
    done = subprocess.run(["mysql", "--protocol=socket", "-S", socket, "-NB"], input=statement,
                          capture_output=True, text=True, check=False)
    return done.returncode, done.stdout, done.stderr


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "accounts": {"type": "list", "elements": "dict", "required": True, "options": {
                "name": {"type": "str", "required": True},
                "host": {"type": "str", "default": "localhost"},
                "passwords": {"type": "list", "elements": "str", "required": True, "no_log": True},
            }},
            "socket": {"type": "path", "default": "/run/mysqld/mysqld.sock"},
        },
        supports_check_mode=True,
    )
    changed = []
    for account in module.params["accounts"]:
        passwords = [p for p in account["passwords"] if p]
        who = f"{account['name']}@{account['host']}"
        if not 1 <= len(passwords) <= 2:
            module.fail_json(msg=f"{who}: give one password, or two during a rotation (got {len(passwords)})")
        wanted = [native_digest(p) for p in dict.fromkeys(passwords)]
        user = f"{quote(account['name'])}@{quote(account['host'])}"
        rc, out, err = sql(module.params["socket"], f"SHOW CREATE USER {user};")
        if rc != 0:
            module.fail_json(msg=f"{who}: cannot read the account: {err.strip()[:300]}", changed_accounts=changed)
        if DIGEST.findall(out) == wanted and "unix_socket" not in out:
            continue
        changed.append(who)
        if module.check_mode:
            continue
        via = " OR ".join(f"mysql_native_password USING {quote(digest)}" for digest in wanted)
        rc, unused_out, err = sql(module.params["socket"], f"ALTER USER {user} IDENTIFIED VIA {via};")
        if rc != 0:
            module.fail_json(msg=f"{who}: cannot set its passwords: {err.strip()[:300]}", changed_accounts=changed)
    module.exit_json(changed=bool(changed), changed_accounts=changed)


if __name__ == "__main__":
    main()
