"""The main thread's one Redis connection: scripts by SHA and plain commands, each a round trip.

Health checks are off (they would add a PING to the round trips the worker counts);
dead servers are noticed by socket timeouts and TCP keepalive. redis-py's own retries
are off too: the worker decides how to retry. A call that fails, or is broken by a
signal, leaves the connection closed (redis-py closes it on any error), so no reply of
an abandoned command can be read as the reply of the next.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from .scripts import SCRIPTS

SOCKET_TIMEOUT = 5.0  # seconds a read or write may block before the server counts as unreachable
CONNECT_TIMEOUT = 5.0


def worker_client_kwargs(socket_timeout: float = SOCKET_TIMEOUT) -> dict[str, Any]:
    """Settings for every connection a worker opens: bounded waits, no hidden retries."""
    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),
    }


class Link:
    def __init__(self, url: str, *, socket_timeout: float = SOCKET_TIMEOUT) -> None:
        pool = redis.ConnectionPool.from_url(url, health_check_interval=0, **worker_client_kwargs(socket_timeout))
        self._conn = pool.make_connection()
        self.socket_timeout = socket_timeout

    def call(self, name: str, args: list[Any]) -> Any:
        """Run a script and wait for its reply; a server that does not know it yet gets it loaded."""
        script = SCRIPTS[name]
        try:
            return self.command("EVALSHA", script.sha, 0, *args)
        except NoScriptError:
            self.command("SCRIPT", "LOAD", script.source)
            return self.command("EVALSHA", script.sha, 0, *args)

    def command(self, *args: Any) -> Any:
        """A plain command (PING, SET, BRPOP) and its reply."""
        self._conn.send_command(*args, check_health=False)
        return self._conn.read_response()

    def reset(self) -> None:
        """After a failure or an interrupted wait: start again on a fresh connection."""
        self._conn.disconnect()

    def close(self) -> None:
        self._conn.disconnect()
