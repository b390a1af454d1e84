"""What a worker holds in Redis, and the main loop's side of reserving, starting and acking.

The three promises and how this module keeps them:

* Only the job that was running is blamed for a dead worker. Before a job runs,
  `begin` notes it in a file on this host (notes.py: one local write, no network);
  a neighbour that finds this worker dead blames only the job the note names, and
  the others it held go back unblamed (lua/reap.lua). A job whose last holder died
  where nobody could read its note comes back "suspect"; before such a job runs
  it is also named in Redis (a SET without reply, on the write-only connection),
  so that even reaping by lease expiry blames it precisely if it kills again.
* A job no worker has started is never held behind another's runtime. Jobs are
  reserved ahead only from the top-priority queue (nothing can outrank them) and
  only about `batch_seconds` of them by recent run times; the keeper hands back
  the ones still waiting as soon as the worker stops making progress
  (`take_overdue`).
* A job never runs twice while its worker lives. A reserved job is started only
  while its lease is known to hold (`valid_until`, renewed by the keeper's
  extensions); acks and releases are fenced by the lease token in Redis.

Acks of finished jobs ride the next reservation round trip, or the keeper sends
them when the next job runs long. The main thread owns the link; the keeper
calls only the methods marked as such, which touch local state under the lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Sequence

from .identity import ProcessIdentity
from .link import Announcer, PipelinedLink
from .logs import JobLog
from .notes import RunningNote
from .protocol import FetchResult, ReleaseEntry, Reserved, ack, fetch, release

MIN_HOLD = 0.05  # seconds: reserved-ahead jobs wait at most this (or a few run times) behind a job that overruns
RECLAIM_FOR = 20.0  # seconds after a lost fetch reply during which its reservations are looked for
ACK_AFTER = 0.25  # seconds a job may run before the keeper sends the acks of the jobs finished before it


class Reservations:
    def __init__(self, link: PipelinedLink, announcer: Announcer, note: RunningNote, prefix: str, identity: ProcessIdentity,
                 queues: list[str], lease: float, log: JobLog) -> None:
        self.link = link
        self.announcer = announcer
        self.note = note
        self.prefix = prefix
        self.identity = identity
        self.queues = queues
        self.lease = lease
        self.lease_ms = int(lease * 1000)
        self.margin = min(2.0, lease / 5)  # a lease is trusted until this long before it runs out
        self.marker_ttl_ms = int(lease * 2000) + 10_000  # the marker must outlive the lease of a dead worker
        self.log = log
        self.running_key = ""  # told by Redis at the first fetch (the key layout lives in Lua)
        self._lock = threading.Lock()
        self._waiting: deque[Reserved] = deque()  # reserved ahead, not started
        self._held: dict[str, Reserved] = {}  # everything whose lease is ours (by job id)
        self._finished: list[Reserved] = []  # ran to the end, ack not sent yet
        self._returning: list[Reserved] = []  # handed back by the keeper, release not confirmed yet
        self.current: Reserved | None = None
        self.current_lease_lost = False
        self.current_since = 0.0
        self.last_progress = time.monotonic()
        self.reclaim_until = 0.0  # after a fetch whose reply was lost: look for what it reserved ...
        self.reclaim_next = 0.0  # ... at most once a second (it scans the reserved sets)
        self.runtime_ewma = 0.05  # unknown jobs count as slow: start with batches of one

    # -- main thread ----------------------------------------------------------------

    def take(self) -> Reserved | None:
        """The next job reserved ahead, if its lease is known to hold."""
        with self._lock:
            self.last_progress = time.monotonic()
            if self._waiting and self._waiting[0].valid_until > self.last_progress:
                entry = self._waiting.popleft()
                self.current, self.current_lease_lost, self.current_since = entry, False, self.last_progress
                return entry
        return None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def fetch(self, max_jobs: int) -> FetchResult:
        """Ack what is finished and reserve the next jobs (one round trip, after the
        outstanding replies). Reserved-ahead jobs whose lease is no longer certain are
        given back first."""
        if self._waiting:
            self.give_back_waiting()
        self.link.drain()
        with self._lock:
            acks, self._finished = self._finished, []
        sent = time.monotonic()
        keep = None
        if sent < self.reclaim_until and sent >= self.reclaim_next:
            keep, self.reclaim_next = [e.id for e in self.leases()], sent + 1.0
        try:
            result = fetch(self.link.call, self.prefix, self.queues, token_base=self.identity.token_base,
                           host=self.identity.host, lease_ms=self.lease_ms, max_jobs=max_jobs, acks=[e.key for e in acks],
                           keep=keep)
        except BaseException:
            self._unsent(acks)
            # The request may still reach Redis (a network that stalls, then heals) and
            # reserve jobs this worker never hears of: look for them for a while.
            self.reclaim_until = time.monotonic() + RECLAIM_FOR
            raise
        self.running_key = result.running_key
        if result.reclaimed:
            self.log.event("redis", f"took back {result.reclaimed} job(s) reserved by a request whose reply was lost")
        with self._lock:
            self._forget(acks)
            for entry in result.jobs:
                entry.valid_until = sent + self.lease - self.margin
                self._held[entry.id] = entry
            self._waiting.extend(result.jobs)
            self.last_progress = time.monotonic()
        self._report_lost_acks(result.lost_acks)
        return result

    def begin(self, entry: Reserved) -> None:
        """Note `entry` as the job this worker runs (and name it in Redis if it is suspect)."""
        self.note.write(entry.token, entry.id)
        if not entry.suspect:
            return
        try:
            self.announcer.set(self.running_key, f"{entry.token} {entry.id}", self.marker_ttl_ms)
        except BaseException:
            with self._lock:
                if self.current is entry:
                    self._waiting.appendleft(entry)
                    self.current = None
            raise

    def finished(self, entry: Reserved, runtime: float) -> None:
        """`entry` ran to the end: its ack rides the next fetch (or the keeper sends it)."""
        self.runtime_ewma = 0.8 * self.runtime_ewma + 0.2 * runtime
        with self._lock:
            self.current = None
            self._finished.append(entry)

    def dropped(self, entry: Reserved) -> None:
        """`entry` is no longer ours to ack (released, acked already, or its lease was lost)."""
        with self._lock:
            if self.current is entry:
                self.current = None
            self._held.pop(entry.id, None)

    def settle(self) -> None:
        """Read outstanding replies and ack every finished job now."""
        self.link.drain()
        with self._lock:
            acks, self._finished = self._finished, []
        if not acks:
            return
        try:
            lost = ack(self.link.call, self.prefix, [e.key for e in acks])
        except BaseException:
            self._unsent(acks)
            raise
        with self._lock:
            self._forget(acks)
        self._report_lost_acks(lost)

    def ack_now(self, entry: Reserved) -> None:
        """Ack `entry` (and what finished before it) now: used once its failure is stored."""
        self.settle()
        self._report_lost_acks(ack(self.link.call, self.prefix, [entry.key]))
        self.dropped(entry)

    def release(self, entry: Reserved, release_entry: ReleaseEntry) -> bool:
        """Put `entry` back as `release_entry` says; False when its lease was lost."""
        self.settle()
        kept = release(self.link.call, self.prefix, [release_entry])
        self.dropped(entry)
        return not kept

    def give_back_waiting(self) -> None:
        """Hand back every reserved-ahead job, to the front of its queue, attempt not counted."""
        with self._lock:
            entries = list(self._waiting)
            self._waiting.clear()
        if not entries:
            return
        try:
            release(self.link.call, self.prefix, give_back_entries(entries))
        except BaseException:
            with self._lock:
                self._waiting.extendleft(reversed(entries))
            raise
        with self._lock:
            self._forget(entries)

    def recover(self) -> None:
        """After a failed round trip, once Redis answers again: ack what finished and name
        the running job again (its marker may not have arrived)."""
        self.link.unknown()
        self.settle()
        current = self.current
        if current is not None and current.suspect and self.running_key:
            self.link.command("SET", self.running_key, f"{current.token} {current.id}", "PX", self.marker_ttl_ms)

    def held_count(self) -> int:
        return len(self._held)

    def batch_size(self, batch_seconds: float, prefetch: int, limit: int = 0) -> int:
        size = int(batch_seconds / max(self.runtime_ewma, 1e-6))
        if limit:
            size = min(size, limit)
        return max(1, min(prefetch, size))

    def _unsent(self, acks: list[Reserved]) -> None:
        """The call carrying `acks` failed: keep them to send again (acks are fenced, so twice is harmless)."""
        with self._lock:
            self._finished[:0] = acks

    def _forget(self, entries: Sequence[Reserved]) -> None:
        for entry in entries:
            if self._held.get(entry.id) is entry:
                del self._held[entry.id]

    def _report_lost_acks(self, ids: Sequence[str]) -> None:
        for job_id in ids:
            self.log.event("lease", f"job {job_id} finished here after its lease was lost: another worker may run it again")

    # -- keeper thread ------------------------------------------------------------

    def leases(self) -> list[Reserved]:
        with self._lock:
            return list(self._held.values())

    def extended(self, sent: float, entries: Sequence[Reserved], lost_ids: Sequence[str]) -> None:
        """The keeper extended `entries` (request sent at monotonic `sent`); `lost_ids` were no longer ours."""
        lost = set(lost_ids)
        with self._lock:
            for entry in entries:
                if entry.id not in lost:
                    entry.valid_until = sent + self.lease - self.margin
                    continue
                if self._held.get(entry.id) is not entry or any(e is entry for e in self._finished):
                    continue  # acked meanwhile, or its ack will report it
                del self._held[entry.id]
                if entry in self._waiting:
                    self._waiting.remove(entry)
                    self.log.event("lease", f"lease on reserved job {entry.id} was lost before it started: not run here")
                elif entry is self.current and not self.current_lease_lost:
                    self.current_lease_lost = True
                    self.log.event("lease", f"lease on running job {entry.id} was lost: another worker may run it too; "
                                            "its outcome here will not be recorded")

    def take_overdue(self, hold: float) -> list[Reserved]:
        """Reserved-ahead jobs to hand back because the worker made no progress for `hold` seconds."""
        with self._lock:
            if not self._waiting or time.monotonic() - self.last_progress < hold:
                return []
            entries = list(self._waiting)
            self._waiting.clear()
            self._returning.extend(entries)
            return entries

    def returning(self) -> list[Reserved]:
        """Handed back, release not confirmed yet (the keeper retries)."""
        with self._lock:
            return list(self._returning)

    def returned(self, entries: Sequence[Reserved]) -> None:
        with self._lock:
            self._returning = [e for e in self._returning if not any(e is x for x in entries)]
            self._forget(entries)

    def take_acks_if_running_long(self) -> list[Reserved]:
        """Finished jobs to ack from the keeper while the next job runs long (ACK_AFTER)."""
        with self._lock:
            if not self._finished or self.current is None or time.monotonic() - self.current_since < ACK_AFTER:
                return []
            acks, self._finished = self._finished, []
            return acks

    def acked(self, entries: Sequence[Reserved], lost_ids: Sequence[str] | None) -> None:
        """The keeper's ack of `entries` went through (lost_ids: leases lost), or failed (None)."""
        if lost_ids is None:
            self._unsent(list(entries))
            return
        with self._lock:
            self._forget(entries)
        self._report_lost_acks(lost_ids)

    def hold_limit(self) -> float:
        return max(MIN_HOLD, 4 * self.runtime_ewma)


def _give_back(entry: Reserved) -> ReleaseEntry:
    return ReleaseEntry(entry.queue, entry.id, entry.token, count_attempt=False, front=True)


def give_back_entries(entries: Sequence[Reserved]) -> list[ReleaseEntry]:
    """Release entries for reserved-ahead jobs, in an order that keeps them at the front in queue order."""
    return [_give_back(e) for e in reversed(entries)]
