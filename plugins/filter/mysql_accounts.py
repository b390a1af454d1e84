"""The mysql role's accounts: mysql_users expanded to one account per host, with the passwords each accepts."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError


def mysql_accounts(users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One account per (user, host): ``host`` or each of ``hosts``, and ``passwords`` = [password] plus
    ``previous_password`` during a rotation. Refuses an entry it cannot turn into accounts."""
    if not isinstance(users, list):
        raise AnsibleFilterError("mysql_accounts: mysql_users must be a list of users")
    accounts = []
    for index, user in enumerate(users, start=1):
        if not isinstance(user, dict) or not user.get("name"):
            raise AnsibleFilterError(f"mysql_users #{index}: needs a name")
        label = f"mysql_users #{index} '{user['name']}'"
        if "host" in user and "hosts" in user:
            raise AnsibleFilterError(f"{label}: give host or hosts, not both")
        hosts = user.get("hosts", [user.get("host", "localhost")])
        if isinstance(hosts, str) or not hosts or not all(isinstance(h, str) and h for h in hosts):
            raise AnsibleFilterError(f"{label}: hosts must be a non-empty list of host patterns, got {hosts!r}")
        state = user.get("state", "present")
        passwords = [user.get("password") or ""] + ([user["previous_password"]] if user.get("previous_password") else [])
        if state == "present" and not passwords[0]:
            raise AnsibleFilterError(f"{label}: needs a non-empty password")
        for host in dict.fromkeys(hosts):
            accounts.append({"name": user["name"], "host": host, "priv": user.get("priv", ""), "state": state,
                             "password": passwords[0], "passwords": passwords})
    return accounts


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"mysql_accounts": mysql_accounts}
