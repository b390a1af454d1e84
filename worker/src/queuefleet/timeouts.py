"""Hard timeouts: SIGALRM inside the handler, and the facts the watchdog needs.

`JobTimeout` and `JobInterrupted` derive from BaseException, so a handler's
`except Exception` cannot swallow them. The in-handler flag is set before the
alarm is armed and cleared before it is disarmed, so the alarm can only ever
interrupt the handler, never the worker's own bookkeeping around it.
"""

from __future__ import annotations

import signal
import time
from typing import Any, Callable


class JobTimeout(BaseException):
    """Raised inside a handler that ran past its timeout."""


class JobInterrupted(BaseException):
    """Raised inside a handler when the worker must stop now (second signal or drain deadline)."""


class HandlerGuard:
    """Runs one handler at a time under its timeout; the keeper's watchdog reads its state."""

    def __init__(self) -> None:
        self.in_handler = False
        self.started = 0.0  # monotonic start of the running handler
        self.timeout = 0.0
        self.job_id = ""  # of the running (or last) handler
        self.job_name = ""

    def run(self, handler: Callable[..., Any], args: tuple[Any, ...], timeout: float, job_id: str, job_name: str) -> Any:
        self.started, self.timeout, self.job_id, self.job_name = time.monotonic(), timeout, job_id, job_name
        self.in_handler = True
        try:
            if timeout > 0:
                signal.setitimer(signal.ITIMER_REAL, timeout)
            return handler(*args)
        finally:
            self.in_handler = False
            signal.setitimer(signal.ITIMER_REAL, 0)

    def on_alarm(self, _signum: int, _frame: Any) -> None:
        if self.in_handler:
            raise JobTimeout()

    def overdue(self, grace: float) -> bool:
        """The handler ignored its timeout for `grace` seconds more (stuck in C code or signals masked)."""
        return self.in_handler and self.timeout > 0 and time.monotonic() - self.started > self.timeout + grace

    def running_for(self) -> float:
        return time.monotonic() - self.started if self.in_handler else 0.0
