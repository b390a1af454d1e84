"""What a worker holds in Redis, as the worker itself knows it: shared by the main thread
(which reserves, runs and finishes jobs) and the keeper thread (which extends leases,
hands back jobs waiting behind a long one, and acks jobs finished before a long one).
Every change happens under one lock; nothing here talks to Redis.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Sequence

from .logs import JobLog
from .protocol import ReleaseEntry, Reserved

MIN_HOLD = 0.05  # seconds: reserved-ahead jobs wait at most this (or a few run times) behind a job that overruns
ACK_AFTER = 0.25  # seconds a job may run before the keeper sends the acks of the jobs finished before it


class Holdings:
    def __init__(self, lease: float, log: JobLog) -> None:
        self.lease = lease
        self.margin = min(2.0, lease / 5)  # a lease is trusted until this long before it runs out
        self.log = log
        self.lock = threading.Lock()
        self.waiting: deque[Reserved] = deque()  # reserved ahead, not started
        self.held: dict[str, Reserved] = {}  # everything whose lease is ours (by job id)
        self.finished: list[Reserved] = []  # ran to the end, ack not sent yet
        self.returning: list[Reserved] = []  # handed back by the keeper, release not confirmed yet
        self.current: Reserved | None = None
        self.current_lease_lost = False
        self.current_since = 0.0
        self.last_progress = time.monotonic()
        self.runtime_ewma = 0.05  # unknown jobs count as slow: start with batches of one

    # -- main thread ----------------------------------------------------------------

    def take(self) -> Reserved | None:
        """The next job reserved ahead, if its lease is known to hold."""
        with self.lock:
            self.last_progress = now = time.monotonic()
            if self.waiting and self.waiting[0].valid_until > now:
                entry = self.waiting.popleft()
                self.current, self.current_lease_lost, self.current_since = entry, False, now
                return entry
        return None

    def reserved(self, entries: Sequence[Reserved], sent: float) -> None:
        """`entries` were reserved by a request sent at monotonic `sent`."""
        with self.lock:
            for entry in entries:
                entry.valid_until = sent + self.lease - self.margin
                self.held[entry.id] = entry
            self.waiting.extend(entries)
            self.last_progress = time.monotonic()

    def put_back(self, entry: Reserved) -> None:
        """`entry` was taken but could not be begun: it waits again, first."""
        with self.lock:
            if self.current is entry:
                self.waiting.appendleft(entry)
                self.current = None

    def done(self, entry: Reserved, runtime: float) -> None:
        self.runtime_ewma = 0.8 * self.runtime_ewma + 0.2 * runtime
        with self.lock:
            self.current = None
            self.finished.append(entry)

    def dropped(self, entry: Reserved) -> None:
        """`entry` is no longer ours to ack (released, acked already, or its lease was lost)."""
        with self.lock:
            if self.current is entry:
                self.current = None
            self.held.pop(entry.id, None)

    def take_finished(self) -> list[Reserved]:
        with self.lock:
            acks, self.finished = self.finished, []
            return acks

    def unsent(self, acks: Sequence[Reserved]) -> None:
        """A call carrying `acks` failed: send them again (acks are fenced, so twice is harmless)."""
        with self.lock:
            self.finished[:0] = acks

    def take_waiting(self) -> list[Reserved]:
        with self.lock:
            entries = list(self.waiting)
            self.waiting.clear()
            return entries

    def wait_again(self, entries: Sequence[Reserved]) -> None:
        with self.lock:
            self.waiting.extendleft(reversed(entries))

    def forget(self, entries: Sequence[Reserved]) -> None:
        with self.lock:
            for entry in entries:
                if self.held.get(entry.id) is entry:
                    del self.held[entry.id]

    def report_lost_acks(self, ids: Sequence[str]) -> None:
        for job_id in ids:
            self.log.event("lease", f"job {job_id} finished here after its lease was lost: another worker may run it again")

    # -- keeper thread ------------------------------------------------------------

    def leases(self) -> list[Reserved]:
        with self.lock:
            return list(self.held.values())

    def extended(self, sent: float, entries: Sequence[Reserved], lost_ids: Sequence[str]) -> None:
        """The keeper extended `entries` (request sent at monotonic `sent`); `lost_ids` were no longer ours."""
        lost = set(lost_ids)
        with self.lock:
            for entry in entries:
                if entry.id not in lost:
                    entry.valid_until = sent + self.lease - self.margin
                    continue
                if self.held.get(entry.id) is not entry or any(e is entry for e in self.finished):
                    continue  # acked meanwhile, or its ack will report it
                del self.held[entry.id]
                if entry in self.waiting:
                    self.waiting.remove(entry)
                    self.log.event("lease", f"lease on reserved job {entry.id} was lost before it started: not run here")
                elif entry is self.current and not self.current_lease_lost:
                    self.current_lease_lost = True
                    self.log.event("lease", f"lease on running job {entry.id} was lost: another worker may run it too; "
                                            "its outcome here will not be recorded")

    def take_overdue(self) -> list[Reserved]:
        """Reserved-ahead jobs to hand back because the worker made no progress for the hold limit."""
        with self.lock:
            if not self.waiting or time.monotonic() - self.last_progress < self.hold_limit():
                return []
            entries = list(self.waiting)
            self.waiting.clear()
            self.returning.extend(entries)
            return entries

    def still_returning(self) -> list[Reserved]:
        """Handed back, release not confirmed yet (the keeper retries)."""
        with self.lock:
            return list(self.returning)

    def returned(self, entries: Sequence[Reserved]) -> None:
        with self.lock:
            self.returning = [e for e in self.returning if not any(e is x for x in entries)]
        self.forget(entries)

    def take_acks_if_running_long(self) -> list[Reserved]:
        """Finished jobs to ack from the keeper while the next job runs long (ACK_AFTER)."""
        with self.lock:
            if not self.finished or self.current is None or time.monotonic() - self.current_since < ACK_AFTER:
                return []
            acks, self.finished = self.finished, []
            return acks

    def acked(self, entries: Sequence[Reserved], lost_ids: Sequence[str] | None) -> None:
        """An ack of `entries` went through (lost_ids: leases lost), or failed (None)."""
        if lost_ids is None:
            self.unsent(entries)
            return
        self.forget(entries)
        self.report_lost_acks(lost_ids)

    def hold_limit(self) -> float:
        return max(MIN_HOLD, 4 * self.runtime_ewma)


def give_back_entries(entries: Sequence[Reserved]) -> list[ReleaseEntry]:
    """Release entries for reserved-ahead jobs (front of their queues, attempt not counted),
    in an order that keeps them in queue order."""
    return [ReleaseEntry(e.queue, e.id, e.token, count_attempt=False, front=True) for e in reversed(entries)]
