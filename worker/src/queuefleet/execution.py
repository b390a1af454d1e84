"""Running one reserved job: decode it, check it may run, run its handler under its
timeout, and say what happened. What then becomes of the job (ack, retry, failed
jobs) is failures.py's concern.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from enum import Enum

from .context import FailJob, JobContext, ReleaseJob
from .handlers import HandlerNotFound, HandlerRegistry, HandlerSpec, JobNotAllowed
from .logs import JobLog
from .payload import MAX_PAYLOAD, Job, PayloadError
from .protocol import Reserved
from .timeouts import HandlerGuard, JobInterrupted, JobTimeout

MAX_TRACEBACK = 20_000


class Kind(Enum):
    DONE = "done"  # the handler returned
    ERROR = "error"  # the attempt failed: retried while tries are left
    FAIL = "fail"  # cannot or must not run again: straight to failed jobs
    MALFORMED = "malformed"  # not a job at all: stored as it is
    STORE = "store"  # failed earlier; only storing the failure is left
    INTERRUPTED = "interrupted"  # stopped by the worker (second signal): put back uncounted
    RELEASE = "release"  # the handler asked to run again later (JobContext.release)


@dataclass
class Outcome:
    kind: Kind
    job: Job | None = None
    error: str = ""
    runtime: float = 0.0
    delay: float = 0.0  # RELEASE: seconds until the job runs again
    spec: HandlerSpec | None = None  # the resolved handler, for its failure callback


class JobRunner:
    def __init__(self, handlers: HandlerRegistry, guard: HandlerGuard, log: JobLog, *, default_tries: int,
                 default_timeout: float, max_lost: int, max_payload: int = MAX_PAYLOAD) -> None:
        self.handlers = handlers
        self.guard = guard
        self.log = log
        self.default_tries = default_tries
        self.default_timeout = default_timeout
        self.max_lost = max_lost
        self.max_payload = max_payload  # bytes: a larger payload is refused before it is parsed

    def max_tries(self, job: Job) -> int:
        return job.max_tries if job.max_tries is not None else self.default_tries

    def run(self, entry: Reserved) -> Outcome:
        if not entry.raw:
            return Outcome(Kind.MALFORMED, error=f"no payload is stored for job id {entry.id[:80]!r} "
                                                 f"(malformed or foreign entry in queue {entry.queue!r})")
        try:
            job = Job.decode(entry.raw, attempts=entry.attempts, lost=entry.lost, expect_id=entry.id, max_bytes=self.max_payload)
        except PayloadError as exc:
            return Outcome(Kind.MALFORMED, error=str(exc))
        if job.failure is not None:
            return Outcome(Kind.STORE, job, job.failure)
        if self.max_lost and job.lost >= self.max_lost:
            return Outcome(Kind.FAIL, job, f"the worker running this job ({job.job}) was lost {job.lost} times "
                                           "(killed or crashed while running it); giving up")
        max_tries = self.max_tries(job)
        if max_tries and job.attempts > max_tries:
            return Outcome(Kind.FAIL, job, f"job has been attempted {job.attempts - 1} times, more than its {max_tries} tries")
        try:
            spec = self.handlers.spec(job.job)
        except (JobNotAllowed, HandlerNotFound) as exc:
            return Outcome(Kind.FAIL, job, f"{exc.__class__.__name__}: {exc}")  # permanent: no retries spent
        outcome = self._call(spec, job)
        outcome.spec = spec
        return outcome

    def context(self, job: Job) -> JobContext:
        return JobContext(job.id, job.queue, job.job, job.attempts, self.max_tries(job), job.pushed_at, job.lost)

    def _call(self, spec: HandlerSpec, job: Job) -> Outcome:
        timeout = float(job.timeout or self.default_timeout)
        args = (job.data, self.context(job)) if spec.takes_context else (job.data,)
        self.log.job("start", job.id, job.job, job.queue, job.attempts)
        self.log.flush()  # written before the handler runs: a handler that kills the process is named
        start = time.monotonic()
        try:
            self.guard.run(spec.func, args, timeout, job.id, job.job)
        except ReleaseJob as asked:
            return Outcome(Kind.RELEASE, job, runtime=time.monotonic() - start, delay=asked.delay)
        except FailJob as asked:
            return Outcome(Kind.FAIL, job, f"FailJob: {asked.reason}", time.monotonic() - start)
        except JobTimeout:
            return Outcome(Kind.ERROR, job, f"JobTimeout: {job.job} ran longer than its timeout of {timeout:g}s and was stopped",
                           time.monotonic() - start)
        except JobInterrupted:
            return Outcome(Kind.INTERRUPTED, job, runtime=time.monotonic() - start)
        except SystemExit as exc:
            return Outcome(Kind.ERROR, job, f"SystemExit: the handler called sys.exit({exc.code!r}); a handler must "
                                            "return or raise, the worker decides when to exit", time.monotonic() - start)
        except BaseException as exc:  # noqa: BLE001 - the handler's own failure, KeyboardInterrupt included
            return Outcome(Kind.ERROR, job, _format(exc), time.monotonic() - start)
        return Outcome(Kind.DONE, job, runtime=time.monotonic() - start)


def _format(exc: BaseException) -> str:
    error = "".join(traceback.format_exception(exc)).rstrip()
    if len(error) > MAX_TRACEBACK:
        error = error[: MAX_TRACEBACK // 2] + "\n...\n" + error[-MAX_TRACEBACK // 2 :]
    return error
