"""Retrying a failed job: the failed-jobs store gives up its row, the producer pushes the job again.

It joins the two, so that neither the store (failed.py) nor the producer (queue.py) knows the other.
"""

from __future__ import annotations

import uuid as uuidlib

from .failed import FailedJob, FailedJobStore
from .payload import Job
from .queue import Queue


def retry_failed(store: FailedJobStore, queue: Queue, row: FailedJob) -> Job | None:
    """Push a failed job back onto its queue with its attempts reset and forget its row, as one
    step: the row is claimed (deleted in a transaction) before the push and the transaction
    commits after it, so two retries of one row at once (a double click, two `queue retry`
    runs) push it once, and a push that fails leaves the row. Returns the job as pushed, None
    when another retry or forget took the row first. Raises PayloadError when the row's
    payload is not a job (nothing is changed)."""
    job = Job.decode(row.payload)
    job.attempts = 0
    job.failure = None
    # A fresh id: the worker that failed the job may not have acked the old id yet (its ack
    # would delete the retried job's payload), and a quick second failure must not collide
    # with the old row's uuid.
    job.id = str(uuidlib.uuid4())
    with store.claim(row.id) as claimed:
        if not claimed:
            return None
        queue.push_job(job)
    return job
