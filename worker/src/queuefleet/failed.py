"""The failed-jobs store: a SQL table, SQLite locally, MySQL/MariaDB in production.

A long-lived worker must survive the server closing idle connections (MySQL's
"server has gone away"): connections are pre-pinged on checkout and recycled
well before a typical wait_timeout, and a write that still hits a dead
connection is retried once on a fresh one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    func,
    inspect,
    select,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

DEFAULT_DATABASE_URL = "sqlite:///queuefleet.sqlite3"

metadata = MetaData()
failed_jobs = Table(
    "failed_jobs",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("connection", String(255), nullable=False),
    Column("queue", String(255), nullable=False),
    Column("payload", Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb"), nullable=False),
    Column("exception", Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb"), nullable=False),
    Column("failed_at", DateTime, nullable=False, server_default=func.current_timestamp()),
)


class DatabaseUnavailable(Exception):
    """The failed-jobs database cannot be reached or is not migrated."""


@dataclass
class FailedJob:
    id: int
    uuid: str
    connection: str
    queue: str
    payload: str
    exception: str
    failed_at: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uuid": self.uuid,
            "connection": self.connection,
            "queue": self.queue,
            "payload": self.payload,
            "exception": self.exception,
            "failed_at": self.failed_at.isoformat(sep=" "),
        }


def make_engine(url: str) -> Engine:
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "future": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_recycle"] = 280
        kwargs["pool_size"] = 2
        kwargs["max_overflow"] = 2
        if url.startswith("mysql"):
            kwargs["connect_args"] = {"connect_timeout": 5}
    return create_engine(url, **kwargs)


def _is_disconnect(exc: DBAPIError) -> bool:
    return bool(getattr(exc, "connection_invalidated", False)) or isinstance(exc, OperationalError)


class FailedJobStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)

    def migrate(self) -> bool:
        """Create the table if missing; True when it was created."""
        existed = inspect(self.engine).has_table("failed_jobs")
        metadata.create_all(self.engine, checkfirst=True)
        return not existed

    def check(self) -> None:
        """Fail with a clear reason unless the database answers and is migrated."""
        try:
            with self.engine.connect() as conn:
                if not inspect(conn).has_table("failed_jobs"):
                    raise DatabaseUnavailable("table failed_jobs does not exist: run `queue migrate` first")
        except DBAPIError as exc:
            raise DatabaseUnavailable(f"cannot reach the database: {_first_line(exc.orig or exc)}") from None

    def _write(self, statement: Any) -> Any:
        for attempt in (1, 2):
            try:
                with self.engine.begin() as conn:
                    return conn.execute(statement)
            except DBAPIError as exc:
                if attempt == 2 or not _is_disconnect(exc):
                    raise

    def record(self, *, uuid: str, connection: str, queue: str, payload: str, exception: str) -> None:
        """Store a failed job. Recording the same uuid twice is a no-op (at-least-once)."""
        try:
            self._write(
                failed_jobs.insert().values(
                    uuid=uuid,
                    connection=connection,
                    queue=queue,
                    payload=payload,
                    exception=exception,
                    failed_at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
                )
            )
        except IntegrityError:
            pass

    def all(self, *, queue: str | None = None) -> list[FailedJob]:
        query = select(failed_jobs).order_by(failed_jobs.c.id)
        if queue:
            query = query.where(failed_jobs.c.queue == queue)
        with self.engine.connect() as conn:
            return [FailedJob(**row._mapping) for row in conn.execute(query)]

    def find(self, ids: Sequence[str]) -> tuple[list[FailedJob], list[str]]:
        """Rows matching numeric ids or uuids, and the ids that matched nothing."""
        numeric = [int(i) for i in ids if i.isdigit()]
        uuids = [i for i in ids if not i.isdigit()]
        query = select(failed_jobs).where(failed_jobs.c.id.in_(numeric) | failed_jobs.c.uuid.in_(uuids))
        with self.engine.connect() as conn:
            rows = [FailedJob(**row._mapping) for row in conn.execute(query.order_by(failed_jobs.c.id))]
        found = {str(r.id) for r in rows} | {r.uuid for r in rows}
        return rows, [i for i in ids if i not in found]

    def forget(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        if not ids:
            return 0
        return self._write(delete(failed_jobs).where(failed_jobs.c.id.in_(ids))).rowcount

    def flush(self, hours: float | None = None) -> int:
        statement = delete(failed_jobs)
        if hours is not None:
            cutoff = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(hours=hours)
            statement = statement.where(failed_jobs.c.failed_at < cutoff)
        return self._write(statement).rowcount

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(failed_jobs)).scalar_one())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
