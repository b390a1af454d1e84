"""The worker loop: reserve, run, ack — with leases, hard timeouts and graceful stops.

One process runs one job at a time in its main thread. A keeper thread beside
it extends the leases of the jobs the worker holds, writes its heartbeat,
notices restart signals and, as a last resort, ends a process whose job
ignored its timeout. Jobs are reserved in small batches sized so a batch takes
about `batch_seconds` of work: fast jobs cost one Redis round trip per batch
(ack of the previous batch and reserve of the next in one script), slow jobs
are reserved one at a time so strict queue priority holds.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

import redis

from .failed import FailedJobStore
from .handlers import HandlerNotFound, HandlerRegistry, JobNotAllowed
from .logs import JobLog
from .payload import Job, PayloadError
from .queue import FetchResult, Queue, ReleaseEntry, Reserved, RestartSignal, redacted_url

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


class JobTimeout(BaseException):
    """Raised inside a handler that ran past its timeout (BaseException: `except Exception` won't swallow it)."""


class JobInterrupted(BaseException):
    """Raised inside a handler when the worker must stop now (second signal or drain deadline)."""


class _WakeUp(BaseException):
    """Breaks an idle blocking wait when a signal arrives."""


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


class Worker:
    def __init__(
        self,
        queue: Queue,
        store: FailedJobStore,
        options: WorkerOptions,
        *,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        exit: Callable[[int], Any] = os._exit,
    ) -> None:
        self.queue = queue
        self.store = store
        self.opt = options
        self.handlers = HandlerRegistry(options.allowed)
        self.log = JobLog(stdout, fmt=options.log_format, pool=options.name)
        self.stderr = stderr or sys.stderr
        self._hard_exit = exit
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"{self.host}:{self.pid}"
        self.lease_ms = int(options.lease * 1000)
        self.connection_name = redacted_url(queue.url)

        self.processed = 0
        self.failed = 0
        self.started_at = time.time()
        self.stop_reason: str | None = None
        self.exit_code = 0
        self.paused = False

        self._held: dict[str, tuple[str, str, str]] = {}
        self._lost: set[str] = set()
        self._acks: list[tuple[str, str, str]] = []
        self._ack_lock = threading.Lock()  # the keeper flushes acks while a long job runs
        self._batch: deque[Reserved] = deque()
        self._seen = (RestartSignal(), RestartSignal())  # global and per-host, as at boot
        self._remote_restart: tuple[int, str] | None = None
        self._current: Job | None = None
        self._current_entry: Reserved | None = None
        self._current_started = 0.0
        self._current_timeout = 0.0
        self._in_handler = False
        self._blocking = False
        self._signals = 0
        self._stop_signal_at = 0.0
        self._runtime_ewma = options.batch_seconds  # unknown jobs count as slow: start with batches of one
        self._last_ack_flush = time.monotonic()
        self._last_memory_check = 0.0
        self._redis_down_since: float | None = None
        self._redis_pause = 0.1
        self._idle_waits = 0
        self._keeper_stop = threading.Event()
        self._bookkeeping = threading.Lock()

    # -- lifecycle --------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        self._seen = self._retry_redis(lambda: self.queue.restart_signals(self.host))
        self._retry_redis(lambda: self._heartbeat(self.queue.redis))
        keeper = threading.Thread(target=self._keeper, name="queuefleet-keeper", daemon=True)
        keeper.start()
        self.log.event(
            "starting",
            f"worker {self.id} pool={self.opt.name} release={self.opt.release or '-'} queues={','.join(self.opt.queues)}",
        )
        deadline = time.monotonic() + self.opt.max_time if self.opt.max_time else None
        try:
            while self.stop_reason is None:
                if self.paused:
                    self._idle_paused()
                    continue
                if not self._batch and not self._refill():
                    continue
                if not self._batch:
                    continue
                self._run_one(self._batch.popleft())
                self._after_job(deadline)
        finally:
            self._shutdown(keeper)
        return self.exit_code

    def _after_job(self, deadline: float | None) -> None:
        if self.opt.once:
            self._stop("--once: one job done")
        elif self.opt.max_jobs and self.processed + self.failed >= self.opt.max_jobs:
            self._stop(f"--max-jobs {self.opt.max_jobs} reached")
        elif deadline is not None and time.monotonic() >= deadline:
            self._stop(f"--max-time {self.opt.max_time:g}s reached")
        now = time.monotonic()
        if now - self._last_memory_check >= 0.1:
            self._last_memory_check = now
            rss_mb = rss_bytes() / (1024 * 1024)
            if self.opt.memory and rss_mb >= self.opt.memory:
                self._stop(f"memory {rss_mb:.0f}MB >= --memory {self.opt.memory}MB")
        if self._acks and now - self._last_ack_flush > 0.2:
            self._flush_acks()

    def _stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def _shutdown(self, keeper: threading.Thread) -> None:
        unstarted = list(self._batch)
        self._batch.clear()
        try:
            self._retry_redis(lambda: self._give_back(unstarted), attempts=5)
            self._retry_redis(self._flush_acks, attempts=5)
        except REDIS_ERRORS as exc:
            self.log.event("error", f"could not hand jobs back before exit: {exc}; their leases expire and they run again")
        self._keeper_stop.set()
        keeper.join(timeout=5)
        try:
            self.queue.redis.delete(self.queue.key("worker", self.id))
            self.queue.redis.srem(self.queue.key("workers"), self.id)
        except REDIS_ERRORS:
            pass
        self.log.event(
            "stopping",
            f"worker {self.id} exits: {self.stop_reason or 'stopped'}",
            processed=self.processed,
            failed=self.failed,
        )
        self.log.flush()

    # -- reserving ---------------------------------------------------------------

    def _batch_size(self) -> int:
        if self.opt.once:
            return 1
        size = int(self.opt.batch_seconds / max(self._runtime_ewma, 1e-6))
        if self.opt.max_jobs:
            size = min(size, self.opt.max_jobs - self.processed - self.failed)
        return max(1, min(self.opt.prefetch, size))

    def _refill(self) -> bool:
        """Ack what is done and reserve the next batch; wait when there is nothing."""
        acks = self._take_acks()
        try:
            result = self.queue.fetch(
                self.opt.queues,
                worker_id=self.id,
                max_jobs=self._batch_size(),
                host=self.host,
                lease_ms=self.lease_ms,
                acks=acks,
            )
        except REDIS_ERRORS as exc:
            self._return_acks(acks)
            self._redis_lost(exc)
            return False
        self._redis_back()
        self._last_ack_flush = time.monotonic()
        for entry in acks:
            self._held.pop(entry[1], None)
        self._note_stale(result.stale)
        for job in result.jobs:
            self._held[job.id] = (job.queue, job.id, job.token)
        if self._restart_due(result.restart, result.host_restart):
            self._give_back(result.jobs)
            return False
        if result.jobs:
            self._batch.extend(result.jobs)
            return True
        self.log.flush()
        if self.opt.stop_when_empty:
            self._stop("--stop-when-empty: queues are empty")
            return False
        self._wait(result)
        if self.opt.once:
            # --once with nothing to do: one more look after the wait, then exit.
            self._idle_waits += 1
            if self._idle_waits > 1:
                self._stop("--once: no job arrived")
        return False

    def _wait(self, result: FetchResult) -> None:
        timeout = self.opt.sleep
        if result.next_due_ms >= 0:
            timeout = min(timeout, max(0.001, (result.next_due_ms - result.now_ms) / 1000))
        if self.stop_reason is not None or self.paused:
            return
        self._blocking = True
        try:
            if self.stop_reason is None:
                self.queue.wait(self.opt.queues, timeout)
        except _WakeUp:
            pass
        except REDIS_ERRORS as exc:
            self._blocking = False
            self._redis_lost(exc)
        finally:
            self._blocking = False

    def _restart_due(self, *signals: RestartSignal) -> bool:
        """Exit for a newer restart signal, unless this process already runs its release."""
        seen = list(self._seen)
        for i, signal_ in enumerate(signals):
            if signal_.generation <= seen[i].generation:
                continue
            if signal_.release and signal_.release == self.opt.release:
                seen[i] = signal_  # already on that release: nothing to do
                continue
            scope = "all workers" if i == 0 else f"host {self.host}"
            self._stop(f"restart signal for {scope} (generation {signal_.generation}, release {signal_.release or '-'})")
            return True
        self._seen = (seen[0], seen[1])
        return False

    def _give_back(self, jobs: list[Reserved]) -> None:
        """Return reserved but unstarted jobs to the head of their queues, attempt not counted."""
        if not jobs:
            return
        entries = [ReleaseEntry(j.queue, j.id, j.token, count_attempt=False, front=True) for j in reversed(jobs)]
        self._note_stale(self.queue.release(entries))
        for j in jobs:
            self._held.pop(j.id, None)

    def _take_acks(self) -> list[tuple[str, str, str]]:
        with self._ack_lock:
            acks, self._acks = self._acks, []
        return acks

    def _return_acks(self, acks: list[tuple[str, str, str]]) -> None:
        with self._ack_lock:
            self._acks[:0] = acks

    def _ack(self, entry: Reserved) -> None:
        with self._ack_lock:
            self._acks.append((entry.queue, entry.id, entry.token))

    def _flush_acks(self, client: redis.Redis | None = None) -> None:
        acks = self._take_acks()
        if not acks:
            return
        try:
            stale = self.queue.ack(acks) if client is None else self.queue.ack(acks, client)
        except REDIS_ERRORS:
            self._return_acks(acks)
            raise
        self._last_ack_flush = time.monotonic()
        for entry in acks:
            self._held.pop(entry[1], None)
        self._note_stale(stale)

    def _note_stale(self, ids: list[str]) -> None:
        for job_id in ids:
            self._held.pop(job_id, None)
            self.log.event("lease", f"lease on job {job_id} was lost before it was acked: another worker may run it again")

    # -- running one job -------------------------------------------------------

    def _run_one(self, entry: Reserved) -> None:
        if entry.id in self._lost:
            self._lost.discard(entry.id)
            self._held.pop(entry.id, None)
            return
        if not entry.raw:
            self._fail_malformed(entry, f"no payload is stored for job id {entry.id!r} (malformed or foreign entry in queue {entry.queue!r})")
            return
        try:
            job = Job.decode(entry.raw, attempts=entry.attempts, lost=entry.lost)
        except PayloadError as exc:
            self._fail_malformed(entry, str(exc))
            return
        if job.failure is not None:
            # This job already failed for good; only storing it did not work (database
            # outage). Store it now rather than run the handler again.
            self._fail(entry, job, job.failure, runtime=0.0)
            return
        max_tries = job.max_tries if job.max_tries is not None else self.opt.tries
        if job.lost >= self.opt.max_lost and self.opt.max_lost:
            self._fail(entry, job, f"the worker running this job was lost {job.lost} times (killed or crashed); giving up", runtime=0.0)
            return
        if max_tries and job.attempts > max_tries:
            self._fail(entry, job, f"job has been attempted {job.attempts - 1} times, more than its {max_tries} tries", runtime=0.0)
            return
        try:
            handler = self.handlers.resolve(job.job)
        except JobNotAllowed as exc:
            self._fail(entry, job, str(exc), runtime=0.0)  # permanent: never spend retries on it
            return
        except HandlerNotFound as exc:
            # Retried like any failure: during a rolling deploy a producer on new code
            # may push a job this worker's older code does not have yet.
            self._failed_attempt(entry, job, f"HandlerNotFound: {exc}", 0.0, max_tries)
            return

        timeout = float(job.timeout or self.opt.timeout)
        self.log.job("start", job.id, job.job, job.queue, job.attempts)
        self._current, self._current_entry = job, entry
        self._current_timeout = timeout
        start = self._current_started = time.monotonic()
        error: str | None = None
        interrupted = False
        try:
            if timeout > 0:
                signal.setitimer(signal.ITIMER_REAL, timeout)
            self._in_handler = True
            try:
                handler(job.data)
            finally:
                self._in_handler = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        except JobTimeout:
            error = f"JobTimeout: {job.job} ran longer than its timeout of {timeout:g}s and was stopped"
        except JobInterrupted:
            interrupted = True
        except Exception as exc:  # the handler's own failure
            error = "".join(traceback.format_exception(exc)).rstrip()
            if len(error) > 20000:
                error = error[:10000] + "\n...\n" + error[-10000:]
        runtime = time.monotonic() - start
        self._runtime_ewma = 0.8 * self._runtime_ewma + 0.2 * runtime
        with self._bookkeeping:
            self._current = self._current_entry = None
            if interrupted:
                self._retry_redis(lambda: self._give_back([entry]))
                self.log.job("released", job.id, job.job, job.queue, job.attempts, runtime, reason="stopping")
                return
            if entry.id in self._lost:
                self._lost.discard(entry.id)
                self.log.job("lease-lost", job.id, job.job, job.queue, job.attempts, runtime)
                return
            if error is None:
                self.processed += 1
                self._ack(entry)
                self.log.job("done", job.id, job.job, job.queue, job.attempts, runtime)
            else:
                self._failed_attempt(entry, job, error, runtime, max_tries)

    def _failed_attempt(self, entry: Reserved, job: Job, error: str, runtime: float, max_tries: int) -> None:
        job.errors.append({"attempt": job.attempts, "at": time.time(), "error": _summary(error)})
        print(f"job {job.id} ({job.job}) attempt {job.attempts} failed:\n{error}", file=self.stderr, flush=True)
        if max_tries and job.attempts >= max_tries:
            self._fail(entry, job, error, runtime)
            return
        delay = _backoff_for(job.backoff or self.opt.backoff, job.attempts)
        self.failed += 1
        release = ReleaseEntry(entry.queue, entry.id, entry.token, delay_ms=int(delay * 1000), payload=job.encode())
        stale = self._retry_redis(lambda: self.queue.release([release]))
        self._held.pop(entry.id, None)
        self._note_stale(stale)
        self.log.job("retry", job.id, job.job, job.queue, job.attempts, runtime, delay=f"{delay:g}s", error=_summary(error, 200))

    def _fail(self, entry: Reserved, job: Job, error: str, runtime: float) -> None:
        """Store the job in failed_jobs, then ack it. A database outage never drops the job."""
        self.failed += 1
        if not job.errors or job.errors[-1].get("attempt") != job.attempts:
            job.errors.append({"attempt": job.attempts, "at": time.time(), "error": _summary(error)})
        job.failure = None
        payload = job.encode()
        job.failure = error
        if not self._record(job.id, job.queue, payload, error, entry, hold_payload=job.encode()):
            return
        self._ack(entry)
        self.log.job("failed", job.id, job.job, job.queue, job.attempts, runtime, error=_summary(error, 200))

    def _fail_malformed(self, entry: Reserved, reason: str) -> None:
        self.failed += 1
        raw = entry.raw.decode("utf-8", "replace") if isinstance(entry.raw, bytes) else str(entry.raw)
        uuid = entry.id if len(entry.id) <= 36 else entry.id[:36]
        if not self._record(uuid, entry.queue, raw or entry.id, f"PayloadError: {reason}", entry):
            return
        self._ack(entry)
        self.log.job("failed", entry.id[:64], "-", entry.queue, entry.attempts, 0.0, error=reason)

    def _record(self, uuid: str, queue: str, payload: str, error: str, entry: Reserved, hold_payload: str | None = None) -> bool:
        try:
            self.store.record(uuid=uuid, connection=self.connection_name, queue=queue, payload=payload, exception=error)
            return True
        except Exception as exc:  # noqa: BLE001 - any database failure must keep the job
            self.log.event("error", f"cannot store failed job {uuid} ({exc.__class__.__name__}: {_summary(str(exc), 200)}); job kept in Redis, retried in 10s")
            if hold_payload is None:
                hold_payload = payload if payload.startswith("{") else ""
            hold = ReleaseEntry(entry.queue, entry.id, entry.token, delay_ms=10_000, count_attempt=False, payload=hold_payload)
            self._note_stale(self._retry_redis(lambda: self.queue.release([hold])))
            self._held.pop(entry.id, None)
            return False

    # -- paused and idle ---------------------------------------------------------

    def _idle_paused(self) -> None:
        if self._batch:
            unstarted = list(self._batch)
            self._batch.clear()
            self._retry_redis(lambda: self._give_back(unstarted))
        if self._acks:
            self._retry_redis(self._flush_acks)
        self.log.flush()
        deadline = time.monotonic() + 0.2
        while self.paused and self.stop_reason is None and time.monotonic() < deadline:
            time.sleep(0.05)

    # -- Redis outages -----------------------------------------------------------

    def _retry_redis(self, call: Callable[[], Any], attempts: int = 0) -> Any:
        """Run `call`, retrying with capped, jittered backoff while Redis is unreachable."""
        tries = 0
        while True:
            try:
                result = call()
                self._redis_back()
                return result
            except REDIS_ERRORS as exc:
                tries += 1
                if attempts and tries >= attempts:
                    raise
                self._redis_lost(exc)

    def _redis_lost(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._redis_down_since is None:
            self._redis_down_since = now
            self._redis_pause = 0.1
            self.log.event("redis", f"lost Redis at {self.connection_name}: {exc}; reconnecting with backoff")
        pause = self._redis_pause
        self._redis_pause = min(self._redis_pause * 2, 5.0)
        end = now + pause * (0.5 + random.random() / 2)
        while time.monotonic() < end and (self.stop_reason is None or self._acks or self._batch):
            time.sleep(0.05)

    def _redis_back(self) -> None:
        if self._redis_down_since is not None:
            down = time.monotonic() - self._redis_down_since
            self._redis_down_since = None
            self.log.event("redis", f"Redis is back after {down:.1f}s")

    # -- signals -----------------------------------------------------------------

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGUSR2, self._on_pause)
        signal.signal(signal.SIGCONT, self._on_resume)
        signal.signal(signal.SIGALRM, self._on_alarm)

    def _on_stop_signal(self, signum: int, _frame: Any) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            self._stop_signal_at = time.monotonic()
            self._stop(f"{name} received")
            if self._blocking:
                raise _WakeUp()
        elif self._in_handler:
            raise JobInterrupted()

    def _on_pause(self, _signum: int, _frame: Any) -> None:
        self.paused = True
        if self._blocking:
            raise _WakeUp()

    def _on_resume(self, _signum: int, _frame: Any) -> None:
        self.paused = False

    def _on_alarm(self, _signum: int, _frame: Any) -> None:
        if self._in_handler:
            raise JobTimeout()

    # -- keeper thread -------------------------------------------------------------

    def _keeper(self) -> None:
        interval = min(self.opt.heartbeat_interval, self.opt.lease / 3)
        client = self.queue.redis
        while not self._keeper_stop.wait(interval):
            try:
                lost = self.queue.extend(list(self._held.values()), self.lease_ms, client)
                for job_id in lost:
                    self._lost.add(job_id)
                    self._held.pop(job_id, None)
                self._heartbeat(client)
                if self._acks and self._current is not None and time.monotonic() - self._current_started > 0.25:
                    # Jobs finished earlier in this batch: don't let them wait behind a long one.
                    self._flush_acks(client)
            except REDIS_ERRORS:
                pass  # the main loop reports outages; leases are re-extended on the next tick
            except Exception as exc:  # noqa: BLE001 - the keeper must not die silently
                print(f"queuefleet keeper: {exc.__class__.__name__}: {exc}", file=self.stderr, flush=True)
            self.log.flush()
            self._watchdog()

    def _heartbeat(self, client: redis.Redis) -> None:
        job = self._current
        state = "paused" if self.paused else ("busy" if job is not None else "idle")
        fields = {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "pool": self.opt.name,
            "release": self.opt.release,
            "queues": ",".join(self.opt.queues),
            "state": state,
            "job": job.job if job else "",
            "job_id": job.id if job else "",
            "processed": self.processed,
            "failed": self.failed,
            "started": f"{self.started_at:.3f}",
            "last_seen": f"{time.time():.3f}",
        }
        key = self.queue.key("worker", self.id)
        pipe = client.pipeline(transaction=False)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, max(10, int(self.opt.heartbeat_interval * 5)))
        pipe.sadd(self.queue.key("workers"), self.id)
        pipe.execute()

    def _watchdog(self) -> None:
        """Last resort for a handler that does not return to Python (stuck in C code)."""
        job, entry = self._current, self._current_entry
        if job is None or entry is None:
            return
        now = time.monotonic()
        overdue = self._current_timeout > 0 and now - self._current_started > self._current_timeout + self.opt.timeout_grace
        draining = (
            self.opt.drain_timeout > 0
            and self._stop_signal_at
            and now - self._stop_signal_at > self.opt.drain_timeout
        )
        if draining and self._signals == 1:
            self._signals += 1  # the drain deadline acts as the second signal
            os.kill(self.pid, signal.SIGTERM)
            return
        if not overdue and not (draining and now - self._stop_signal_at > self.opt.drain_timeout + self.opt.timeout_grace):
            return
        with self._bookkeeping:
            if self._current is not job:
                return
            if overdue:
                error = f"JobTimeout: {job.job} ran past its timeout of {self._current_timeout:g}s and did not stop; the worker exits"
                max_tries = job.max_tries if job.max_tries is not None else self.opt.tries
                self._in_handler = False
                try:
                    self._failed_attempt(entry, job, error, now - self._current_started, max_tries)
                    self._flush_acks()
                except Exception as exc:  # noqa: BLE001
                    print(f"queuefleet watchdog: {exc}", file=self.stderr, flush=True)
                code = 1
            else:
                try:
                    self._give_back([entry])
                except Exception as exc:  # noqa: BLE001
                    print(f"queuefleet watchdog: {exc}", file=self.stderr, flush=True)
                code = 0
            self.log.event("stopping", f"worker {self.id} exits: handler of job {job.id} did not stop")
            self.log.flush()
            self._hard_exit(code)


def _backoff_for(backoff: list[float], attempt: int) -> float:
    if not backoff:
        return 0.0
    return backoff[min(attempt, len(backoff)) - 1] if attempt >= 1 else backoff[0]


def _summary(error: str, limit: int = 2000) -> str:
    """The last meaningful line of an error (SQLAlchemy appends a link line: skip it)."""
    lines = [line for line in error.strip().splitlines() if line.strip() and not line.lstrip().startswith("(Background on this error")]
    last = lines[-1] if lines else error
    return last if len(last) <= limit else last[: limit - 3] + "..."


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
