"""Versioned migrations of the failed-jobs database: `queue migrate` applies, in order, the ones a
database has not had, and records each in the table `queuefleet_schema` (version, description,
when). A change of the table (a column, an index) is a new `Migration` at the end of
MIGRATIONS, never an edit of an old one, so that every fleet, whatever release it migrated
with, reaches the same schema.

A database migrated before versions were kept has `failed_jobs` and no `queuefleet_schema`: it
counts as version 1 (what `queue migrate` created then), and only later migrations run on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, func, insert, inspect, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from .failed import failed_jobs

SCHEMA_TABLE = "queuefleet_schema"

_metadata = MetaData()
schema_versions = Table(
    SCHEMA_TABLE,
    _metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(255), nullable=False),
    Column("applied_at", DateTime, nullable=False, server_default=func.current_timestamp()),
)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _create_failed_jobs(conn: Connection) -> None:
    failed_jobs.create(conn, checkfirst=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create table failed_jobs", _create_failed_jobs),
)


def latest() -> int:
    return MIGRATIONS[-1].version


def current_version(conn: Connection) -> int:
    """The schema version of the database: 0 when it has no failed-jobs table at all."""
    tables = inspect(conn)
    if tables.has_table(SCHEMA_TABLE):
        version = conn.execute(select(func.max(schema_versions.c.version))).scalar()
        if version is not None:
            return int(version)
    return 1 if tables.has_table(failed_jobs.name) else 0


def migrate(engine: Engine) -> list[Migration]:
    """Apply the migrations the database lacks, each in its own transaction (MySQL commits DDL
    at once: a migration must be safe to run again after a failure); returns those applied.
    Two hosts migrating at once apply each migration once: the version row is the claim."""
    with engine.begin() as conn:
        baseline = current_version(conn)
        schema_versions.create(conn, checkfirst=True)
        known = set(conn.execute(select(schema_versions.c.version)).scalars())
        if baseline and not known:  # migrated before versions were kept: record what it has
            _record(conn, MIGRATIONS[0])
    applied: list[Migration] = []
    for migration in MIGRATIONS:
        if migration.version <= baseline:
            continue
        try:
            with engine.begin() as conn:
                if conn.execute(select(schema_versions.c.version).where(schema_versions.c.version == migration.version)).first():
                    continue  # another host applied it meanwhile
                migration.apply(conn)
                _record(conn, migration)
        except IntegrityError:
            continue  # another host recorded it first
        applied.append(migration)
    return applied


def _record(conn: Connection, migration: Migration) -> None:
    conn.execute(insert(schema_versions).values(version=migration.version, description=migration.description))
