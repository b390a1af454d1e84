"""The one home of the worker-pool program name rule.

A pool runs as one supervisor program per process, named ``<prefix><pool>-<generation>_<NN>``:

- ``prefix`` is ``queue_worker_program_prefix`` (``queuefleet-``);
- ``generation`` is six hex digits hashed from every setting of the pool except numprocs
  (plugins/filter/pool_programs.py), so a scaled pool keeps its names and a changed pool gets a
  new set of programs beside the old one;
- ``NN`` is the slot, two digits or more, from 00.

Everything that builds or reads such a name (the pool filter, supervisor_apply, the post-deploy
checks, the operator playbooks) goes through this module.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

GENERATION_DIGITS = 6
_TAIL = re.compile(r"^(?P<family>.+)-(?P<generation>[0-9a-f]{6})_(?P<slot>[0-9]{2,})$")


class PoolProgram(NamedTuple):
    """A pool process's program name, taken apart."""

    name: str
    family: str  # prefix + pool name: every generation of one pool shares it
    generation: str
    slot: int

    def pool(self, prefix: str) -> Optional[str]:
        """The pool's name when the family carries this prefix, else None."""
        return self.family[len(prefix):] if self.family.startswith(prefix) and len(self.family) > len(prefix) else None


def program_name(prefix: str, pool: str, generation: str, slot: int) -> str:
    """``<prefix><pool>-<generation>_<NN>``."""
    if not re.fullmatch(r"[0-9a-f]{%d}" % GENERATION_DIGITS, generation):
        raise ValueError(f"generation must be {GENERATION_DIGITS} hex digits, got {generation!r}")
    if slot < 0:
        raise ValueError(f"slot must be 0 or more, got {slot}")
    return f"{prefix}{pool}-{generation}_{slot:02d}"


def parse_program_name(name: str) -> Optional[PoolProgram]:
    """The parts of a pool program's name (a supervisor group name), or None for any other program."""
    group = name.split(":", 1)[0]
    match = _TAIL.match(group)
    if not match:
        return None
    return PoolProgram(group, match.group("family"), match.group("generation"), int(match.group("slot")))


def pool_of(name: str, prefix: str) -> Optional[str]:
    """The pool a program belongs to under this prefix, or None."""
    parsed = parse_program_name(name)
    return parsed.pool(prefix) if parsed else None
