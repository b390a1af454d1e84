"""The `queue` group: its global options, the Context every command gets, and the helpers the commands share."""

from __future__ import annotations

import functools
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click
import redis

from ..connection import check_url
from ..database import DATABASE_TIMEOUT, DEFAULT_DATABASE_URL, DatabaseUnavailable
from ..payload import MAX_PAYLOAD, check_queue_name, parse_backoff
from ..queue import DEFAULT_PREFIX, DEFAULT_REDIS_URL, Queue, redacted_url

if TYPE_CHECKING:
    from ..failed import FailedJobStore

EXIT_UNAVAILABLE = 1


class Context:
    def __init__(self, redis_url: str, database_url: str, prefix: str, database_timeout: float = DATABASE_TIMEOUT,
                 max_payload: int = MAX_PAYLOAD) -> None:
        self.redis_url = redis_url
        self.database_url = database_url
        self.prefix = prefix
        self.database_timeout = database_timeout
        self.max_payload = max_payload

    def queue(self) -> Queue:
        q = Queue.from_url(self.redis_url, prefix=self.prefix, max_payload=self.max_payload)
        try:
            q.redis.ping()
        except redis.AuthenticationError as exc:
            die(f"cannot use Redis at {redacted_url(self.redis_url)}: authentication failed ({exc})")
        except redis.RedisError as exc:
            die(f"cannot connect to Redis at {redacted_url(self.redis_url)}: {exc}")
        return q

    def store(self, *, check: bool = True) -> FailedJobStore:
        from ..failed import FailedJobStore  # SQLAlchemy: only for the commands that use the database

        try:
            store = FailedJobStore(self.database_url, timeout=self.database_timeout)
        except Exception as exc:  # noqa: BLE001 - bad URL, missing driver
            die(f"bad database URL {redacted_url(self.database_url)}: {exc}")
        if check:
            try:
                store.check()
            except DatabaseUnavailable as exc:
                die(f"failed-jobs database {redacted_url(self.database_url)}: {exc}")
        return store


def die(message: str, code: int = EXIT_UNAVAILABLE) -> None:
    click.echo(f"queue: {message}", err=True)
    sys.exit(code)


def redis_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a Redis outage in the middle of a command into one clear line."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except redis.RedisError as exc:
            ctx = click.get_current_context().find_object(Context)
            where = redacted_url(ctx.redis_url) if ctx else "Redis"
            die(f"Redis error at {where}: {exc}")

    return wrapper


FROM_ENV_FILE: set[str] = set()


def db_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a database failure in the middle of a command into one clear line."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return func(*args, **kwargs)
        except SQLAlchemyError as exc:
            ctx = click.get_current_context().find_object(Context)
            where = redacted_url(ctx.database_url) if ctx else "the database"
            die(f"database error at {where}: {str(getattr(exc, 'orig', None) or exc).splitlines()[0]}")

    return wrapper


def _load_env_file(ctx: click.Context, _param: click.Parameter, path: str | None) -> str | None:
    """KEY=VALUE lines (as the deploy writes them); the process environment wins."""
    if not path:
        return path
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        if not sep or not key.isidentifier():
            raise click.BadParameter(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if key not in os.environ:
            os.environ[key] = value
            FROM_ENV_FILE.add(key)
    return path


def installed_release() -> str:
    """The release id the running virtualenv was installed as (releases/<id>/RELEASE), if any."""
    try:
        return (Path(sys.prefix) / "RELEASE").read_text().strip()
    except OSError:
        return ""


def positive(name: str, allow_zero: bool = False) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def check(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, float) and not math.isfinite(value):
            raise click.BadParameter(f"{name} must be a finite number, got {value}")
        if value < 0 or (value == 0 and not allow_zero):
            raise click.BadParameter(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value:g}")
        return value

    return check


def queue_names(_ctx: click.Context, _param: click.Parameter, value: str) -> list[str]:
    names = [q.strip() for q in value.split(",") if q.strip()]
    if not names:
        raise click.BadParameter("give at least one queue name")
    try:
        for name in names:
            check_queue_name(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if len(set(names)) != len(names):
        raise click.BadParameter(f"a queue is listed twice: {value}")
    return names


def backoff_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return parse_backoff(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def check_redis_url(url: str) -> None:
    """Refuse a URL the package cannot use (redis://, rediss://, unix:// or redis+sentinel://), up front."""
    try:
        check_url(url)
    except (ValueError, TypeError) as exc:
        die(f"bad Redis URL {redacted_url(url)}: {exc}")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--env-file",
    envvar="QUEUEFLEET_ENV_FILE",
    is_eager=True,
    expose_value=False,
    callback=_load_env_file,
    help="Read KEY=VALUE settings from this file first (the deploy's shared env file).",
)
@click.option("--redis-url", envvar="QUEUEFLEET_REDIS_URL", default=DEFAULT_REDIS_URL, show_default=True, help="Redis holding the queues.")
@click.option(
    "--database-url",
    envvar="QUEUEFLEET_DATABASE_URL",
    default=DEFAULT_DATABASE_URL,
    show_default=True,
    help="SQLAlchemy URL of the failed-jobs database (mysql+pymysql://... in production).",
)
@click.option("--database-timeout", envvar="QUEUEFLEET_DATABASE_TIMEOUT", default=DATABASE_TIMEOUT, show_default=True,
              type=float, callback=positive("--database-timeout"), metavar="SECONDS",
              help="Longest a MySQL/MariaDB connect, read or write may take before the call fails.")
@click.option("--prefix", envvar="QUEUEFLEET_PREFIX", default=DEFAULT_PREFIX, show_default=True, help="Redis key prefix.")
@click.option("--max-payload", envvar="QUEUEFLEET_MAX_PAYLOAD", default=MAX_PAYLOAD, show_default=True,
              type=click.IntRange(min=1024), metavar="BYTES",
              help="Largest job payload (its JSON, in bytes) that push and retry write and a worker parses.")
@click.version_option(package_name="queuefleet")
@click.pass_context
def main(ctx: click.Context, redis_url: str, database_url: str, database_timeout: float, prefix: str,
         max_payload: int) -> None:
    """queuefleet: a Redis job queue and worker, with failed jobs in SQL."""
    ctx.obj = Context(redis_url, database_url, prefix, database_timeout, max_payload)
