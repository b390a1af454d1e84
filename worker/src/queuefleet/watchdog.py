"""The last resort for a handler that does not return to Python (stuck in C code, signals
masked) and for the drain deadline, run by the keeper thread while the main thread is stuck.

Past its timeout plus a grace, the stuck attempt is recorded as a failed attempt (retry
or failed job, as for any failure) over the keeper's own connection and the process
exits 1 for supervisor to restart it. Past the drain deadline, the second stop signal is
sent; if even that does not stop the handler, the job is put back uncounted and the
process exits 0. Its reserved-ahead jobs go back unblamed when a neighbour (the process
supervisor starts in its place) reaps it.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable

from .execution import Kind, Outcome
from .failures import FailurePolicy
from .logs import JobLog
from .payload import Job
from .protocol import ReleaseEntry, Reserved, Runner, ack, release
from .reservations import Reservations
from .signals import WorkerSignals
from .timeouts import HandlerGuard


@dataclass
class Watchdog:
    guard: HandlerGuard
    signals: WorkerSignals
    reservations: Reservations
    failures: FailurePolicy
    run_script: Runner
    prefix: str
    log: JobLog
    worker_id: str
    grace: float
    drain_timeout: float  # seconds a job may run after the first stop signal (0: no limit), see worker.drain_limit
    hard_exit: Callable[[int], Any] = os._exit

    def check(self) -> None:
        if self.guard.overdue(self.grace):
            self._end(overdue=True)
            return
        stop_at = self.signals.stop_at
        if not (self.drain_timeout > 0 and stop_at and self.guard.in_handler):
            return
        late = time.monotonic() - stop_at - self.drain_timeout
        if late > self.grace:
            self._end(overdue=False)
        elif late > 0 and self.signals.count == 1:
            self.signals.count += 1  # the drain deadline acts as the second signal
            os.kill(os.getpid(), signal.SIGTERM)

    def _release(self, _entry: Reserved, release_entry: ReleaseEntry) -> bool:
        return not release(self.run_script, self.prefix, [release_entry])

    def _ack(self, entry: Reserved) -> None:
        ack(self.run_script, self.prefix, [entry.ack_key])

    def _end(self, *, overdue: bool) -> None:
        entry, guard = self.reservations.current, self.guard
        what = "handler"
        if entry is not None:
            try:
                # As the job is in Redis now: once it failed for good, its payload was marked
                # (failure noted, callbacks called) before any callback ran (failures.py).
                job = Job.decode(entry.raw, attempts=entry.attempts, lost=entry.lost)
                if job.failure is not None:
                    what = "failure callback"  # stuck in a callback: store the failure as marked, never call again
                    self.failures.fail(entry, Outcome(Kind.STORE, job, job.failure), self._release, self._ack, None)
                elif overdue:
                    error = f"JobTimeout: {job.job} ran past its timeout of {guard.timeout:g}s and did not stop; the worker exits"
                    self.failures.failed_attempt(entry, Outcome(Kind.ERROR, job, error, guard.running_for()), self._release,
                                                 self._ack, None)
                else:
                    self._release(entry, ReleaseEntry(entry.queue, entry.id, entry.token, count_attempt=False, front=True))
            except Exception as exc:  # noqa: BLE001 - exiting is what matters now
                print(f"queuefleet watchdog: {exc.__class__.__name__}: {exc}", file=self.failures.stderr, flush=True)
        self.log.event("stopping", f"worker {self.worker_id} exits: {what} of job {guard.job_id} ({guard.job_name}) did not stop")
        self.log.flush()
        self.hard_exit(1 if overdue else 0)
