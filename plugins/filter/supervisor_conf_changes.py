"""Which supervisord.conf changes can wait for supervisord's next restart, and which need one now.

supervisord applies nothing of its own config without a restart, and a restart stops every
program it runs: all workers at once. Settings that only shape supervisord's own logging
(loglevel, its log file's size and backups) can wait: the file changes, supervisord keeps
running, and the change takes effect at its next restart (a reboot, a package upgrade, or an
operator's `systemctl restart supervisor` at a quiet time)."""

from __future__ import annotations

import configparser
from typing import Any

from ansible.errors import AnsibleFilterError


def parse_supervisord_conf(text: str) -> dict[str, str]:
    """{"section.key": value} of a supervisord.conf (sections and keys as supervisord reads them)."""
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise AnsibleFilterError(f"supervisord_conf_changes: cannot parse supervisord.conf: {exc}") from exc
    return {f"{section}.{key}": value.strip() for section in parser.sections() for key, value in parser.items(section)}


def supervisord_conf_changes(old_text: str, new_text: str, deferred_keys: list[str]) -> dict[str, list[str]]:
    """{"deferred": [...], "restart": [...]}: the changed "section.key" settings, sorted.

    A setting added or removed counts as changed; only the keys in deferred_keys may wait."""
    if not isinstance(old_text, str) or not isinstance(new_text, str):
        raise AnsibleFilterError("supervisord_conf_changes: expected the old and the new supervisord.conf as text")
    if not old_text.strip():
        # No running config to compare with (first install): supervisord starts with the new one.
        return {"deferred": [], "restart": ["(new file)"]}
    old, new = parse_supervisord_conf(old_text), parse_supervisord_conf(new_text)
    deferred_set = set(deferred_keys)
    changed = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
    return {
        "deferred": [key for key in changed if key in deferred_set],
        "restart": [key for key in changed if key not in deferred_set],
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"supervisord_conf_changes": supervisord_conf_changes}
