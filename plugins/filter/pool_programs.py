"""Supervisor program names of worker pools.

A pool runs as one supervisor program per process, named
``<prefix><pool>-<generation>_<NN>``. The generation is a hash of everything that
shapes the program except numprocs, so:

- changing numprocs adds or removes programs and leaves the others alone;
- any other change (queues, timeout, tries, memory, sleep, backoff, environment,
  the template itself) gives every process a new name, which supervisor sees as
  new programs beside the old ones: they start first, then the old ones drain.
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
    shape = {key: value for key, value in pool.items() if key != "numprocs"}
    blob = json.dumps({"pool": shape, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:GENERATION_DIGITS]


def queue_worker_pool_programs(pool: dict[str, Any], prefix: str, settings: dict[str, Any]) -> list[str]:
    """The supervisor program names of a pool's processes, slot 00 first."""
    generation = queue_worker_pool_generation(pool, settings)
    try:
        count = int(pool["numprocs"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"queue_worker_pool_programs: pool {pool.get('name')!r} has no usable numprocs") from exc
    return [program_name(prefix, pool["name"], generation, slot) for slot in range(count)]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "queue_worker_pool_generation": queue_worker_pool_generation,
            "queue_worker_pool_programs": queue_worker_pool_programs,
        }
