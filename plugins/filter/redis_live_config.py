"""Which redis.conf changes Redis can take live (CONFIG SET) and which need a restart."""

from __future__ import annotations

import shlex
from typing import Any

from ansible.errors import AnsibleFilterError


def parse_redis_conf(text: str) -> dict[str, str]:
    """{directive: value} of a redis.conf; a repeated directive (save, bind lines) is joined in order."""
    settings: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        settings.setdefault(key.lower(), []).append(value.strip())
    return {key: " ".join(values) for key, values in settings.items()}


def redis_config_changes(old_text: str, new_text: str, live_keys: list[str]) -> dict[str, Any]:
    """What differs between the running file and the new one.

    Returns {"live": {directive: value for CONFIG SET}, "restart": [directives that need a restart]}.
    A directive that disappears needs a restart (its default would only return on one)."""
    if not isinstance(old_text, str) or not isinstance(new_text, str):
        raise AnsibleFilterError("redis_config_changes: expected the old and the new redis.conf as text")
    old, new = parse_redis_conf(old_text), parse_redis_conf(new_text)
    live_set = {key.lower() for key in live_keys}
    live: dict[str, str] = {}
    restart: list[str] = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        if key in live_set and key in new:
            value = new[key]
            # CONFIG SET takes the bare value: redis.conf may quote it.
            live[key] = " ".join(shlex.split(value)) if value not in ('""', "''") else ""
        else:
            restart.append(key)
    return {"live": live, "restart": restart}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"redis_config_changes": redis_config_changes}
