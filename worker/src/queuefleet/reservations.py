"""The main loop's side of reserving, starting and acking jobs (local state: held_jobs.py).

The three promises and how this module keeps them:

* Only the job that was running is blamed for a dead worker. Before a job runs,
  `begin` notes it in a file on this host (running_notes.py: one local write, no network);
  a neighbour that finds this worker dead blames only the job the note names, and
  the others it held go back unblamed (lua/reap.lua). A job whose last holder died
  where nobody could read its note comes back "suspect"; before such a job runs
  it is also named in Redis (a SET without reply, on the write-only connection),
  so that even reaping by lease expiry blames it precisely if it kills again.
* A job no worker has started is never held behind another's runtime. Jobs are
  reserved ahead only from the top-priority queue (nothing can outrank them) and
  only about `batch_seconds` of them by recent run times; the keeper hands back
  the ones still waiting as soon as the worker stops making progress.
* A job never runs twice while its worker lives. A reserved job is started only
  while its lease is known to hold (`valid_until`, renewed by the keeper's
  extensions); acks and releases are fenced by the lease token in Redis.

Acks of finished jobs ride the next reservation round trip, or the keeper sends them
when the next job runs long.

With durable mode on (durable.py: the URL's wait_replicas, or QUEUEFLEET_DURABLE_PUSH), each
reservation round trip that acks or reserves ends with a WAIT for the replicas. When they do
not confirm it and the Sentinels name another master, those writes went to a demoted master
and are lost with it: the acks are sent again (to the new master, where the jobs are still
reserved under this worker's tokens) and the jobs just reserved are not run here (they are
ready on the new master, or reserved there under this worker's token, and then taken back by
the next fetch). So a switchover makes no job run twice through this worker's own writes.
"""

from __future__ import annotations

import time

import redis

from .durable import Durability

from .held_jobs import Holdings, give_back_entries
from .identity import ProcessIdentity
from .logs import JobLog
from .protocol import FetchResult, ReleaseEntry, Reserved, ack, fetch, release, rewrite
from .redis_link import Link
from .running_notes import RunningNote

RECLAIM_FOR = 20.0  # seconds after a lost fetch reply during which its reservations are looked for
WAIT_MS = 200  # durable mode: longest a fetch waits for the replicas (a healthy one answers in a round trip)
UNCONFIRMED_PAUSE = 10.0  # seconds without WAIT after the replicas did not confirm and the master stayed
MOVE_LOOKS = 10  # unconfirmed: ask the Sentinels this many times, 0.1 s apart, whether the master moved


class Reservations:
    def __init__(self, link: Link, note: RunningNote, prefix: str, identity: ProcessIdentity, queues: list[str],
                 lease: float, log: JobLog, durability: Durability | None = None) -> None:
        self.link = link
        self.durability = durability or Durability()
        self.wait_after = 0.0  # monotonic time from which fetches WAIT again
        self.note = note
        self.prefix = prefix
        self.identity = identity
        self.queues = queues
        self.lease_ms = int(lease * 1000)
        self.marker_ttl_ms = int(lease * 2000) + 10_000  # the marker must outlive the lease of a dead worker
        self.log = log
        self.holdings = Holdings(lease, log)
        self.running_key = ""  # told by Redis at the first fetch (the key layout lives in Lua)
        self.reclaim_until = 0.0  # after a fetch whose reply was lost: look for what it reserved ...
        self.reclaim_next = 0.0  # ... at most once a second (it scans the reserved sets)

    @property
    def current(self) -> Reserved | None:
        return self.holdings.current

    @property
    def waiting(self) -> int:
        return len(self.holdings.waiting)

    def take(self) -> Reserved | None:
        return self.holdings.take()

    # -- reserving -----------------------------------------------------------------

    def fetch(self, max_jobs: int) -> FetchResult:
        """Ack what is finished and reserve the next jobs: one round trip. Reserved-ahead jobs whose lease is no longer certain are
        given back first."""
        if self.waiting:
            self.give_back_waiting()
        acks = self.holdings.take_finished()
        sent = time.monotonic()
        keep = None
        if self.reclaim_next <= sent < self.reclaim_until:
            keep, self.reclaim_next = [e.id for e in self.holdings.leases()], sent + 1.0
        confirmed: list[int] = []
        run = self.link.call
        if self.durability.on and (acks or max_jobs > 0) and sent >= self.wait_after:
            run = lambda name, args: self._call_and_wait(name, args, confirmed)  # noqa: E731
        try:
            result = fetch(run, self.prefix, self.queues, token_base=self.identity.token_base,
                           host=self.identity.host, lease_ms=self.lease_ms, max_jobs=max_jobs, acks=[e.ack_key for e in acks],
                           keep=keep)
            if confirmed and confirmed[0] < self.durability.replicas and (acks or result.jobs) and self._master_moved():
                self.link.reset()
                raise redis.ConnectionError(f"the master was replaced under this worker: {len(acks)} ack(s) sent again, "
                                            f"{len(result.jobs)} job(s) left to the new master")
            if confirmed and confirmed[0] < self.durability.replicas:
                # A slow or missing replica, the same master: go on, without making every fetch wait for it.
                self.wait_after = time.monotonic() + UNCONFIRMED_PAUSE
        except BaseException:
            self.holdings.unsent(acks)
            # The request may still reach Redis (a network that stalls, then heals) and
            # reserve jobs this worker never hears of: look for them for a while.
            self.reclaim_until = time.monotonic() + RECLAIM_FOR
            raise
        self.running_key = result.running_key
        if result.reclaimed:
            self.log.event("redis", f"took back {result.reclaimed} job(s) reserved by a request whose reply was lost")
        self.holdings.forget(acks)
        self.holdings.reserved(result.jobs, sent)
        self.holdings.report_lost_acks(result.lost_acks)
        return result

    def _master_moved(self) -> bool:
        """Unconfirmed writes: a switchover (the Sentinels name another master within a second
        of the promotion), or a slow or missing replica (they do not)."""
        for _ in range(MOVE_LOOKS):
            if self.link.master_moved():
                return True
            if not self.link.follows_sentinels:
                return False
            time.sleep(0.1)
        return False

    def _call_and_wait(self, name: str, args: list, confirmed: list[int]) -> object:
        reply, replicas = self.link.call_and_wait(name, args, self.durability.replicas,
                                                  min(self.durability.timeout_ms, WAIT_MS))
        confirmed.append(replicas)
        return reply

    # -- running and settling --------------------------------------------------------

    def begin(self, entry: Reserved) -> None:
        """Note `entry` as the job this worker runs (and name it in Redis if it is suspect)."""
        self.note.write(entry.token, entry.id)
        if not entry.suspect:
            return
        try:
            self.link.command("SET", self.running_key, f"{entry.token} {entry.id}", "PX", self.marker_ttl_ms)
        except BaseException:
            self.holdings.put_back(entry)
            raise

    def ended(self) -> None:
        """The handler of the job begun last is over (however it ended)."""
        self.note.clear()

    def finished(self, entry: Reserved, runtime: float) -> None:
        """`entry` ran to the end: its ack rides the next fetch (or the keeper sends it)."""
        self.holdings.done(entry, runtime)

    def dropped(self, entry: Reserved) -> None:
        self.holdings.dropped(entry)

    def settle(self) -> None:
        """Ack every finished job now."""
        acks = self.holdings.take_finished()
        if not acks:
            return
        try:
            lost = ack(self.link.call, self.prefix, [e.ack_key for e in acks])
        except BaseException:
            self.holdings.unsent(acks)
            raise
        self.holdings.acked(acks, lost)

    def ack_now(self, entry: Reserved) -> None:
        """Ack `entry` (and what finished before it) now: used once its failure is stored."""
        self.settle()
        self.holdings.report_lost_acks(ack(self.link.call, self.prefix, [entry.ack_key]))
        self.holdings.dropped(entry)

    def release(self, entry: Reserved, release_entry: ReleaseEntry) -> bool:
        """Put `entry` back as `release_entry` says; False when its lease was lost."""
        self.settle()
        kept = release(self.link.call, self.prefix, [release_entry])
        self.holdings.dropped(entry)
        return not kept

    def rewrite(self, entry: Reserved, payload: str) -> bool:
        """Replace the stored payload of `entry` (still reserved); False when its lease was lost.
        `entry.raw` follows, so the watchdog sees the job as it now is in Redis."""
        if not rewrite(self.link.call, self.prefix, entry, payload):
            return False
        entry.raw = payload.encode()
        return True

    def give_back_waiting(self) -> None:
        """Hand back every reserved-ahead job, to the front of its queue, attempt not counted."""
        entries = self.holdings.take_waiting()
        if not entries:
            return
        try:
            release(self.link.call, self.prefix, give_back_entries(entries))
        except BaseException:
            self.holdings.wait_again(entries)
            raise
        self.holdings.forget(entries)

    def recover(self) -> None:
        """After a failed round trip, once Redis answers again: ack what finished and name
        the running job again if it is suspect (its marker may not have arrived)."""
        self.link.reset()
        self.settle()
        current = self.current
        if current is not None and current.suspect and self.running_key:
            self.link.command("SET", self.running_key, f"{current.token} {current.id}", "PX", self.marker_ttl_ms)

    def held_count(self) -> int:
        return len(self.holdings.held)

    def batch_size(self, batch_seconds: float, prefetch: int, limit: int = 0) -> int:
        size = int(batch_seconds / max(self.holdings.runtime_ewma, 1e-6))
        if limit:
            size = min(size, limit)
        return max(1, min(prefetch, size))

