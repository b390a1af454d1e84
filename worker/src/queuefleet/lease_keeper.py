"""The keeper thread: everything a worker must do while its main thread is busy in a handler.

Every `interval` (at most a third of the lease) it extends the leases the worker
holds, writes the heartbeat and takes back the jobs of neighbours that died on
this host. Between those ticks it hands back reserved-ahead jobs as soon as the
main thread stops making progress (a job overruns its estimate), so no job waits
behind another's runtime; and it runs the watchdog for handlers that ignore their
timeout or a drain deadline. It has its own Redis connection.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, TextIO

import redis

from .held_jobs import ACK_AFTER, give_back_entries
from .identity import ProcessIdentity, is_dead, parse_neighbour
from .logs import JobLog
from .outage import Outage, is_transient
from .protocol import ack, client_runner, extend, heartbeat, reap, release
from .reservations import Reservations
from .running_notes import read_note, remove_note


@dataclass
class KeeperSettings:
    prefix: str
    lease: float
    interval: float
    heartbeat_ttl: int


class Keeper(threading.Thread):
    def __init__(self, client: redis.Redis, settings: KeeperSettings, identity: ProcessIdentity,
                 reservations: Reservations, outage: Outage, log: JobLog,
                 heartbeat_fields: Callable[[], dict[str, Any]], watchdog: Callable[[], None],
                 stderr: TextIO | None = None) -> None:
        super().__init__(name="queuefleet-keeper", daemon=True)
        self.run_script = client_runner(client)
        self.settings = settings
        self.identity = identity
        self.reservations = reservations
        self.holdings = reservations.holdings
        self.outage = outage
        self.log = log
        self.heartbeat_fields = heartbeat_fields
        self.watchdog = watchdog
        self.stderr = stderr or sys.stderr
        self.finish = threading.Event()
        self.wake = threading.Event()  # set by the main thread when it reserved jobs ahead
        self.sleeping_until = 0.0
        self.reaped = 0  # neighbours' reservations taken back (for tests and logs)

    def run(self) -> None:
        next_tick = 0.0
        while not self.finish.is_set():
            now = time.monotonic()
            try:
                answered = False
                if now >= next_tick:
                    next_tick = now + self.settings.interval
                    self.tick()
                    answered = True
                answered = self.hand_back_overdue() or answered
                answered = self.ack_finished() or answered
                if answered:
                    self.outage.back(by="keeper")
            except Exception as exc:  # noqa: BLE001 - the keeper must not die
                if is_transient(exc):
                    self.outage.lost(exc, by="keeper")
                else:
                    print(f"queuefleet keeper: {exc.__class__.__name__}: {exc}", file=self.stderr, flush=True)
            self.log.flush()
            self.watchdog()
            wait = next_tick - time.monotonic()
            if self.holdings.waiting:
                wait = min(wait, self.holdings.hold_limit() / 2)
            elif self.holdings.current is not None:
                wait = min(wait, ACK_AFTER)
            wait = max(0.001, wait)
            self.sleeping_until = time.monotonic() + wait
            self.wake.wait(wait)
            self.wake.clear()

    def tick(self) -> None:
        """Extend leases, write the heartbeat, take back dead neighbours' jobs, retry hand-backs."""
        entries = self.holdings.leases()
        sent = time.monotonic()
        lost = extend(self.run_script, self.settings.prefix, [e.key for e in entries], int(self.settings.lease * 1000))
        self.holdings.extended(sent, entries, lost)
        identity = self.identity
        fields = self.heartbeat_fields()
        registry = heartbeat(self.run_script, self.settings.prefix, identity.worker_id, self.settings.heartbeat_ttl,
                             identity.namespace, max(600, self.settings.heartbeat_ttl * 10),
                             identity.registry_value(fields["queues"].split(",")), identity.token_base,
                             self.reservations.marker_ttl_ms, fields)
        self.reap_dead_neighbours(registry)
        returning = self.holdings.still_returning()
        if returning:
            release(self.run_script, self.settings.prefix, give_back_entries(returning))
            self.holdings.returned(returning)

    def reap_dead_neighbours(self, registry: dict[str, str]) -> None:
        if not self.identity.namespace:
            return
        for worker_id, value in registry.items():
            if worker_id == self.identity.worker_id:
                continue
            neighbour = parse_neighbour(worker_id, value)
            if neighbour is None or not is_dead(neighbour.pid, neighbour.starttime):
                continue
            known = read_note(neighbour.pid, neighbour.instance)
            blamed, given_back = reap(self.run_script, self.settings.prefix, self.identity.namespace, worker_id, value,
                                      neighbour.token_base, known)
            remove_note(neighbour.pid, neighbour.instance)
            self.reaped += len(blamed) + given_back
            if blamed or given_back:
                running = f"; it was running job {', '.join(blamed)}, which counts as lost" if blamed else ""
                self.log.event("reaped", f"worker {worker_id} died: took back its {len(blamed) + given_back} reserved "
                                         f"job(s) at once{running}")

    def watch_waiting(self) -> None:
        """Called by the main thread when it reserved jobs ahead: make sure the keeper looks
        again within the hold limit (without waking it when it will anyway)."""
        if self.sleeping_until > time.monotonic() + self.holdings.hold_limit():
            self.wake.set()

    def stop(self) -> None:
        self.finish.set()
        self.wake.set()

    def hand_back_overdue(self) -> bool:
        """True when it talked to Redis (and Redis answered)."""
        entries = self.holdings.take_overdue()
        if not entries:
            return False
        release(self.run_script, self.settings.prefix, give_back_entries(entries))
        self.holdings.returned(entries)
        return True

    def ack_finished(self) -> bool:
        """Ack the jobs finished before the one running now, once it runs long."""
        entries = self.holdings.take_acks_if_running_long()
        if not entries:
            return False
        try:
            lost = ack(self.run_script, self.settings.prefix, [e.ack_key for e in entries])
        except BaseException:
            self.holdings.acked(entries, None)
            raise
        self.holdings.acked(entries, lost)
        return True
