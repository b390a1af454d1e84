"""The pool model: worker pools merged with their defaults and checked, once, for every role.

``queue_worker_pools`` is what the inventory says; every consumer (preflight's field checks and
memory estimate, the queue_worker role's programs, users and restart expectations) reads the
result of ``queuefleet.fleet.pools`` instead of merging and range-checking the list its own way:

    {{ queue_worker_pools | queuefleet.fleet.pools(queue_worker_pool_defaults, queue_worker_user,
                                             queue_worker_max_numprocs) }}
    -> {"pools": [pool merged over the defaults, ...],   # values as given (no coercion)
        "errors": ["pool #2 'mail': numprocs must be between 1 and 64 (got 0)", ...],
        "processes": 7}                                      # the sum of numprocs of valid pools

An autoscaled pool (``autoscale: {min, max, step, cooldown, target_wait}`` instead of numprocs)
gets ``numprocs: <max>`` in the merged model: it has one supervisor program per slot up to max,
and the host must hold max processes (preflight's capacity check counts them).

The merged pools keep their values as written, so a pool's supervisor program generation (a
hash of its settings, plugins/filter/pool_programs.py) does not change when
this model is introduced or when a value is checked.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any

from ansible.errors import AnsibleFilterError

NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
USER = re.compile(r"^[a-z_][a-z0-9_-]*$")
NUMBER = re.compile(r"^[0-9]+(\.[0-9]+)?$")
WHOLE = re.compile(r"^-?[0-9]+$")
INT_KEYS = ("numprocs", "priority", "tries", "timeout", "memory", "max_jobs", "max_time", "startsecs", "startretries")
KNOWN_KEYS = ("name", "queues", "numprocs", "priority", "tries", "timeout", "memory", "sleep", "backoff", "max_jobs",
              "max_time", "user", "environment", "startsecs", "startretries", "init", "autoscale")
AUTOSCALE_KEYS = ("min", "max", "step", "cooldown", "target_wait")
INIT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


def _show(value: Any) -> str:
    return json.dumps(value, default=str)


def _given(pool: dict, key: str) -> str:
    """A pool field as the error shows it; "nothing" when the pool does not set it."""
    return _show(pool[key]) if key in pool else '"nothing"'


def _truncate(text: str, length: int = 60) -> str:
    return text if len(text) <= length else text[: length - 3] + "..."


def _is_whole(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and bool(WHOLE.match(value)))


def _is_seconds(value: Any) -> bool:
    """A number of seconds: an int, a finite float (YAML's .inf and .nan are not) or a numeric string."""
    if isinstance(value, bool):
        return False
    return (isinstance(value, (int, float)) and math.isfinite(value)) or (isinstance(value, str) and bool(NUMBER.match(value)))


def _pool_errors(label: str, given: dict, pool: dict, max_numprocs: int) -> list[str]:
    errors = [f"{label}: unknown key '{key}' (known: {', '.join(KNOWN_KEYS)})" for key in given if key not in KNOWN_KEYS]
    name = given.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        errors.append(f"{label}: name must match ^[A-Za-z0-9_.-]+$ (got {_given(given, 'name')})")
    queues = given.get("queues")
    if not isinstance(queues, list) or not queues:
        errors.append(f"{label}: queues must be a non-empty list of queue names (got {_given(given, 'queues')})")
    else:
        errors += [f"{label}: queue name {_show(q)} must match ^[A-Za-z0-9_.-]+$" for q in queues
                   if not isinstance(q, str) or not NAME.match(q)]
    for key in INT_KEYS:
        if key not in pool or (key == "numprocs" and "numprocs" not in given):  # an autoscaled pool's max: checked there
            continue
        value = pool[key]
        if not _is_whole(value):
            errors.append(f"{label}: {key} must be a whole number (got {_show(value)})")
        elif key == "numprocs" and not 1 <= int(value) <= max_numprocs:
            errors.append(f"{label}: numprocs must be between 1 and {max_numprocs} (got {value})")
        elif key == "timeout" and int(value) <= 0:
            errors.append(f"{label}: timeout must be a positive number of seconds (got {value})")
        elif int(value) < 0:
            errors.append(f"{label}: {key} must not be negative (got {value})")
    autoscale = given.get("autoscale")
    if "autoscale" in given:
        errors += _autoscale_errors(label, autoscale, max_numprocs)
        if "numprocs" in given:
            errors.append(f"{label}: numprocs and autoscale exclude each other: an autoscaled pool runs between "
                          "autoscale.min and autoscale.max processes (drop numprocs)")
    elif "numprocs" not in given:
        errors.append(f"{label}: numprocs is required (or autoscale: {{min: N, max: M}})")
    if "sleep" in pool and (not _is_seconds(pool["sleep"]) or float(pool["sleep"]) <= 0):
        errors.append(f"{label}: sleep must be a positive number of seconds (got {_show(pool['sleep'])})")
    backoff = pool.get("backoff", [0])
    backoff = backoff if isinstance(backoff, list) else [backoff]
    if any(not _is_seconds(b) or float(b) < 0 for b in backoff):
        errors.append(f"{label}: backoff must be seconds >= 0 or a list of them (got {_show(pool.get('backoff'))})")
    if "environment" in pool and not isinstance(pool["environment"], dict):
        errors.append(f"{label}: environment must be a mapping of NAME: value (got {_show(pool['environment'])})")
    init = pool.get("init")
    if "init" in pool and (not isinstance(init, str) or (init and not INIT.match(init))):
        errors.append(f"{label}: init must be MODULE:FUNCTION such as django:setup, or \"\" for none (got {_show(init)})")
    user = pool.get("user")
    if "user" in pool and (not isinstance(user, str) or not USER.match(user)):
        errors.append(f"{label}: user must be a system user name (got {_show(user)})")
    return errors


def _autoscale_errors(label: str, autoscale: Any, max_numprocs: int) -> list[str]:
    if not isinstance(autoscale, dict):
        return [f"{label}: autoscale must be a mapping such as {{min: 1, max: 8}} (got {_show(autoscale)})"]
    errors = [f"{label}: autoscale: unknown key '{key}' (known: {', '.join(AUTOSCALE_KEYS)})"
              for key in autoscale if key not in AUTOSCALE_KEYS]
    bounds = {}
    for key in ("min", "max"):
        if key not in autoscale:
            errors.append(f"{label}: autoscale.{key} is required")
        elif not _is_whole(autoscale[key]):
            errors.append(f"{label}: autoscale.{key} must be a whole number (got {_show(autoscale[key])})")
        else:
            bounds[key] = int(autoscale[key])
    if "min" in bounds and "max" in bounds:
        if not 0 <= bounds["min"] <= bounds["max"]:
            errors.append(f"{label}: autoscale needs 0 <= min <= max (got min {bounds['min']}, max {bounds['max']})")
        if not 1 <= bounds["max"] <= max_numprocs:
            errors.append(f"{label}: autoscale.max must be between 1 and {max_numprocs} (got {bounds['max']})")
    if "step" in autoscale and (not _is_whole(autoscale["step"]) or int(autoscale["step"]) < 1):
        errors.append(f"{label}: autoscale.step must be a whole number >= 1 (got {_show(autoscale['step'])})")
    if "cooldown" in autoscale and (not _is_seconds(autoscale["cooldown"]) or float(autoscale["cooldown"]) < 0):
        errors.append(f"{label}: autoscale.cooldown must be seconds >= 0 (got {_show(autoscale['cooldown'])})")
    if "target_wait" in autoscale and (not _is_seconds(autoscale["target_wait"]) or float(autoscale["target_wait"]) <= 0):
        errors.append(f"{label}: autoscale.target_wait must be a positive number of seconds (got {_show(autoscale['target_wait'])})")
    return errors


def queuefleet_pools(pools: Any, defaults: dict | None = None, worker_user: str = "queuefleet",
                     max_numprocs: Any = 64) -> dict[str, Any]:
    """Merge every pool over the defaults (and the worker user) and check every field."""
    if defaults is not None and not isinstance(defaults, dict):
        raise AnsibleFilterError(f"queuefleet.fleet.pools: the pool defaults must be a mapping (got {_show(defaults)})")
    try:
        max_numprocs = int(max_numprocs)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"queuefleet.fleet.pools: max_numprocs must be a whole number (got {_show(max_numprocs)})") from exc
    base = {**(defaults or {}), "user": worker_user}
    if "autoscale" in base:
        return {"pools": [], "processes": 0,
                "errors": ["queue_worker_pool_defaults: autoscale cannot be a default: each autoscaled pool says "
                           "autoscale: {min: N, max: M} itself (and has no numprocs)"]}
    if not isinstance(pools, list):
        return {"pools": [], "processes": 0,
                "errors": [f"queue_worker_pools must be a list of pools (got {_truncate(str(pools))})"]}
    errors: list[str] = [] if pools else ["queue_worker_pools is empty: a worker host needs at least one pool"]
    names = Counter(str(p.get("name", "")) for p in pools if isinstance(p, dict))
    errors += [f"pool names must be unique: '{name}' is used {count} times" for name, count in names.items() if count > 1]
    merged: list[dict] = []
    processes = 0
    for index, given in enumerate(pools, start=1):
        label = f"pool #{index}" + (f" '{given['name']}'" if isinstance(given, dict) and "name" in given else "")
        if not isinstance(given, dict):
            errors.append(f"{label}: must be a mapping with name, queues and numprocs (got {_truncate(str(given))})")
            continue
        pool = {**base, **given}
        if isinstance(given.get("autoscale"), dict) and "numprocs" not in given and _is_whole(given["autoscale"].get("max")):
            pool["numprocs"] = given["autoscale"].get("max")  # every slot a program; the autoscaler runs min..max of them
        pool_errors = _pool_errors(label, given, pool, max_numprocs)
        errors += pool_errors
        merged.append(pool)
        if not pool_errors:
            processes += int(pool["numprocs"])
    return {"pools": merged, "errors": errors, "processes": processes}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"pools": queuefleet_pools}
