"""Which server settings MariaDB/MySQL can take live (SET GLOBAL) and which need a restart."""

from __future__ import annotations

import re
from typing import Any

from ansible.errors import AnsibleFilterError

WHOLE_NUMBER = re.compile(r"^[0-9]+$")


def parse_mysqld_section(text: str) -> dict[str, str]:
    """{option: value} of the [mysqld] section of a .cnf file; '-' and '_' are the same in option names."""
    settings: dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
            continue
        if section != "mysqld":
            continue
        key, sep, value = line.partition("=")
        settings[key.strip().lower().replace("-", "_")] = value.strip() if sep else ""
    return settings


def mysql_config_changes(old_text: str, new_text: str, live_keys: list[str]) -> dict[str, Any]:
    """{"live": {option: whole number for SET GLOBAL}, "restart": [options that need a restart]}.

    Only whole-number values go live (no quoting, no size suffixes); an option that
    disappears needs a restart (its default would only return on one)."""
    if not isinstance(old_text, str) or not isinstance(new_text, str):
        raise AnsibleFilterError("mysql_config_changes: expected the old and the new .cnf as text")
    old, new = parse_mysqld_section(old_text), parse_mysqld_section(new_text)
    live_set = {key.lower().replace("-", "_") for key in live_keys}
    live: dict[str, str] = {}
    restart: list[str] = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        if key in live_set and WHOLE_NUMBER.match(new.get(key, "")):
            live[key] = new[key]
        else:
            restart.append(key)
    return {"live": live, "restart": restart}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"mysql_config_changes": mysql_config_changes}
