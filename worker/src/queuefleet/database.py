"""The failed-jobs database as a worker holds it: without SQLAlchemy until it is needed.

SQLAlchemy and a driver cost a worker about half of its start on a small host, and most
workers store a failed job rarely. So `queue work` holds a `LazyStore`: the store of failed.py
is imported and made on the first failure, or by `StartupCheck`, a thread that checks the
database once the worker already takes jobs. A worker started to meet a backlog
runs its first job that much sooner.

What the check finds is what `queue work` said before it ran a job, now said moments later:
- not migrated, or a bad URL: an error, and the worker stops as on SIGTERM (its job finishes)
  and exits 1, which supervisor shows;
- not reachable: a warning, and the worker goes on; failed jobs wait in Redis until it answers.
"""

from __future__ import annotations

import threading
from typing import Callable, Protocol

from .connection import redacted_url

DEFAULT_DATABASE_URL = "sqlite:///queuefleet.sqlite3"
DATABASE_TIMEOUT = 10.0  # seconds a MySQL/MariaDB connect, read or write may take (see failed.make_engine)


class DatabaseUnavailable(Exception):
    """The failed-jobs database cannot be reached or is not migrated."""


class StoreFailed(Exception):
    """A failed job could not be stored now; the message is safe to log (no job data)."""


class FailureRecorder(Protocol):
    """What the worker needs of the failed-jobs store: FailedJobStore, or a LazyStore in front of it."""

    def record(self, *, uuid: str, connection: str, queue: str, payload: str, exception: str) -> str: ...


class Store(FailureRecorder, Protocol):
    """What a LazyStore makes on first use: failed.FailedJobStore."""

    def check(self) -> None: ...


class BadDatabaseUrl(Exception):
    """The URL does not make an engine: an unknown scheme, a bad port, a driver not installed."""


class LazyStore:
    """The store `make` returns, made on first use, once, whichever thread asks first; `url` names
    the database in messages (its password hidden)."""

    def __init__(self, url: str, make: Callable[[], Store]) -> None:
        self.url = url
        self.make = make
        self._store: Store | None = None
        self._lock = threading.Lock()

    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                try:
                    self._store = self.make()
                except Exception as exc:  # noqa: BLE001 - an unknown scheme, a bad port, a missing driver
                    raise BadDatabaseUrl(str(exc)) from exc
            return self._store

    def record(self, *, uuid: str, connection: str, queue: str, payload: str, exception: str) -> str:
        try:
            store = self.store()
        except BadDatabaseUrl as exc:
            raise StoreFailed(f"bad database URL {redacted_url(self.url)}: {exc}") from None
        return store.record(uuid=uuid, connection=connection, queue=queue, payload=payload, exception=exception)

    def check(self) -> None:
        """FailedJobStore.check: DatabaseUnavailable, or BadDatabaseUrl."""
        self.store().check()


class StartupCheck(threading.Thread):
    """Checks a LazyStore once, beside the worker: `fatal(line)` when the worker must not go on
    (not migrated, a bad URL), `warn(line)` when it may (the database does not answer)."""

    def __init__(self, store: LazyStore, *, warn: Callable[[str], None], fatal: Callable[[str], None]) -> None:
        super().__init__(name="queuefleet-database-check", daemon=True)
        self.lazy = store
        self.warn = warn
        self.fatal = fatal

    def run(self) -> None:
        where = redacted_url(self.lazy.url)
        try:
            self.lazy.check()
        except BadDatabaseUrl as exc:
            self.fatal(f"bad database URL {where}: {exc}")
        except DatabaseUnavailable as exc:
            if "queue migrate" in str(exc):
                self.fatal(f"failed-jobs database {where}: {exc}")
            else:
                self.warn(f"warning: failed-jobs database {where}: {exc}; the worker runs jobs anyway, "
                          "failed jobs wait in Redis until it answers")
        except Exception as exc:  # noqa: BLE001 - never a traceback from a thread: one line, and the worker goes on
            self.warn(f"warning: failed-jobs database {where}: cannot check it ({exc.__class__.__name__}: {exc})")
