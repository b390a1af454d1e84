"""The worker loop: reserve, run, settle; stop, pause and restart when asked; ride out Redis outages.

The parts, each in its own module: reservations.py (reserving ahead, acking, leases as
this process knows them), lease_keeper.py (lease extension, heartbeat, hand-back, dead
neighbours), execution.py (one job under its timeout), failures.py (retry, failed jobs,
database outages), watchdog.py, restarts.py, signals.py, outage.py, redis_link.py, running_notes.py.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

import redis

from .callbacks import FailureCallbacks
from .connection import client_from_url, redacted_url
from .durable import Durability
from .execution import JobRunner, Kind, Outcome
from .database import FailureRecorder, LazyStore, StartupCheck
from .failures import FailurePolicy
from .handlers import HandlerRegistry
from .identity import current_identity
from .job_counters import DONE, tally
from .lease_keeper import Keeper, KeeperSettings
from .logs import JobLog
from .outage import Backoff, Outage, describe, is_transient
from .payload import MAX_PAYLOAD
from .protocol import FetchResult, Reserved, client_runner, deregister
from .redis_link import Link, worker_client_kwargs
from .reservations import Reservations
from .restarts import RestartWatch
from .running_notes import RunningNote, remove_stale_notes
from .signals import WakeUp, WorkerSignals
from .timeouts import HandlerGuard
from .watchdog import Watchdog

EXIT_CONFIG = 1
CHECK_AT_EXIT = 2.0  # seconds a stopping worker waits for its database check to end, so a short run still reports


@dataclass
class WorkerOptions:
    queues: list[str]
    allowed: tuple[str, ...]
    tries: int = 1
    timeout: float = 60.0
    memory: int = 128
    sleep: float = 3.0
    backoff: list[float] = field(default_factory=lambda: [0.0])
    max_jobs: int = 0
    max_time: float = 0.0
    stop_when_empty: bool = False
    once: bool = False
    name: str = "default"
    release: str = ""
    lease: float = 30.0
    drain_timeout: float = 0.0
    max_lost: int = 3
    prefetch: int = 32
    batch_seconds: float = 0.05
    heartbeat_interval: float = 2.0
    timeout_grace: float = 5.0
    log_format: str = "plain"
    prefix: str = "queuefleet"
    on_failure: str = ""  # `module:function` called for every job that fails for good (allow-listed)
    max_payload: int = MAX_PAYLOAD  # bytes: a larger payload goes to failed jobs unparsed


class Worker:
    def __init__(self, redis_url: str, store: FailureRecorder, options: WorkerOptions, *,
                 stdout: TextIO | None = None, stderr: TextIO | None = None,
                 exit: Callable[[int], Any] = os._exit) -> None:
        self.opt = options
        self.identity = current_identity()
        self.log = JobLog(stdout, fmt=options.log_format, pool=options.name)
        self.stderr = stderr or sys.stderr
        self.where = redacted_url(redis_url)
        self.link = Link(redis_url)
        self.keeper_client = client_from_url(redis_url, health_check_interval=0, **worker_client_kwargs())
        self.outage = Outage(self.log, self.where)
        self.backoff = Backoff()
        self.guard = HandlerGuard()
        self.note = RunningNote(self.identity.pid, self.identity.instance)
        self.signals = WorkerSignals(self.guard, on_first_stop=self.note.stopping)
        self.reservations = Reservations(self.link, self.note, options.prefix, self.identity, options.queues, options.lease,
                                         self.log, Durability.resolve(redis_url))
        handlers = HandlerRegistry(options.allowed)
        self.runner = JobRunner(handlers, self.guard, self.log, default_tries=options.tries,
                                default_timeout=options.timeout, max_lost=options.max_lost, max_payload=options.max_payload)
        callbacks = FailureCallbacks(handlers, self.guard, self.log, self.stderr, default_timeout=options.timeout,
                                     hook=FailureCallbacks.resolve_hook(handlers, options.on_failure))
        self.failures = FailurePolicy(self.runner, store, self.where, self.log, backoff=options.backoff,
                                      callbacks=callbacks, stderr=self.stderr)
        keeper_runner = client_runner(self.keeper_client)
        self.watchdog = Watchdog(self.guard, self.signals, self.reservations, self.failures, keeper_runner, options.prefix,
                                 self.log, self.identity.worker_id, options.timeout_grace, drain_limit(options), exit)
        self.keeper = Keeper(
            self.keeper_client,
            KeeperSettings(options.prefix, options.lease, min(options.heartbeat_interval, options.lease / 3),
                           max(10, int(options.heartbeat_interval * 5))),
            self.identity, self.reservations, self.outage, self.log, self._heartbeat_fields, self.watchdog.check,
            self.stderr,
        )
        self.processed = 0
        self.started_at = time.time()
        self.exit_code = 0
        self.restarts = RestartWatch(self.identity.host, options.release)
        self._idle_looks = 0
        self._last_memory_check = 0.0
        self.database_check = StartupCheck(store, warn=self._say, fatal=self._database_unusable) \
            if isinstance(store, LazyStore) else None

    @property
    def id(self) -> str:
        return self.identity.worker_id

    # -- lifecycle --------------------------------------------------------------

    def run(self) -> int:
        self.signals.install()
        self.note.open()
        remove_stale_notes()
        if self.database_check is not None:
            self.database_check.start()  # beside the boot and the first jobs (database.py)
        if not self._boot():
            return self.exit_code
        self.keeper.start()
        self.log.event("starting", f"worker {self.id} pool={self.opt.name} release={self.opt.release or '-'} "
                                   f"queues={','.join(self.opt.queues)}")
        deadline = time.monotonic() + self.opt.max_time if self.opt.max_time else None
        try:
            while not self.signals.stopping:
                try:
                    self._step()
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    self._redis_lost(exc)
                    continue
                self._after_job(deadline)
        finally:
            self._shutdown()
        return self.exit_code

    def _boot(self) -> bool:
        """Wait for Redis (logged once) instead of exiting: supervisor gives up on a worker that exits fast."""
        while not self.signals.stopping:
            try:
                self.link.command("PING")
                # Heartbeat (a write: an OOM Redis is waited out here) and dead predecessors reaped
                # before anything else: the process supervisor replaced is blamed by its note on
                # this host, precisely, even when its leases ran out during supervisor's backoff
                # (a fetch would take such jobs back as orphans nobody can explain).
                self.keeper.tick()
                result = self.reservations.fetch(0)
                self.restarts.boot(result.restart, result.host_restart)
                self.outage.back()
                return True
            except redis.AuthenticationError as exc:
                print(f"queue: Redis at {self.where} refused the credentials: {describe(exc)}", file=self.stderr, flush=True)
                self.exit_code = EXIT_CONFIG
                return False
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self.outage.lost(exc, waiting=True)
                self.link.reset()
                self.backoff.pause(lambda: self.signals.stopping)
        self.log.event("stopping", f"worker {self.id} exits before it started: {self.signals.stop_reason}")
        return False

    def _step(self) -> None:
        if self.signals.paused:
            self._pause()
            return
        entry = self.reservations.take()
        if entry is None:
            entry = self._reserve()
            if entry is None:
                return
        self._process(entry)

    def _after_job(self, deadline: float | None) -> None:
        opt, done = self.opt, self.processed + self.failures.failed
        if opt.once and done:
            self.signals.stop("--once: one job done")
        elif opt.max_jobs and done >= opt.max_jobs:
            self.signals.stop(f"--max-jobs {opt.max_jobs} reached")
        elif deadline is not None and time.monotonic() >= deadline:
            self.signals.stop(f"--max-time {opt.max_time:g}s reached")
        now = time.monotonic()
        if opt.memory and now - self._last_memory_check >= 0.1:
            self._last_memory_check = now
            rss_mb = rss_bytes() / (1024 * 1024)
            if rss_mb >= opt.memory:
                self.signals.stop(f"memory {rss_mb:.0f}MB >= --memory {opt.memory}MB")

    def _say(self, line: str) -> None:
        print(f"queue: {line}", file=self.stderr, flush=True)

    def _database_unusable(self, line: str) -> None:
        """The database check's verdict (its thread): not migrated or a bad URL. The worker stops as
        on SIGTERM, its job finishing, and exits 1 for supervisor to show."""
        self._say(line)
        self.exit_code = EXIT_CONFIG
        self.signals.stop_soon("the failed-jobs database cannot be used (see stderr)")

    def _shutdown(self) -> None:
        if self.database_check is not None and self.database_check.is_alive():
            self.database_check.join(timeout=CHECK_AT_EXIT)  # a worker that ran one job still says why it cannot store one
        self.keeper.stop()
        deadline = time.monotonic() + 5
        while True:
            try:
                self.reservations.give_back_waiting()
                self.reservations.settle()
                break
            except Exception as exc:  # noqa: BLE001
                if not is_transient(exc) or time.monotonic() > deadline:
                    self.log.event("error", f"could not hand back or ack {self.reservations.held_count()} job(s) before "
                                            f"exit ({describe(exc)}); their leases run out and they run again")
                    break
                self.link.reset()
                time.sleep(0.2)
        if self.keeper.is_alive():
            self.keeper.join(timeout=5)
        try:
            deregister(client_runner(self.keeper_client), self.opt.prefix, self.id, self.identity.namespace,
                       self.identity.registry_value(self.opt.queues), self.identity.token_base)
        except redis.RedisError:
            pass
        self.log.event("stopping", f"worker {self.id} exits: {self.signals.stop_reason or 'stopped'}",
                       processed=self.processed, failed=self.failures.failed)
        self.link.close()
        self.note.remove()

    # -- reserving ---------------------------------------------------------------

    def _reserve(self) -> Reserved | None:
        opt = self.opt
        limit = 1 if opt.once else (opt.max_jobs - self.processed - self.failures.failed if opt.max_jobs else 0)
        result = self.reservations.fetch(self.reservations.batch_size(opt.batch_seconds, opt.prefetch, limit))
        self.outage.back()
        self.backoff.reset()
        restart = self.restarts.due(result.restart, result.host_restart)
        if restart is not None:
            self.signals.stop(restart)
            self.reservations.give_back_waiting()
            return None
        entry = self.reservations.take()
        if entry is not None:
            self._idle_looks = 0
            if self.reservations.waiting:
                self.keeper.watch_waiting()
            return entry
        self.log.flush()
        if opt.stop_when_empty:
            self.signals.stop("--stop-when-empty: queues are empty")
        elif opt.once and self._idle_looks >= 1:
            self.signals.stop("--once: no job arrived")
        else:
            self._idle_looks += 1
            self._wait(result)
        return None

    def _wait(self, result: FetchResult) -> None:
        """Block until a push wakes us, a delayed job comes due, or --sleep passes."""
        timeout = min(self.opt.sleep, self.link.socket_timeout - 1)
        if result.next_due_ms >= 0:
            timeout = min(timeout, max(0.001, (result.next_due_ms - result.now_ms) / 1000))
        if self.signals.stopping or self.signals.paused or timeout <= 0:
            return
        self.signals.blocking = True
        try:
            if not self.signals.stopping and not self.signals.paused:
                self.link.command("BRPOP", *result.wait_keys, round(timeout, 3))
        except WakeUp:
            self.link.reset()
        finally:
            self.signals.blocking = False

    # -- running and settling one job ----------------------------------------------

    def _process(self, entry: Reserved) -> None:
        self.reservations.begin(entry)
        try:
            outcome = self.runner.run(entry)
        except Exception as exc:  # noqa: BLE001 - a bug of ours must fail this job, not crash-loop the worker
            print(f"queuefleet: internal error on job {entry.id[:80]}: {exc.__class__.__name__}: {exc}", file=self.stderr, flush=True)
            outcome = Outcome(Kind.MALFORMED, error=f"queuefleet could not process this job: {exc.__class__.__name__}: {exc}")
        self.reservations.ended()  # its handler is over: a death from now on is not this job's doing
        self._settle(entry, outcome)

    def _settle(self, entry: Reserved, outcome: Outcome) -> None:
        """Record what happened to `entry`; Redis outages are waited out, never turned into a lost job."""
        if self.reservations.holdings.current_lease_lost:
            job = outcome.job
            self.log.job("lease-lost", entry.id, job.job if job else "-", entry.queue, entry.attempts, outcome.runtime,
                         outcome=outcome.kind.value)
            self.reservations.dropped(entry)
            return
        if outcome.kind is Kind.DONE:
            assert outcome.job is not None
            self.processed += 1
            entry.tally = tally(outcome.job.job, DONE, outcome.runtime)
            self.reservations.finished(entry, outcome.runtime)
            self.log.job("done", entry.id, outcome.job.job, entry.queue, entry.attempts, outcome.runtime)
            return
        r, failures = self.reservations, self.failures
        settle = {
            Kind.ERROR: lambda: failures.failed_attempt(entry, outcome, r.release, r.ack_now, r.rewrite),
            Kind.RELEASE: lambda: failures.released(entry, outcome, r.release, r.ack_now, r.rewrite),
            Kind.INTERRUPTED: lambda: failures.interrupted(entry, outcome, r.release),
        }.get(outcome.kind, lambda: failures.fail(entry, outcome, r.release, r.ack_now, r.rewrite))
        if outcome.kind is Kind.ERROR:
            holdings = self.reservations.holdings
            holdings.runtime_ewma = 0.8 * holdings.runtime_ewma + 0.2 * outcome.runtime
        self._until_redis_answers(settle)

    def _until_redis_answers(self, action: Callable[[], None]) -> None:
        while True:
            try:
                action()
                self.outage.back()
                self.backoff.reset()
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._redis_lost(exc, stopping_ok=False)

    def _redis_lost(self, exc: BaseException, *, stopping_ok: bool = True) -> None:
        """Log once, wait the next backoff, and put the link's state right once Redis answers."""
        self.outage.lost(exc)
        self.link.reset()
        self.backoff.pause(lambda: stopping_ok and self.signals.stopping)
        try:
            self.reservations.recover()
        except Exception as again:
            if not is_transient(again):
                raise
            self.link.reset()

    # -- paused --------------------------------------------------------------------

    def _pause(self) -> None:
        self.reservations.give_back_waiting()
        self.reservations.settle()
        self.log.flush()
        deadline = time.monotonic() + 0.2
        while self.signals.paused and not self.signals.stopping and time.monotonic() < deadline:
            time.sleep(0.05)

    # -- keeper callbacks ------------------------------------------------------------

    def _heartbeat_fields(self) -> dict[str, Any]:
        current = self.reservations.current
        busy = current is not None and self.guard.in_handler
        state = "paused" if self.signals.paused else ("busy" if busy else "idle")
        return {
            "id": self.id, "host": self.identity.host, "pid": self.identity.pid, "pool": self.opt.name,
            "release": self.opt.release, "queues": ",".join(self.opt.queues), "state": state,
            "job": self.guard.job_name if busy else "", "job_id": self.guard.job_id if busy else "",
            "processed": self.processed, "failed": self.failures.failed,
            "started": f"{self.started_at:.3f}", "last_seen": f"{time.time():.3f}",
        }


def drain_limit(options: WorkerOptions) -> float:
    """Seconds a job may still run after the first stop signal (0: no limit): --drain-timeout, else
    the worker's --timeout, never a job's own longer timeout. Supervisor's stopwaitsecs is set
    above --timeout (the role adds a margin): the worker puts the job back itself, uncounted,
    before supervisor would kill it."""
    return options.drain_timeout if options.drain_timeout > 0 else options.timeout


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

