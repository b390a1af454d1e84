"""Supervisor program names of worker pools.

A pool runs as one supervisor program per process, named
``<prefix><pool>-<generation>_<NN>``. The generation is a hash of everything that
shapes the program except numprocs, so:

- changing numprocs adds or removes programs and leaves the others alone;
- any other change (queues, timeout, tries, memory, sleep, backoff, environment,
  the template itself) gives every process a new name, which supervisor sees as
  new programs beside the old ones: they start first, then the old ones drain.

An autoscaled pool has one program per slot up to ``autoscale.max``; its ``autoscale``
settings stay out of the generation too, so changing min, max, step, cooldown or target_wait
renames nothing and restarts no process. Only whether it autoscales is in it: a pool that
switches between ``numprocs`` and ``autoscale`` gets new programs beside its old ones. Its first ``min`` programs are its floor (the ones a
deploy must find running); ``queue_worker_autoscale_config`` is the file `queue autoscale` reads.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.queuefleet.fleet.plugins.module_utils.programs import GENERATION_DIGITS, program_name


def queue_worker_pool_generation(pool: dict[str, Any], settings: dict[str, Any]) -> str:
    """Six hex digits naming this pool's settings (all but numprocs) together with the role's settings."""
    if not isinstance(pool, dict) or "name" not in pool:
        raise AnsibleFilterError("queue_worker_pool_generation: expected a pool (a dict with a name)")
    shape = {key: value for key, value in pool.items() if key not in ("numprocs", "autoscale")}
    if isinstance(pool.get("autoscale"), dict):
        # Fixed or autoscaled is part of the shape (autostart differs): switching renames every
        # program, so the new ones start beside the old ones, which drain, instead of supervisor
        # stopping and re-adding each changed program in turn while the deploy waits.
        shape["autoscaled"] = True
    blob = json.dumps({"pool": shape, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:GENERATION_DIGITS]


def queue_worker_pool_programs(pool: dict[str, Any], prefix: str, settings: dict[str, Any], floor: bool = False) -> list[str]:
    """The supervisor program names of a pool's processes, slot 00 first. With ``floor``, only those
    that must run: all of them, or an autoscaled pool's first ``autoscale.min``."""
    generation = queue_worker_pool_generation(pool, settings)
    try:
        count = int(pool["numprocs"])
        if floor and isinstance(pool.get("autoscale"), dict):
            count = min(count, int(pool["autoscale"]["min"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"queue_worker_pool_programs: pool {pool.get('name')!r} has no usable numprocs") from exc
    return [program_name(prefix, pool["name"], generation, slot) for slot in range(count)]


def queue_worker_autoscale_config(pools: list[dict[str, Any]], prefix: str, settings: dict[str, Any],
                                  interval: float, supervisor_url: str) -> dict[str, Any]:
    """The file `queue autoscale --config` reads, for the autoscaled pools among ``pools`` (the
    merged pool model); ``{"pools": []}`` when none autoscales."""
    scaled = []
    for pool in pools:
        rule = pool.get("autoscale")
        if not isinstance(rule, dict):
            continue
        entry = {"name": pool["name"], "queues": list(pool["queues"]), "min": int(rule["min"]), "max": int(rule["max"]),
                 "programs": queue_worker_pool_programs(pool, prefix, settings)}
        for key, convert in (("step", int), ("cooldown", float), ("target_wait", float)):
            if key in rule:
                entry[key] = convert(rule[key])
        scaled.append(entry)
    return {"interval": float(interval), "supervisor": supervisor_url, "pools": scaled}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "queue_worker_pool_generation": queue_worker_pool_generation,
            "queue_worker_pool_programs": queue_worker_pool_programs,
            "queue_worker_autoscale_config": queue_worker_autoscale_config,
        }
