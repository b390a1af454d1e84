"""Pushing jobs from Flask, after the database transaction commits.

`push_after_commit(job, data, **options)` records the job on the current SQLAlchemy session;
the session pushes it once its transaction commits, and forgets it when the transaction ends
any other way (a rollback, or the session closed at the end of the request without a commit).
So a worker never gets a job about rows that are not committed yet, or never will be.

One limit: a push recorded inside a SAVEPOINT (`db.session.begin_nested()`) that is rolled back
is still pushed when the outer transaction commits. Record pushes outside savepoints.
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from queuefleet import Queue

from .models import db

PENDING = "queuefleet.pending"


def get_queue() -> Queue:
    """The app's Queue, made on first use in each process (so after a pre-fork server forks)."""
    queue = current_app.extensions.get("queuefleet")
    if queue is None:
        queue = current_app.extensions["queuefleet"] = Queue.from_url(
            current_app.config["QUEUEFLEET_REDIS_URL"], prefix=current_app.config["QUEUEFLEET_PREFIX"])
    return queue


def push_after_commit(job: str, data: Any = None, **options: Any) -> None:
    """Push `job` with `data` (and Queue.push's keyword options) once db.session commits."""
    session = db.session()
    if not session.in_transaction():
        session.begin()  # so that this push belongs to a transaction, which its commit or rollback ends
    session.info.setdefault(PENDING, []).append((get_queue(), job, data, options))


@event.listens_for(Session, "after_commit")
def _push_pending(session: Session) -> None:
    # Committed: the rows exist for every reader now. Each job goes out under its own id
    # (give one, id=...), so if Redis fails here the same push can be repeated safely.
    for queue, job, data, options in session.info.pop(PENDING, []):
        queue.push(job, data, **options)


@event.listens_for(Session, "after_transaction_end")
def _forget_pending(session: Session, transaction: SessionTransaction) -> None:
    # After a commit the list is already empty; after a rollback or a close it is dropped here.
    if transaction.parent is None:
        session.info.pop(PENDING, None)
