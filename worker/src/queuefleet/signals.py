"""Signals a worker obeys: TERM/INT drain (a second one interrupts the job), USR2
pauses, CONT resumes, ALRM is the hard timeout.

The handlers only set flags, except in two places where raising is the point: a
blocking idle wait is broken (`WakeUp`), and a running handler is interrupted by
a second stop signal (`JobInterrupted`).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any, Callable

from .timeouts import HandlerGuard, JobInterrupted


class WakeUp(BaseException):
    """Breaks an idle blocking wait when a signal arrives."""


class WorkerSignals:
    def __init__(self, guard: HandlerGuard, on_first_stop: Callable[[], None] = lambda: None) -> None:
        self.guard = guard
        self.on_first_stop = on_first_stop  # called (in the signal handler) on the first stop signal
        self.stop_reason: str | None = None
        self.stop_at = 0.0  # monotonic time of the first stop signal
        self.count = 0
        self.paused = False
        self.blocking = False  # the main thread is in an idle wait that a signal should break

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGUSR2, self._on_pause)
        signal.signal(signal.SIGCONT, self._on_resume)
        signal.signal(signal.SIGALRM, self.guard.on_alarm)

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def stop_soon(self, reason: str) -> None:
        """stop(reason) from another thread: an idle wait of the main thread is broken as SIGTERM
        breaks it; a running job finishes."""
        self.stop(reason)
        if self.blocking:
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    def _on_stop(self, signum: int, _frame: Any) -> None:
        self.count += 1
        if self.count == 1:
            self.stop_at = time.monotonic()
            self.stop(f"{signal.Signals(signum).name} received")
            self.on_first_stop()
            if self.blocking:
                raise WakeUp()
        elif self.guard.in_handler:
            raise JobInterrupted()

    def _on_pause(self, _signum: int, _frame: Any) -> None:
        self.paused = True
        if self.blocking:
            raise WakeUp()

    def _on_resume(self, _signum: int, _frame: Any) -> None:
        self.paused = False
