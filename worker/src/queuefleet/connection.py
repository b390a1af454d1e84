"""Every Redis client and connection pool of the package is made here, from one URL.

Two URL forms:

- ``redis://[[user]:password@]host[:port][/db]`` (and ``rediss://``, ``unix://``): one Redis,
  read by redis-py itself;
- ``redis+sentinel://[[user]:password@]s1[:port],s2[:port],.../<master-name>[/db]``: the Redis
  that the Sentinels name as master of <master-name> (port 26379 by default). The user and
  password are the data nodes'; Sentinels that need their own give them as the query
  parameters ``sentinel_username`` and ``sentinel_password``. Every part is percent-decoded.

Both forms take queuefleet's own query parameters, which redis-py never sees:
``wait_replicas`` and ``wait_timeout_ms`` (durable push, see durable.py). Other query
parameters are redis-py's (``socket_timeout``, ``health_check_interval``, ...).

A client of a Sentinel URL asks the Sentinels for the master each time it opens a
connection, drops a connection whose server turned read-only (a demoted master), and, while
in use, asks again at most every MASTER_CHECK_INTERVAL: a master demoted by a switchover keeps
taking writes for seconds (until the Sentinels reconfigure it), and whatever is written there
is lost, so connections to it are closed as soon as the Sentinels name another master.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import URL_QUERY_ARGUMENT_PARSERS
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379
MASTER_CHECK_INTERVAL = 1.0  # seconds between asking the Sentinels whether the master moved, while in use
SENTINELS_DOWN_PAUSE = 9.0  # extra seconds before asking again when no Sentinel named a master
SENTINEL_TIMEOUT = 1.0  # seconds to connect to and hear from one Sentinel: a dead one must not stall discovery
OWN_PARAMS = ("wait_replicas", "wait_timeout_ms")
SENTINEL_PARAMS = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True)
class SentinelTarget:
    """Where a ``redis+sentinel://`` URL points."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # redis-py's own query parameters, parsed


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() == SENTINEL_SCHEME


def own_params(url: str) -> dict[str, str]:
    """queuefleet's own query parameters of `url` (wait_replicas, wait_timeout_ms)."""
    query = urlsplit(url).query
    return {k: v for k, v in parse_qsl(query, keep_blank_values=True) if k in OWN_PARAMS}


def without_own_params(url: str) -> str:
    """`url` without queuefleet's own query parameters (what redis-py may read)."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in OWN_PARAMS]
    return urlunsplit(parts._replace(query=urlencode(kept, quote_via=quote)))


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The Sentinels, master name, db and credentials of a ``redis+sentinel://`` URL; ValueError if malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    rest, _, _fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_host_port(item) for item in hosts.split(","))
    parts = [unquote(p) for p in path.split("/")] if slash else []
    if not parts or not parts[0]:
        raise ValueError(f"{SENTINEL_SCHEME}:// URL names no master: {SENTINEL_SCHEME}://host:26379,.../<master-name>/<db>")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] and not parts[1].isdigit()):
        raise ValueError(f"{SENTINEL_SCHEME}:// URL path must be /<master-name>/<db>, not /{path}")
    db = int(parts[1]) if len(parts) == 2 and parts[1] else 0
    params = dict(parse_qsl(query, keep_blank_values=True))
    options: dict[str, Any] = {}
    for name, value in params.items():
        if name in OWN_PARAMS or name in SENTINEL_PARAMS:
            continue
        parser = URL_QUERY_ARGUMENT_PARSERS.get(name)
        if parser is None:
            raise ValueError(f"unknown query parameter {name!r} in a {SENTINEL_SCHEME}:// URL")
        try:
            options[name] = parser(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid value for {name!r} in the Redis URL: {exc}") from None
    return SentinelTarget(sentinels, parts[0], db, username, password, params.get("sentinel_username") or None,
                          params.get("sentinel_password") or None, options)


def _host_port(item: str) -> tuple[str, int]:
    item = unquote(item.strip())
    if not item:
        raise ValueError(f"{SENTINEL_SCHEME}:// URL has an empty Sentinel address")
    if item.startswith("["):
        host, _, tail = item[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    elif item.count(":") == 1:
        host, _, port = item.partition(":")
    else:
        host, port = item, ""
    if not host or (port and not port.isdigit()) or not 0 < int(port or SENTINEL_PORT) < 65536:
        raise ValueError(f"bad Sentinel address {item!r}: host[:port]")
    return host, int(port or SENTINEL_PORT)


def check_url(url: str) -> None:
    """Raise ValueError (or TypeError) when `url` is not a Redis URL the package can use."""
    from .durable import Durability

    Durability.from_url(url)
    if is_sentinel_url(url):
        parse_sentinel_url(url)
    else:
        redis.ConnectionPool.from_url(without_own_params(url))


def sentinel_for(target: SentinelTarget, **kwargs: Any) -> Sentinel:
    """A redis-py Sentinel manager for `target`; `kwargs` are the data connections' settings."""
    # No retries: a Sentinel that does not answer at once is skipped for the next (discovery
    # asks them in turn), instead of costing several timeouts on every connect.
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT,
                                       "socket_keepalive": True, "retry": Retry(NoBackoff(), 0)}
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    if target.sentinel_username is not None:
        sentinel_kwargs["username"] = target.sentinel_username
    return Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)


class FollowingPool(SentinelConnectionPool):
    """redis-py's SentinelConnectionPool that also notices a master that moved while its
    connections stayed open (see the module's docstring)."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)
        self._checked = 0.0
        self._check_lock = threading.Lock()

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        self.master_moved()
        return super().get_connection(*args, **kwargs)

    def master_moved(self, connection: Any = None, *, now_: bool = False) -> bool:
        """Ask the Sentinels (at most every MASTER_CHECK_INTERVAL) who the master is; idle pooled
        connections to another server are closed. True when `connection` (one made by this pool
        but kept outside it, as the worker's link does) is connected to a server that is not
        the master. With `now_`, ask at once."""
        now = time.monotonic()
        if (now_ or now - self._checked >= MASTER_CHECK_INTERVAL) and self._check_lock.acquire(blocking=False):
            try:
                self._checked = now
                self.get_master_address()  # redis-py closes idle connections when the address changed
            except MasterNotFoundError:
                # No Sentinel answers or none names a master: go on with the connections we have,
                # and ask less often (every call would wait for the Sentinels' timeouts).
                self._checked = now + SENTINELS_DOWN_PAUSE
            finally:
                self._check_lock.release()
        if connection is None or getattr(connection, "_sock", None) is None or self.master_address is None:
            return False
        return (connection.host, connection.port) != tuple(self.master_address)


def pool_from_url(url: str, **kwargs: Any) -> redis.ConnectionPool:
    """A connection pool for `url` (a SentinelConnectionPool for a Sentinel URL); `kwargs` are
    connection settings (socket_timeout, retry, health_check_interval, ...)."""
    if not is_sentinel_url(url):
        return redis.ConnectionPool.from_url(without_own_params(url), **kwargs)
    target = parse_sentinel_url(url)
    settings: dict[str, Any] = {**target.options, "db": target.db}
    if target.password is not None:
        settings["password"] = target.password
    if target.username is not None:
        settings["username"] = target.username
    settings.update(kwargs)
    return FollowingPool(target.service, sentinel_for(target, **settings), is_master=True, **settings)


def client_from_url(url: str, **kwargs: Any) -> redis.Redis:
    """A redis-py client with timeouts, so a dead or blackholed server raises instead of hanging."""
    kwargs.setdefault("socket_connect_timeout", 5)
    kwargs.setdefault("socket_timeout", 10)
    kwargs.setdefault("socket_keepalive", True)
    kwargs.setdefault("health_check_interval", 30)
    return redis.Redis(connection_pool=pool_from_url(url, **kwargs))


def sentinel_of(client: redis.Redis) -> tuple[Sentinel, str] | None:
    """The Sentinel manager and master name behind `client`, or None for a plain Redis client."""
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        return pool.sentinel_manager, pool.service_name
    return None


def redacted_url(url: str) -> str:
    """The URL without its passwords (the data nodes' and the Sentinels'), for logs and the failed_jobs table."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, hash_, fragment = rest.partition("#")
    rest, question, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, _secret = userinfo.partition(":")
        if colon:
            userinfo = f"{user}:***"
        netloc = f"{userinfo}@{hosts}"
    if query:
        pairs = [part.partition("=") for part in query.split("&")]
        query = "&".join(f"{k}{eq}***" if "password" in unquote(k).lower() and eq else f"{k}{eq}{v}" for k, eq, v in pairs)
    return f"{scheme}://{netloc}{slash}{path}{question}{query}{hash_}{fragment}"
