"""The main thread's one Redis connection: scripts by SHA and plain commands, each a round trip.

Health checks are off (they would add a PING to the round trips the worker counts);
dead servers are noticed by socket timeouts and TCP keepalive. redis-py's own retries
are off too: the worker decides how to retry. A call that fails, or is broken by a
signal, leaves the connection closed (redis-py closes it on any error), so no reply of
an abandoned command can be read as the reply of the next.

With a redis+sentinel:// URL the connection finds the master through the Sentinels each
time it connects, and is closed when they name another master (connection.py).
"""

from __future__ import annotations

from typing import Any

from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from .connection import pool_from_url
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
        # A Sentinel URL gives a connection that asks the Sentinels for the master each time it
        # connects: after a failover, reset() and the next call reach the new master.
        pool = pool_from_url(url, health_check_interval=0, **worker_client_kwargs(socket_timeout))
        self._pool = pool
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

    def call_and_wait(self, name: str, args: list[Any], replicas: int, timeout_ms: int) -> tuple[Any, int]:
        """Run a script and `WAIT replicas timeout_ms` after it, sent together: the reply and how many
        replicas have this connection's writes (durable mode, see durable.py)."""
        script = SCRIPTS[name]
        self._follow()
        self._conn.send_packed_command(self._conn.pack_commands([("EVALSHA", script.sha, 0, *args),
                                                                 ("WAIT", replicas, timeout_ms)]), check_health=False)
        try:
            reply = self._conn.read_response()
        except NoScriptError:
            self._conn.read_response()
            self.command("SCRIPT", "LOAD", script.source)
            return self.call_and_wait(name, args, replicas, timeout_ms)
        except BaseException:
            self._conn.disconnect()  # the WAIT reply is still on its way: never read it as another's
            raise
        return reply, int(self._conn.read_response())

    @property
    def follows_sentinels(self) -> bool:
        return hasattr(self._pool, "master_moved")

    def master_moved(self) -> bool:
        """Ask the Sentinels now whether the master is another server than this link's (False for a plain URL)."""
        moved = getattr(self._pool, "master_moved", None)
        return bool(moved is not None and moved(self._conn, now_=True))

    def _follow(self) -> None:
        moved = getattr(self._pool, "master_moved", None)
        if moved is not None:
            if moved(self._conn):
                self._conn.disconnect()  # the Sentinels name another master: reconnect to it
            if getattr(self._conn, "_sock", None) is None:
                # A Sentinel-managed connection finds the master in connect(), which send_command
                # would skip (it opens a socket to the connection's last address itself).
                self._conn.connect()

    def command(self, *args: Any) -> Any:
        """A plain command (PING, SET, BRPOP) and its reply."""
        self._follow()
        self._conn.send_command(*args, check_health=False)
        return self._conn.read_response()

    def reset(self) -> None:
        """After a failure or an interrupted wait: start again on a fresh connection."""
        self._conn.disconnect()

    def close(self) -> None:
        self._conn.disconnect()
