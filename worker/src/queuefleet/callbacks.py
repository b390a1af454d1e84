"""Failure callbacks: a handler's own (`@on_failure`) and the worker's hook (`--on-failure`),
called when a job fails for good.

Called once per failure: before they run, the job's payload in Redis is marked (failure
noted, callbacks called), so a worker that dies around the final failure leaves a job that
the next worker only stores, without calling them again; a worker that dies before the
mark leaves the job to run again as usual. A callback that raises or overruns the job's
timeout is logged and changes nothing: the failed-job row is stored all the same.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable, TextIO

from .context import JobFailure
from .handlers import HandlerNotFound, HandlerRegistry, HandlerSpec, JobNotAllowed
from .logs import JobLog
from .payload import Job, check_job_name
from .timeouts import HandlerGuard, JobTimeout

CALLBACK_TIMEOUT = 60.0  # seconds, when the job has no timeout of its own


class FailureCallbacks:
    def __init__(self, handlers: HandlerRegistry, guard: HandlerGuard, log: JobLog, stderr: TextIO, *,
                 hook: Callable[[JobFailure], Any] | None = None, default_timeout: float = 0.0) -> None:
        self.handlers = handlers
        self.guard = guard
        self.log = log
        self.stderr = stderr
        self.hook = hook
        self.default_timeout = default_timeout

    @classmethod
    def resolve_hook(cls, handlers: HandlerRegistry, name: str) -> Callable[[JobFailure], Any] | None:
        """The `--on-failure module:function` hook, under the same allow-list as handlers
        (ValueError, JobNotAllowed or HandlerNotFound with a clear message otherwise)."""
        if not name:
            return None
        check_job_name(name)
        return handlers.resolve(name)

    def _own(self, job: Job, spec: HandlerSpec | None) -> Callable[..., Any] | None:
        if spec is None:
            try:
                spec = self.handlers.spec(job.job)
            except (JobNotAllowed, HandlerNotFound):
                return None
        return spec.on_failure

    def wanted(self, job: Job, spec: HandlerSpec | None) -> bool:
        return self.hook is not None or self._own(job, spec) is not None

    def call(self, job: Job, error: str, spec: HandlerSpec | None) -> None:
        own = self._own(job, spec)
        if own is not None:
            self._run(job, "its on_failure callback", own, (job.data, error))
        if self.hook is not None:
            failure = JobFailure(job.id, job.queue, job.job, job.data, error, job.attempts, job.lost, job.pushed_at)
            self._run(job, "the --on-failure hook", self.hook, (failure,))

    def _run(self, job: Job, what: str, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        timeout = float(job.timeout or self.default_timeout or CALLBACK_TIMEOUT)
        try:
            self.guard.run(func, args, timeout, job.id, job.job)
        except JobTimeout:
            self._failed(job, what, f"it ran longer than {timeout:g}s and was stopped")
        except BaseException as exc:  # noqa: BLE001 - a callback never changes what becomes of the job
            print(f"job {job.id} ({job.job}): {what} raised:\n" + "".join(traceback.format_exception(exc)).rstrip(),
                  file=self.stderr, flush=True)
            self._failed(job, what, f"{exc.__class__.__name__}, see stderr")

    def _failed(self, job: Job, what: str, why: str) -> None:
        self.log.event("error", f"job {job.id} ({job.job}): {what} failed ({why}); the failed job is stored all the same")
