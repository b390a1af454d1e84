"""Filters of the monitoring role."""

from __future__ import annotations

import copy
from typing import Any

from ansible.errors import AnsibleFilterError


def queuefleet_alert_for(rules: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    """The rules document with the `for` of each alert named in `overrides` replaced.

    An alert name that is not in the rules is an error: a typo must not leave an alert
    waiting for its shipped duration while the inventory says otherwise."""
    if not isinstance(rules, dict) or not isinstance(rules.get("groups"), list):
        raise AnsibleFilterError("queuefleet.fleet.alert_for: expected a Prometheus rules document with 'groups'")
    out = copy.deepcopy(rules)
    seen = set()
    for group in out["groups"]:
        for rule in group.get("rules", []):
            name = rule.get("alert")
            if name in overrides:
                rule["for"] = str(overrides[name])
                seen.add(name)
    unknown = sorted(set(overrides) - seen)
    if unknown:
        known = sorted(r["alert"] for g in out["groups"] for r in g.get("rules", []) if "alert" in r)
        raise AnsibleFilterError(f"monitoring_alert_for names alerts that are not in the rules: {', '.join(unknown)} "
                                 f"(alerts: {', '.join(known)})")
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"alert_for": queuefleet_alert_for}
