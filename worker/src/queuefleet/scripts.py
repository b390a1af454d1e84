"""The Lua scripts behind every Redis state change (the key layout lives in lua/common.lua).

Each script's SHA1 is computed here, so a call can be sent by EVALSHA before any
reply was read (the worker's link pipelines); a server that does not know a script
yet answers NOSCRIPT and the script is loaded and run again.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any, Sequence

import redis
from redis.exceptions import NoScriptError

NAMES = (
    "push", "push_unique", "fetch", "ack", "release", "extend", "rewrite", "reap", "heartbeat", "deregister",
    "restart", "status", "sizes", "clear", "schedule", "stats",
)


def _source(name: str) -> str:
    lua = resources.files("queuefleet") / "lua"
    return (lua / "common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class Script:
    def __init__(self, name: str) -> None:
        self.name = name
        self.source = _source(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


class Scripts:
    """Runs scripts by SHA, loading them on NOSCRIPT (first use, or after a Redis restart)."""

    def __init__(self) -> None:
        self.by_name = {name: Script(name) for name in NAMES}

    def __getitem__(self, name: str) -> Script:
        return self.by_name[name]

    def run(self, client: "redis.Redis | Any", name: str, args: list[Any]) -> Any:
        script = self.by_name[name]
        try:
            return client.evalsha(script.sha, 0, *args)
        except NoScriptError:
            client.script_load(script.source)
            return client.evalsha(script.sha, 0, *args)

    def run_then_wait(self, client: "redis.Redis | Any", calls: Sequence[tuple[str, list[Any]]], replicas: int,
                      timeout_ms: int) -> tuple[list[Any], int]:
        """Run scripts, then `WAIT replicas timeout_ms`, in one pipeline: one connection, so WAIT counts
        the replicas that have these very writes. Returns the scripts' replies and WAIT's count. Scripts
        the server does not know are loaded and the whole pipeline runs again (the push scripts are
        idempotent per job id: a push that ran is not pushed twice)."""
        for attempt in range(2):
            with client.pipeline(transaction=False) as pipe:
                for name, args in calls:
                    pipe.evalsha(self.by_name[name].sha, 0, *args)
                pipe.execute_command("WAIT", replicas, timeout_ms)
                replies = pipe.execute(raise_on_error=False)
            unknown = {calls[i][0] for i, reply in enumerate(replies[:-1]) if isinstance(reply, NoScriptError)}
            if unknown and attempt == 0:
                for name in unknown:
                    client.script_load(self.by_name[name].source)
                continue
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return list(replies[:-1]), int(replies[-1])
        raise AssertionError("unreachable")


SCRIPTS = Scripts()
