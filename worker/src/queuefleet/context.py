"""What a handler may know and ask about its job, and what is told when a job fails for good.

A handler whose second positional parameter has no default gets a `JobContext`:

    def send_report(data, job):
        if not ready(data):
            job.release(60)          # try again in a minute (counts as an attempt)
        if data["to"] is None:
            job.fail("no recipient")  # failed jobs now, no further tries
        ...

`release` and `fail` end the handler: they raise `ReleaseJob` / `FailJob`, which derive
from BaseException so that a handler's own `except Exception` cannot swallow them.

A handler may name a callback for when its job fails for good (`@on_failure(callback)`);
the worker may have a hook for every such failure (`queue work --on-failure`). Both are
called once per failure, see failures.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NoReturn, TypeVar

from .payload import MAX_DELAY, MAX_ERROR_CHARS, check_seconds

F = TypeVar("F", bound=Callable[..., Any])
ON_FAILURE_ATTR = "__queuefleet_on_failure__"


class ReleaseJob(BaseException):
    """Raised by `JobContext.release`: put the job back, to run again after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


class FailJob(BaseException):
    """Raised by `JobContext.fail`: the job fails now, whatever tries it has left."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class JobContext:
    """The job a handler runs, as the worker knows it."""

    id: str
    queue: str
    job: str  # the handler's name, `package.module:function`
    attempt: int  # 1 on the first run; every run counts, releases included
    max_tries: int  # 0 = unlimited
    pushed_at: float  # Unix time of the push
    lost: int = 0  # how many workers died while running it

    @property
    def last_try(self) -> bool:
        return bool(self.max_tries) and self.attempt >= self.max_tries

    def release(self, delay: float = 0) -> NoReturn:
        """End this attempt and run the job again after `delay` seconds (0: at the back of its
        queue now). Counts as an attempt: on its last try, the job fails instead."""
        raise ReleaseJob(check_seconds("release delay", delay, maximum=MAX_DELAY))

    def fail(self, reason: str = "failed by its handler") -> NoReturn:
        """End this attempt and send the job to failed jobs now, with `reason`; no further tries."""
        text = str(reason)
        raise FailJob(text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "...")


@dataclass(frozen=True)
class JobFailure:
    """What a failure hook (`queue work --on-failure`) is given when a job fails for good."""

    id: str
    queue: str
    job: str
    data: Any
    error: str  # the final error (its last line)
    attempts: int
    lost: int
    pushed_at: float


def on_failure(callback: Callable[[Any, str], Any]) -> Callable[[F], F]:
    """Decorate a handler: `callback(data, error)` is called once when its job fails for good
    (tries used up, `fail()`, a timeout on the last try, its worker lost too often). The
    callback's module must be allowed (`--jobs`), like the handler's."""
    if not callable(callback):
        raise TypeError(f"on_failure needs a callable, got {callback!r}")

    def mark(handler: F) -> F:
        setattr(handler, ON_FAILURE_ATTR, callback)
        return handler

    return mark
