"""The Lua scripts behind every multi-key state change, loaded once per client."""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError


def _source(name: str) -> str:
    lua = resources.files("queuefleet") / "lua"
    return (lua / "common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class Scripts:
    """Runs scripts by SHA and loads them on first use (or after a Redis restart)."""

    NAMES = ("push", "fetch", "ack", "release", "extend", "restart")

    def __init__(self) -> None:
        self._source = {name: _source(name) for name in self.NAMES}
        self._sha: dict[str, str] = {}

    def run(self, client: "redis.Redis | Any", name: str, args: list[Any]) -> Any:
        sha = self._sha.get(name)
        if sha is not None:
            try:
                return client.evalsha(sha, 0, *args)
            except NoScriptError:
                pass
        self._sha[name] = client.script_load(self._source[name])
        return client.evalsha(self._sha[name], 0, *args)


SCRIPTS = Scripts()
