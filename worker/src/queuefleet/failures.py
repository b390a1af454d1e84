"""What becomes of a job after its attempt: acked, retried after its backoff, or
stored in failed jobs; and what happens when the failed-jobs database cannot
take it (the job stays in Redis, nothing is dropped, nothing retried for ever).

Log lines name jobs by id and handler, never by their data.
"""

from __future__ import annotations

import sys
from typing import Callable, TextIO

from .callbacks import FailureCallbacks
from .execution import JobRunner, Kind, Outcome
from .database import FailureRecorder, StoreFailed
from .job_counters import FAILED, RELEASED, RETRIED, UNKNOWN_JOB, tally
from .logs import JobLog
from .payload import Job, error_summary, truncated_payload
from .protocol import ReleaseEntry, Reserved

HOLD_FIRST = 10.0  # seconds a job waits in Redis after its failure could not be stored
HOLD_CAP = 300.0

# How the policy touches Redis: the main loop passes its reservations, the watchdog
# (which runs while the main thread is stuck) passes direct calls.
ReleaseFn = Callable[[Reserved, ReleaseEntry], bool]  # False: the lease was lost, nothing released
AckFn = Callable[[Reserved], None]
# Replaces a held job's payload (False: the lease was lost). The watchdog passes None: it
# leaves the failure callbacks to the next worker instead of calling app code itself.
RewriteFn = Callable[[Reserved, str], bool] | None


class FailurePolicy:
    def __init__(self, runner: JobRunner, store: FailureRecorder, connection_name: str, log: JobLog, *,
                 backoff: list[float], callbacks: FailureCallbacks | None = None, stderr: TextIO | None = None) -> None:
        self.runner = runner
        self.callbacks = callbacks
        self.store = store
        self.connection_name = connection_name
        self.log = log
        self.backoff = backoff
        self.stderr = stderr or sys.stderr
        self.failed = 0  # failed attempts, retries included (heartbeat field)

    def failed_attempt(self, entry: Reserved, outcome: Outcome, release: ReleaseFn, ack: AckFn, rewrite: RewriteFn) -> None:
        """An attempt that raised (or timed out): retry after the backoff while tries are left, else fail."""
        job = outcome.job
        assert job is not None
        self.failed += 1
        job.note_error(job.attempts, error_summary(outcome.error))
        print(f"job {job.id} ({job.job}) attempt {job.attempts} failed:\n{outcome.error}", file=self.stderr, flush=True)
        max_tries = self.runner.max_tries(job)
        if max_tries and job.attempts >= max_tries:
            self._store(entry, job, outcome, release, ack, rewrite)
            return
        delay = backoff_for(job.backoff or self.backoff, job.attempts)
        if release(entry, ReleaseEntry(entry.queue, entry.id, entry.token, delay_ms=int(delay * 1000), payload=job.encode(),
                                       tally=tally(job.job, RETRIED, outcome.runtime))):
            self.log.job("retry", job.id, job.job, job.queue, job.attempts, outcome.runtime, delay=f"{delay:g}s",
                         error=error_summary(outcome.error, 200))

    def released(self, entry: Reserved, outcome: Outcome, release: ReleaseFn, ack: AckFn, rewrite: RewriteFn) -> None:
        """The handler asked to run again after `outcome.delay` (an attempt like any other): on its last try it fails."""
        job = outcome.job
        assert job is not None
        max_tries = self.runner.max_tries(job)
        if max_tries and job.attempts >= max_tries:
            outcome.error = (f"ReleaseJob: released itself to run again in {outcome.delay:g}s on its last try "
                             f"({job.attempts} of {max_tries})")
            self.fail(entry, outcome, release, ack, rewrite)
            return
        if release(entry, ReleaseEntry(entry.queue, entry.id, entry.token, delay_ms=int(outcome.delay * 1000),
                                       tally=tally(job.job, RELEASED, outcome.runtime))):
            self.log.job("released", job.id, job.job, job.queue, job.attempts, outcome.runtime, reason="by its handler",
                         delay=f"{outcome.delay:g}s")

    def fail(self, entry: Reserved, outcome: Outcome, release: ReleaseFn, ack: AckFn, rewrite: RewriteFn) -> None:
        """No further tries: store it in failed jobs, then ack it."""
        self.failed += 1
        if outcome.kind is Kind.MALFORMED:
            self._store_malformed(entry, outcome, release, ack)
            return
        job = outcome.job
        assert job is not None
        if outcome.kind is not Kind.STORE and (not job.errors or job.errors[-1].get("attempt") != job.attempts):
            job.note_error(job.attempts, error_summary(outcome.error))
        self._store(entry, job, outcome, release, ack, rewrite)

    def _store(self, entry: Reserved, job: Job, outcome: Outcome, release: ReleaseFn, ack: AckFn, rewrite: RewriteFn) -> None:
        if self.callbacks is not None and not job.notified and self.callbacks.wanted(job, outcome.spec):
            if not self._notify(entry, job, outcome, release, rewrite):
                return
        job.failure, holds = None, job.holds
        job.holds = 0
        payload = job.encode()
        try:
            how = self.store.record(uuid=job.id, connection=self.connection_name, queue=job.queue, payload=payload,
                                    exception=outcome.error)
        except StoreFailed as exc:
            job.failure, job.holds = outcome.error, holds + 1
            self._hold(entry, job.id, job.encode(), holds, str(exc), release)
            return
        entry.tally = tally(job.job, FAILED, outcome.runtime)
        ack(entry)
        extra = {"stored": how} if how != "stored" else {}
        self.log.job("failed", job.id, job.job, job.queue, job.attempts, outcome.runtime, error=error_summary(outcome.error, 200), **extra)

    def _notify(self, entry: Reserved, job: Job, outcome: Outcome, release: ReleaseFn, rewrite: RewriteFn) -> bool:
        """Mark the failure in Redis, then call the callbacks; False when the job is no longer ours to store."""
        assert self.callbacks is not None
        job.failure, job.notified = outcome.error, rewrite is not None
        if rewrite is None:  # the watchdog: the next worker calls them, then stores the failure
            release(entry, ReleaseEntry(entry.queue, entry.id, entry.token, count_attempt=False, front=True,
                                        payload=job.encode()))
            return False
        if not rewrite(entry, job.encode()):
            self.log.event("error", f"job {job.id} ({job.job}) failed for good but its lease was lost: another worker "
                                    "may run it; its failure callbacks are not called here")
            return False
        self.callbacks.call(job, error_summary(outcome.error), outcome.spec)
        return True

    def _store_malformed(self, entry: Reserved, outcome: Outcome, release: ReleaseFn, ack: AckFn) -> None:
        raw = entry.raw.decode("utf-8", "replace") if isinstance(entry.raw, bytes) else str(entry.raw)
        if len(entry.raw) > self.runner.max_payload:
            raw = truncated_payload(raw)  # over the limit: never stored whole
        try:
            self.store.record(uuid=entry.id, connection=self.connection_name, queue=entry.queue, payload=raw or entry.id,
                              exception=f"PayloadError: {outcome.error}")
        except StoreFailed as exc:
            # Keep it as it is (it is not a job we could re-encode); look again later.
            self._hold(entry, entry.id, "", 0, str(exc), release)
            return
        entry.tally = tally(UNKNOWN_JOB, FAILED, None)
        ack(entry)
        self.log.job("failed", entry.id[:80], "-", entry.queue, entry.attempts, 0.0, error=error_summary(outcome.error, 200))

    def _hold(self, entry: Reserved, job_id: str, payload: str, holds: int, reason: str, release: ReleaseFn) -> None:
        delay = min(HOLD_FIRST * 2**holds, HOLD_CAP)
        self.log.event("error", f"cannot store failed job {job_id[:80]} ({reason}); job kept in Redis, next try in {delay:g}s")
        release(entry, ReleaseEntry(entry.queue, entry.id, entry.token, delay_ms=int(delay * 1000), count_attempt=False,
                                    payload=payload))

    def interrupted(self, entry: Reserved, outcome: Outcome, release: ReleaseFn) -> None:
        """Stopped by the worker: back to the front of its queue, the attempt not counted."""
        job = outcome.job
        assert job is not None
        if release(entry, ReleaseEntry(entry.queue, entry.id, entry.token, count_attempt=False, front=True)):
            self.log.job("released", job.id, job.job, job.queue, job.attempts, outcome.runtime, reason="stopping")


def backoff_for(backoff: list[float], attempt: int) -> float:
    if not backoff:
        return 0.0
    return backoff[min(attempt, len(backoff)) - 1] if attempt >= 1 else backoff[0]
