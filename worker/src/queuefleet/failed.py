"""The failed-jobs store: a SQL table, SQLite locally, MySQL/MariaDB in production.

A long-lived worker must survive the server closing idle connections (MySQL's
"server has gone away"): connections are pre-pinged on checkout and recycled
well before a typical wait_timeout, and a write that still hits a dead
connection is retried once on a fresh one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

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
    select,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from .database import DATABASE_TIMEOUT, DatabaseUnavailable, StoreFailed
from .payload import KEEP_PAYLOAD, truncated_payload

if TYPE_CHECKING:
    from .migrations import Migration

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


UUID_CHARS = 36  # width of the uuid column
KEEP_EXCEPTION = 64 * 1024


def row_uuid(job_id: str) -> str:
    """The uuid column value for a job id: the id itself, or a hash of an id too long for the column."""
    if len(job_id) <= UUID_CHARS:
        return job_id
    return "sha1-" + hashlib.sha1(job_id.encode("utf-8", "surrogatepass")).hexdigest()[: UUID_CHARS - 5]


def duplicate_uuid(uuid: str, payload: str) -> str:
    """Where the failure of a second job with a reused id is stored: a hash of the id and the payload."""
    digest = hashlib.sha1(f"{uuid}\0{payload}".encode("utf-8", "surrogatepass")).hexdigest()
    return "dup-" + digest[: UUID_CHARS - 4]


def _push_of(payload: str) -> tuple[str, float] | None:
    """(id, pushed_at) of a payload (or of a truncated one's stand-in), None when it has none."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        return None
    pushed_at = doc.get("pushed_at")
    if isinstance(pushed_at, bool) or not isinstance(pushed_at, (int, float)):
        return None
    return doc["id"], float(pushed_at)


def same_push(stored: str, payload: str) -> bool:
    """Whether two failed-job payloads are one push of a job (stored again after a crash, even with
    another failed attempt noted), not two jobs that share a producer-given id."""
    a, b = _push_of(stored), _push_of(payload)
    if a is None or b is None:
        return stored == payload
    return a == b


def _how(kind: str, uuid: str, stored_as: str) -> str:
    return kind if stored_as == uuid else f"{kind} as {stored_as}"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def describe_db_error(exc: BaseException) -> str:
    """One line about a database error that never carries the statement's parameters
    (SQLAlchemy's own message appends them: job data)."""
    orig = getattr(exc, "orig", None)
    source = orig if orig is not None else exc
    args = getattr(source, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        text = f"({args[0]}) {args[1]}"
    elif orig is not None:
        text = str(orig)
    else:
        text = exc.__class__.__name__
    text = " ".join(text.split())
    return f"{source.__class__.__name__}: {text[:300]}"


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


def make_engine(url: str, timeout: float = DATABASE_TIMEOUT) -> Engine:
    """An engine whose every call is bounded: on MySQL/MariaDB `timeout` seconds to connect, and
    for each read and write (PyMySQL's connect_timeout, read_timeout, write_timeout; a value in
    the URL's query wins), so a blackholed server fails the call instead of hanging the worker."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "future": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_recycle"] = 280
        kwargs["pool_size"] = 2
        kwargs["max_overflow"] = 2
        kwargs["pool_timeout"] = timeout
        if url.startswith("mysql"):
            given = make_url(url).query
            kwargs["connect_args"] = {key: timeout for key in ("connect_timeout", "read_timeout", "write_timeout")
                                      if key not in given}
    try:
        return create_engine(url, **kwargs)
    except ModuleNotFoundError as exc:
        if exc.name != "pymysql":
            raise
        raise ModuleNotFoundError(f"{exc}: install the mysql extra, pip install 'queuefleet[mysql]'", name=exc.name) from exc


def _is_disconnect(exc: DBAPIError) -> bool:
    return bool(getattr(exc, "connection_invalidated", False)) or isinstance(exc, OperationalError)


class FailedJobStore:
    def __init__(self, url: str, *, timeout: float = DATABASE_TIMEOUT) -> None:
        self.url = url
        self.engine = make_engine(url, timeout)

    def migrate(self) -> list[Migration]:
        """Apply the schema migrations the database lacks (migrations.py); returns those applied."""
        from .migrations import migrate

        return migrate(self.engine)

    def check(self) -> None:
        """Fail with a clear reason unless the database answers and is migrated for this release."""
        from .migrations import current_version, latest

        try:
            with self.engine.connect() as conn:
                version = current_version(conn)
        except DBAPIError as exc:
            raise DatabaseUnavailable(f"cannot reach the database: {_first_line(exc.orig or exc)}") from None
        if version == 0:
            raise DatabaseUnavailable("table failed_jobs does not exist: run `queue migrate` first")
        if version < latest():
            raise DatabaseUnavailable(f"table failed_jobs is at schema version {version}, this release needs {latest()}: "
                                      "run `queue migrate`")

    def _write(self, statement: Any) -> Any:
        for attempt in (1, 2):
            try:
                with self.engine.begin() as conn:
                    return conn.execute(statement)
            except DBAPIError as exc:
                if attempt == 2 or not _is_disconnect(exc):
                    raise

    def _insert(self, uuid: str, connection: str, queue: str, payload: str, exception: str) -> str:
        """Insert one row; returns the uuid it was stored under. A row already stored under
        `uuid` is either this very failure (stored before a crash kept it from being acked:
        nothing to do) or another job that was given the same id by its producer (reused
        after the id was forgotten): that one is stored beside it, under `dup-<hash>`."""
        values = {"connection": connection[:255], "queue": queue[:255], "payload": payload, "exception": exception}
        for candidate in (uuid, duplicate_uuid(uuid, payload)):
            try:
                self._write(failed_jobs.insert().values(uuid=candidate, failed_at=_utcnow(), **values))
                return candidate
            except IntegrityError:
                stored = self._payload_of(candidate)
                if stored is None or same_push(stored, payload):
                    return candidate  # already stored (or forgotten meanwhile): at least once, never twice
        raise StoreFailed(f"the failed job {uuid} and its duplicate-id form are both taken by other jobs")

    def _payload_of(self, uuid: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(failed_jobs.c.payload).where(failed_jobs.c.uuid == uuid)).scalar_one_or_none()

    def record(self, *, uuid: str, connection: str, queue: str, payload: str, exception: str) -> str:
        """Store a failed job; returns "stored", "truncated" (and " as <uuid>" when its id was
        taken by another job, see `_insert`). Recording the same failure twice stores one row.
        A row the database refuses as it is (a payload over MariaDB's max_allowed_packet,
        text it cannot hold) is stored again with the payload cut to its start (as JSON
        saying so) and the error cut too. Raises StoreFailed, with a message fit for a log
        line, when even that cannot be stored (database down)."""
        uuid = row_uuid(uuid)
        try:
            return _how("stored", uuid, self._insert(uuid, connection, queue, payload, exception))
        except DBAPIError as exc:
            first = exc
        if _is_disconnect(first) and len(payload) + len(exception) < KEEP_PAYLOAD:
            raise StoreFailed(describe_db_error(first))  # a small row: the database is down, not the row too big
        small_exception = exception if len(exception) <= KEEP_EXCEPTION else exception[:KEEP_EXCEPTION] + "\n... (cut)"
        small_payload = truncated_payload(payload) if len(payload) > KEEP_PAYLOAD or not payload.isascii() else payload
        try:
            stored_as = self._insert(uuid, connection, queue, small_payload,
                                     small_exception.encode("ascii", "backslashreplace").decode())
            return _how("truncated", uuid, stored_as)
        except DBAPIError as exc:
            raise StoreFailed(f"{describe_db_error(exc)} (first attempt: {describe_db_error(first)})") from None

    def all(self, *, queue: str | None = None) -> list[FailedJob]:
        query = select(failed_jobs).order_by(failed_jobs.c.id)
        if queue:
            query = query.where(failed_jobs.c.queue == queue)
        with self.engine.connect() as conn:
            return [FailedJob(**row._mapping) for row in conn.execute(query)]

    def recent(self, limit: int) -> list[FailedJob]:
        """The `limit` most recently failed jobs, newest first."""
        query = select(failed_jobs).order_by(failed_jobs.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [FailedJob(**row._mapping) for row in conn.execute(query)]

    def find(self, ids: Sequence[str]) -> tuple[list[FailedJob], list[str]]:
        """Rows matching numeric ids or uuids, and the ids that matched nothing."""
        numeric = [int(i) for i in ids if i.isdigit()]
        uuids = [row_uuid(i) for i in ids if not i.isdigit()]
        query = select(failed_jobs).where(failed_jobs.c.id.in_(numeric) | failed_jobs.c.uuid.in_(uuids))
        with self.engine.connect() as conn:
            rows = [FailedJob(**row._mapping) for row in conn.execute(query.order_by(failed_jobs.c.id))]
        found = {str(r.id) for r in rows} | {r.uuid for r in rows}
        return rows, [i for i in ids if i not in found and row_uuid(i) not in found]

    @contextmanager
    def claim(self, row_id: int) -> Iterator[bool]:
        """Delete row `row_id` in a transaction that commits when the block ends (rolls back if it
        raises); yields whether this call deleted it. A second claim of the same row waits for
        the first one's transaction, then finds nothing."""
        with self.engine.begin() as conn:
            yield conn.execute(delete(failed_jobs).where(failed_jobs.c.id == row_id)).rowcount == 1

    def forget(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        if not ids:
            return 0
        return self._write(delete(failed_jobs).where(failed_jobs.c.id.in_(ids))).rowcount

    def flush(self, hours: float | None = None) -> int:
        statement = delete(failed_jobs)
        if hours is not None:
            cutoff = _utcnow() - dt.timedelta(hours=hours)
            statement = statement.where(failed_jobs.c.failed_at < cutoff)
        return self._write(statement).rowcount

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(failed_jobs)).scalar_one())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
