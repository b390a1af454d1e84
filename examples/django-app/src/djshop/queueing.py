"""Pushing jobs from Django after the commit, and running them in a worker."""

from __future__ import annotations

import functools
from typing import Any, Callable

from django.conf import settings
from django.db import close_old_connections, transaction

from queuefleet import Queue


@functools.cache
def get_queue() -> Queue:
    """One Queue per process, made on first use (so after a pre-fork server forks)."""
    return Queue.from_url(settings.QUEUEFLEET_REDIS_URL, prefix=settings.QUEUEFLEET_PREFIX)


def push_on_commit(job: str, data: Any = None, **options: Any) -> None:
    """Push `job` once the current transaction commits; nothing if it rolls back. Outside a
    transaction (autocommit), Django runs it at once."""
    transaction.on_commit(lambda: get_queue().push(job, data, **options))


def django_job(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run a handler the way Django runs a request: close_old_connections() before and after.

    A worker is a long-lived process that never sees a request, so without this its database
    connection would stay open between jobs, past CONN_MAX_AGE, and past the server's
    wait_timeout (MySQL), where the next job fails on a connection the server dropped long ago.
    functools.wraps keeps the handler's module, which the worker's allow-list checks."""

    @functools.wraps(func)
    def handler(*args: Any) -> Any:
        close_old_connections()
        try:
            return func(*args)
        finally:
            close_old_connections()

    return handler
