"""One Redis connection owned by one thread, on which commands can be sent ahead.

The worker's main loop names each job in its running-job marker before it runs
the job and reads the reply only later, in bulk, so that this bookkeeping costs a
write, not a round trip. Replies come back in order on one connection; the link
keeps what is in flight so that a failure can say which commands' effects are
unknown.

Health checks are off (a PING between a command and its unread reply would read
the wrong reply); dead servers are noticed by socket timeouts and TCP keepalive.
redis-py's own retries are off too: the worker decides how to retry.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

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


@dataclass
class InFlight:
    name: str
    args: list[Any]
    on_reply: Callable[[Any], None] | None


class Announcer:
    """A write-only connection (CLIENT REPLY OFF) for one thing: naming the job this
    worker runs, before it runs it, at the cost of one write (the command is packed
    here, the server sends no reply). Errors are not seen; a broken connection is
    noticed by the next send and reopened."""

    def __init__(self, url: str, *, socket_timeout: float = SOCKET_TIMEOUT) -> None:
        pool = redis.ConnectionPool.from_url(url, health_check_interval=0, **worker_client_kwargs(socket_timeout))
        self._conn = pool.make_connection()
        self._sock: Any = None

    def set(self, key: str, value: str, ttl_ms: int) -> None:
        """SET key value PX ttl_ms."""
        if self._sock is None:
            self._conn.connect()
            self._conn.send_command("CLIENT", "REPLY", "OFF", check_health=False)
            self._sock = self._conn._sock
        k, v, t = key.encode(), value.encode(), str(ttl_ms).encode()
        command = b"*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$2\r\nPX\r\n$%d\r\n%b\r\n" % (len(k), k, len(v), v, len(t), t)
        try:
            self._sock.sendall(command)
        except OSError as exc:
            self.close()
            raise redis.ConnectionError(f"cannot write to Redis: {exc}") from None

    def close(self) -> None:
        self._sock = None
        self._conn.disconnect()


class PipelinedLink:
    def __init__(self, url: str, *, socket_timeout: float = SOCKET_TIMEOUT) -> None:
        pool = redis.ConnectionPool.from_url(url, health_check_interval=0, **worker_client_kwargs(socket_timeout))
        self._conn = pool.make_connection()
        self.socket_timeout = socket_timeout
        self._in_flight: deque[InFlight] = deque()
        self._failed: list[InFlight] = []

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def send(self, name: str, args: list[Any], on_reply: Callable[[Any], None] | None = None) -> None:
        """Send a script call now; its reply is read (and `on_reply` called) by the next `drain`."""
        self._in_flight.append(InFlight(name, args, on_reply))
        self._conn.send_command("EVALSHA", SCRIPTS[name].sha, 0, *args, check_health=False)

    def send_command(self, command: tuple[Any, ...], on_reply: Callable[[Any], None] | None = None) -> None:
        """Send a plain command now; its reply is read by the next `drain`."""
        self._in_flight.append(InFlight("", list(command), on_reply))
        self._conn.send_command(*command, check_health=False)

    def drain(self) -> None:
        """Read every outstanding reply, in order. A script the server did not know is
        loaded and its call run again once the replies sent after it are read. An
        error reply (say OOM) is raised after the rest are read; its call counts as
        not applied and is listed by `unknown`."""
        again: list[InFlight] = []
        error: redis.ResponseError | None = None
        while self._in_flight:
            item = self._in_flight[0]
            try:
                reply = self._conn.read_response()
            except NoScriptError:
                self._in_flight.popleft()
                again.append(item)
                continue
            except redis.ResponseError as exc:
                self._failed.append(self._in_flight.popleft())
                error = error or exc
                continue
            self._in_flight.popleft()
            if item.on_reply is not None:
                item.on_reply(reply)
        if error is not None:
            self._failed.extend(again)
            raise error
        for item in again:
            reply = self.call(item.name, item.args)
            if item.on_reply is not None:
                item.on_reply(reply)

    def call(self, name: str, args: list[Any]) -> Any:
        """Run a script and wait for its reply (after the outstanding ones)."""
        self.drain()
        script = SCRIPTS[name]
        try:
            return self._command("EVALSHA", script.sha, 0, *args)
        except NoScriptError:
            self._command("SCRIPT", "LOAD", script.source)
            return self._command("EVALSHA", script.sha, 0, *args)

    def command(self, *args: Any) -> Any:
        """A plain command (PING, BRPOP), after the outstanding replies."""
        self.drain()
        return self._command(*args)

    def _command(self, *args: Any) -> Any:
        self._conn.send_command(*args, check_health=False)
        return self._conn.read_response()

    def unknown(self) -> list[InFlight]:
        """After a failure: the calls whose effect is unknown (sent, reply not read) or that
        were refused. Clears them."""
        items = self._failed + list(self._in_flight)
        self._failed = []
        self._in_flight.clear()
        return items

    def close(self) -> None:
        self._in_flight.clear()
        self._failed = []
        self._conn.disconnect()
