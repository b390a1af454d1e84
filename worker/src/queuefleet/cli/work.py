"""`queue work`, `queue schedule` and `queue autoscale`: the long-running processes supervisor keeps up."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
import redis

from ..database import LazyStore
from ..handlers import parse_allowed
from ..queue import redacted_url
from .app import FROM_ENV_FILE, Context, backoff_option, check_redis_url, die, installed_release, main, positive, queue_names

if TYPE_CHECKING:
    from ..failed import FailedJobStore


@main.command()
@click.option("--queue", "queues", default="default", show_default=True, callback=queue_names, help="Queues in strict priority order, comma-separated.")
@click.option("--jobs", envvar="QUEUEFLEET_JOBS", default="", help="Allowed job module prefixes, comma-separated (QUEUEFLEET_JOBS).")
@click.option("--tries", default=1, show_default=True, type=int, callback=positive("--tries", True), help="Attempts per job before it fails (0 = unlimited); a job's own tries win.")
@click.option("--timeout", default=60.0, show_default=True, type=float, callback=positive("--timeout", True), help="Seconds a job may run before it is stopped (0 = no limit); a job's own timeout wins.")
@click.option("--memory", default=128, show_default=True, type=int, callback=positive("--memory", True), help="Exit 0 after the current job once RSS reaches this many MB (0 = no limit).")
@click.option("--sleep", default=3.0, show_default=True, type=float, callback=positive("--sleep"), help="Longest idle wait in seconds before looking again (pushes wake the worker at once).")
@click.option("--backoff", default="0", show_default=True, callback=backoff_option, help="Seconds before a failed job is retried: S or S1,S2,... per attempt.")
@click.option("--max-jobs", default=0, type=int, callback=positive("--max-jobs", True), help="Exit 0 after this many jobs (0 = no limit).")
@click.option("--max-time", default=0.0, type=float, callback=positive("--max-time", True), help="Exit 0 after this many seconds, between jobs (0 = no limit).")
@click.option("--stop-when-empty", is_flag=True, help="Exit 0 once the queues are empty.")
@click.option("--once", is_flag=True, help="Run a single job, then exit.")
@click.option("--name", default="default", show_default=True, help="Pool name reported in heartbeats and logs.")
@click.option("--release", envvar="QUEUEFLEET_RELEASE", default="", help="Release this worker runs (QUEUEFLEET_RELEASE).")
@click.option("--lease", default=30.0, show_default=True, type=float, callback=positive("--lease"), help="Seconds a dead worker's jobs stay reserved before they run again.")
@click.option("--drain-timeout", default=0.0, type=float, callback=positive("--drain-timeout", True), help="On SIGTERM, seconds to let the current job finish before it is put back (0 = until its timeout).")
@click.option("--max-lost", default=3, show_default=True, type=int, callback=positive("--max-lost", True), help="Fail a job whose worker died this many times while running it (0 = never).")
@click.option("--prefetch", default=32, show_default=True, type=click.IntRange(1, 1000), help="Most jobs reserved in one round trip (fewer when jobs are slow).")
@click.option("--log-format", type=click.Choice(["plain", "json"]), default="plain", show_default=True)
@click.option("--on-failure", envvar="QUEUEFLEET_ON_FAILURE", default="", metavar="MODULE:FUNCTION",
              help="Called with a queuefleet.JobFailure once for every job that fails for good (QUEUEFLEET_ON_FAILURE); "
                   "its module must be allowed by --jobs.")
@click.option("--init", "init", envvar="QUEUEFLEET_INIT", default="", metavar="MODULE:FUNCTION",
              help="Called once with no arguments before the worker imports a handler or runs a job (QUEUEFLEET_INIT), "
                   "e.g. django:setup; the worker does not start if it cannot be imported or raises.")
@click.pass_obj
def work(obj: Context, queues: list[str], jobs: str, tries: int, timeout: float, memory: int, sleep: float, backoff: list[float],
         max_jobs: int, max_time: float, stop_when_empty: bool, once: bool, name: str, release: str, lease: float,
         drain_timeout: float, max_lost: int, prefetch: int, log_format: str, on_failure: str, init: str) -> None:
    """Run jobs from the queues until stopped (what supervisor runs).

    The release a worker reports is --release or QUEUEFLEET_RELEASE from the process
    environment; otherwise the release its virtualenv was installed as, so a worker
    never reports a release it is not running.
    """
    from ..worker import Worker, WorkerOptions

    source = click.get_current_context().get_parameter_source("release")
    from_file = source == click.core.ParameterSource.ENVIRONMENT and "QUEUEFLEET_RELEASE" in FROM_ENV_FILE
    if source == click.core.ParameterSource.DEFAULT or from_file:
        release = installed_release() or release

    try:
        allowed = parse_allowed(jobs)
    except ValueError as exc:
        raise click.BadParameter(f"bad module prefix in {jobs!r}: {exc}", param_hint="--jobs") from None
    if not allowed:
        raise click.UsageError("no job modules are allowed: pass --jobs myapp.jobs (or set QUEUEFLEET_JOBS)")
    _run_init(init)  # before anything imports app code: the --on-failure hook's module is the first
    _check_failure_hook(on_failure, allowed)
    check_redis_url(obj.redis_url)
    # Checked beside the first jobs, not before them (database.py): a worker started for a
    # backlog is ready in half the time. Not migrated or a bad URL still stops it, with exit 1.
    store = LazyStore(obj.database_url, functools.partial(_failed_job_store, obj.database_url, obj.database_timeout))
    options = WorkerOptions(
        queues=queues, allowed=allowed, tries=tries, timeout=timeout, memory=memory, sleep=sleep, backoff=backoff or [0.0],
        max_jobs=max_jobs, max_time=max_time, stop_when_empty=stop_when_empty, once=once, name=name, release=release,
        lease=lease, drain_timeout=drain_timeout, max_lost=max_lost, prefetch=prefetch, log_format=log_format,
        prefix=obj.prefix, on_failure=on_failure, max_payload=obj.max_payload,
    )
    sys.exit(Worker(obj.redis_url, store, options).run())


def _failed_job_store(url: str, timeout: float) -> FailedJobStore:
    from ..failed import FailedJobStore  # SQLAlchemy: the worker's first failure or its database check imports it

    return FailedJobStore(url, timeout=timeout)


def _run_init(name: str) -> None:
    """The --init hook, called once; a worker whose hook fails does not start (supervisor shows why in its stderr log)."""
    if not name:
        return
    from ..startup import InitError, load_init

    try:
        hook = load_init(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--init") from None
    except InitError as exc:
        die(f"--init {name}: {exc}", 2)
    try:
        hook()
    except Exception as exc:  # noqa: BLE001 - the traceback first, then one line saying the worker did not start
        import traceback

        traceback.print_exc(file=sys.stderr)
        die(f"--init {name} raised {exc.__class__.__name__}: {exc}; the worker did not start")


def _check_failure_hook(name: str, allowed: tuple[str, ...]) -> None:
    from ..callbacks import FailureCallbacks
    from ..handlers import HandlerNotFound, HandlerRegistry, JobNotAllowed

    try:
        FailureCallbacks.resolve_hook(HandlerRegistry(allowed), name)
    except (ValueError, JobNotAllowed) as exc:
        raise click.BadParameter(str(exc), param_hint="--on-failure") from None
    except HandlerNotFound as exc:
        die(f"--on-failure: {exc}", 2)


@main.command()
@click.option("--file", "path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              envvar="QUEUEFLEET_SCHEDULE", help="Schedule file (.json or .toml; QUEUEFLEET_SCHEDULE).")
@click.option("--list", "list_only", is_flag=True, help="Check the file and print each entry's next runs (UTC), then exit.")
@click.option("--log-format", type=click.Choice(["plain", "json"]), default="plain", show_default=True)
@click.pass_obj
def schedule(obj: Context, path: Path, list_only: bool, log_format: str) -> None:
    """Push jobs by cron expressions (UTC, the Redis server's clock): run it under supervisor,
    on one host or several; each tick of each entry is pushed once fleet-wide."""
    from ..identity import current_identity
    from ..logs import JobLog
    from ..schedule import ScheduleError, Scheduler, describe_next, load

    try:
        entries = load(path)
    except ScheduleError as exc:
        raise click.UsageError(str(exc)) from None
    if list_only:
        now = time.time()
        for entry in entries:
            catch_up = "catch up" if entry.catch_up else "skip missed"
            click.echo(f"{entry.name}: {entry.cron} -> {entry.job} on {entry.queue} ({catch_up}); next: "
                       + ", ".join(describe_next(entry, now)))
        return
    check_redis_url(obj.redis_url)
    scheduler = Scheduler(obj.redis_url, entries, prefix=obj.prefix, log=JobLog(fmt=log_format, pool="schedule"),
                          host=current_identity().host, release=installed_release())
    scheduler.install_signals()
    try:
        sys.exit(scheduler.run())
    except redis.RedisError as exc:  # not an outage (those are waited out): a wrong password, a bad database number
        die(f"scheduler stopped: Redis at {redacted_url(obj.redis_url)}: {exc}")


@main.command()
@click.option("--config", "path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              envvar="QUEUEFLEET_AUTOSCALE", help="Autoscale file the role writes (JSON; QUEUEFLEET_AUTOSCALE).")
@click.option("--host", default=None, help="This host's name as its workers report it (default: the hostname).")
@click.option("--once", is_flag=True, help="Make one decision for every pool and exit; a change of size is logged as one line, no change as nothing.")
@click.option("--log-format", type=click.Choice(["plain", "json"]), default="plain", show_default=True)
@click.pass_obj
def autoscale(obj: Context, path: Path, host: str | None, once: bool, log_format: str) -> None:
    """Size this host's autoscaled pools by their backlog, within each pool's [min, max]: run it
    under supervisor, one per host; it starts and stops the pools' burst processes through
    supervisord, and holds every size while Redis or supervisord cannot be read."""
    from ..autoscaler import AutoscaleConfigError, Autoscaler, load_settings
    from ..connection import client_from_url
    from ..logs import JobLog

    try:
        settings = load_settings(path, host)
    except AutoscaleConfigError as exc:
        raise click.UsageError(str(exc)) from None
    check_redis_url(obj.redis_url)
    scaler = Autoscaler(client_from_url(obj.redis_url), settings, prefix=obj.prefix,
                        log=JobLog(fmt=log_format, pool="autoscale"), release=installed_release())
    if once:
        scaler.tick()
        return
    scaler.install_signals()
    sys.exit(scaler.run())
