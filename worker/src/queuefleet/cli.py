"""The `queue` command line."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import click
import redis

from .connection import check_url
from .failed import DATABASE_TIMEOUT, DEFAULT_DATABASE_URL, DatabaseUnavailable, FailedJobStore
from .handlers import parse_allowed
from .payload import (MAX_DELAY, MAX_PAYLOAD, Job, PayloadError, check_payload_size, check_queue_name, check_seconds,
                      check_unique_key, parse_backoff)
from .queue import DEFAULT_PREFIX, DEFAULT_REDIS_URL, Queue, redacted_url
from .serving import is_loopback, listen_option, networks_option

EXIT_UNAVAILABLE = 1


class Context:
    def __init__(self, redis_url: str, database_url: str, prefix: str, database_timeout: float = DATABASE_TIMEOUT,
                 max_payload: int = MAX_PAYLOAD) -> None:
        self.redis_url = redis_url
        self.database_url = database_url
        self.prefix = prefix
        self.database_timeout = database_timeout
        self.max_payload = max_payload

    def queue(self) -> Queue:
        q = Queue.from_url(self.redis_url, prefix=self.prefix, max_payload=self.max_payload)
        try:
            q.redis.ping()
        except redis.AuthenticationError as exc:
            _die(f"cannot use Redis at {redacted_url(self.redis_url)}: authentication failed ({exc})")
        except redis.RedisError as exc:
            _die(f"cannot connect to Redis at {redacted_url(self.redis_url)}: {exc}")
        return q

    def store(self, *, check: bool = True) -> FailedJobStore:
        try:
            store = FailedJobStore(self.database_url, timeout=self.database_timeout)
        except Exception as exc:  # noqa: BLE001 - bad URL, missing driver
            _die(f"bad database URL {redacted_url(self.database_url)}: {exc}")
        if check:
            try:
                store.check()
            except DatabaseUnavailable as exc:
                _die(f"failed-jobs database {redacted_url(self.database_url)}: {exc}")
        return store


def _die(message: str, code: int = EXIT_UNAVAILABLE) -> None:
    click.echo(f"queue: {message}", err=True)
    sys.exit(code)


def _redis_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a Redis outage in the middle of a command into one clear line."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except redis.RedisError as exc:
            ctx = click.get_current_context().find_object(Context)
            where = redacted_url(ctx.redis_url) if ctx else "Redis"
            _die(f"Redis error at {where}: {exc}")

    return wrapper


_FROM_ENV_FILE: set[str] = set()


def _db_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a database failure in the middle of a command into one clear line."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return func(*args, **kwargs)
        except SQLAlchemyError as exc:
            ctx = click.get_current_context().find_object(Context)
            where = redacted_url(ctx.database_url) if ctx else "the database"
            _die(f"database error at {where}: {str(getattr(exc, 'orig', None) or exc).splitlines()[0]}")

    return wrapper


def _load_env_file(ctx: click.Context, _param: click.Parameter, path: str | None) -> str | None:
    """KEY=VALUE lines (as the deploy writes them); the process environment wins."""
    if not path:
        return path
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        if not sep or not key.isidentifier():
            raise click.BadParameter(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if key not in os.environ:
            os.environ[key] = value
            _FROM_ENV_FILE.add(key)
    return path


def installed_release() -> str:
    """The release id the running virtualenv was installed as (releases/<id>/RELEASE), if any."""
    try:
        return (Path(sys.prefix) / "RELEASE").read_text().strip()
    except OSError:
        return ""


def _positive(name: str, allow_zero: bool = False) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def check(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, float) and not math.isfinite(value):
            raise click.BadParameter(f"{name} must be a finite number, got {value}")
        if value < 0 or (value == 0 and not allow_zero):
            raise click.BadParameter(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value:g}")
        return value

    return check


def _queues(_ctx: click.Context, _param: click.Parameter, value: str) -> list[str]:
    names = [q.strip() for q in value.split(",") if q.strip()]
    if not names:
        raise click.BadParameter("give at least one queue name")
    try:
        for name in names:
            check_queue_name(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if len(set(names)) != len(names):
        raise click.BadParameter(f"a queue is listed twice: {value}")
    return names


def _backoff(_ctx: click.Context, _param: click.Parameter, value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return parse_backoff(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--env-file",
    envvar="QUEUEFLEET_ENV_FILE",
    is_eager=True,
    expose_value=False,
    callback=_load_env_file,
    help="Read KEY=VALUE settings from this file first (the deploy's shared env file).",
)
@click.option("--redis-url", envvar="QUEUEFLEET_REDIS_URL", default=DEFAULT_REDIS_URL, show_default=True, help="Redis holding the queues.")
@click.option(
    "--database-url",
    envvar="QUEUEFLEET_DATABASE_URL",
    default=DEFAULT_DATABASE_URL,
    show_default=True,
    help="SQLAlchemy URL of the failed-jobs database (mysql+pymysql://... in production).",
)
@click.option("--database-timeout", envvar="QUEUEFLEET_DATABASE_TIMEOUT", default=DATABASE_TIMEOUT, show_default=True,
              type=float, callback=_positive("--database-timeout"), metavar="SECONDS",
              help="Longest a MySQL/MariaDB connect, read or write may take before the call fails.")
@click.option("--prefix", envvar="QUEUEFLEET_PREFIX", default=DEFAULT_PREFIX, show_default=True, help="Redis key prefix.")
@click.option("--max-payload", envvar="QUEUEFLEET_MAX_PAYLOAD", default=MAX_PAYLOAD, show_default=True,
              type=click.IntRange(min=1024), metavar="BYTES",
              help="Largest job payload (its JSON, in bytes) that push and retry write and a worker parses.")
@click.version_option(package_name="queuefleet")
@click.pass_context
def main(ctx: click.Context, redis_url: str, database_url: str, database_timeout: float, prefix: str,
         max_payload: int) -> None:
    """queuefleet: a Redis job queue and worker, with failed jobs in SQL."""
    ctx.obj = Context(redis_url, database_url, prefix, database_timeout, max_payload)


@main.command()
@click.option("--queue", "queues", default="default", show_default=True, callback=_queues, help="Queues in strict priority order, comma-separated.")
@click.option("--jobs", envvar="QUEUEFLEET_JOBS", default="", help="Allowed job module prefixes, comma-separated (QUEUEFLEET_JOBS).")
@click.option("--tries", default=1, show_default=True, type=int, callback=_positive("--tries", True), help="Attempts per job before it fails (0 = unlimited); a job's own tries win.")
@click.option("--timeout", default=60.0, show_default=True, type=float, callback=_positive("--timeout", True), help="Seconds a job may run before it is stopped (0 = no limit); a job's own timeout wins.")
@click.option("--memory", default=128, show_default=True, type=int, callback=_positive("--memory", True), help="Exit 0 after the current job once RSS reaches this many MB (0 = no limit).")
@click.option("--sleep", default=3.0, show_default=True, type=float, callback=_positive("--sleep"), help="Longest idle wait in seconds before looking again (pushes wake the worker at once).")
@click.option("--backoff", default="0", show_default=True, callback=_backoff, help="Seconds before a failed job is retried: S or S1,S2,... per attempt.")
@click.option("--max-jobs", default=0, type=int, callback=_positive("--max-jobs", True), help="Exit 0 after this many jobs (0 = no limit).")
@click.option("--max-time", default=0.0, type=float, callback=_positive("--max-time", True), help="Exit 0 after this many seconds, between jobs (0 = no limit).")
@click.option("--stop-when-empty", is_flag=True, help="Exit 0 once the queues are empty.")
@click.option("--once", is_flag=True, help="Run a single job, then exit.")
@click.option("--name", default="default", show_default=True, help="Pool name reported in heartbeats and logs.")
@click.option("--release", envvar="QUEUEFLEET_RELEASE", default="", help="Release this worker runs (QUEUEFLEET_RELEASE).")
@click.option("--lease", default=30.0, show_default=True, type=float, callback=_positive("--lease"), help="Seconds a dead worker's jobs stay reserved before they run again.")
@click.option("--drain-timeout", default=0.0, type=float, callback=_positive("--drain-timeout", True), help="On SIGTERM, seconds to let the current job finish before it is put back (0 = until its timeout).")
@click.option("--max-lost", default=3, show_default=True, type=int, callback=_positive("--max-lost", True), help="Fail a job whose worker died this many times while running it (0 = never).")
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
    from .worker import Worker, WorkerOptions

    source = click.get_current_context().get_parameter_source("release")
    from_file = source == click.core.ParameterSource.ENVIRONMENT and "QUEUEFLEET_RELEASE" in _FROM_ENV_FILE
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
    _check_redis_url(obj.redis_url)
    store = obj.store(check=False)
    try:
        store.check()
    except DatabaseUnavailable as exc:
        if "queue migrate" in str(exc):
            _die(f"failed-jobs database {redacted_url(obj.database_url)}: {exc}")
        # Jobs can run without it: failures wait in Redis until it answers.
        click.echo(f"queue: warning: failed-jobs database {redacted_url(obj.database_url)}: {exc}; "
                   "starting anyway, failed jobs wait in Redis until it answers", err=True)
    options = WorkerOptions(
        queues=queues, allowed=allowed, tries=tries, timeout=timeout, memory=memory, sleep=sleep, backoff=backoff or [0.0],
        max_jobs=max_jobs, max_time=max_time, stop_when_empty=stop_when_empty, once=once, name=name, release=release,
        lease=lease, drain_timeout=drain_timeout, max_lost=max_lost, prefetch=prefetch, log_format=log_format,
        prefix=obj.prefix, on_failure=on_failure, max_payload=obj.max_payload,
    )
    sys.exit(Worker(obj.redis_url, store, options).run())


def _run_init(name: str) -> None:
    """The --init hook, called once; a worker whose hook fails does not start (supervisor shows why in its stderr log)."""
    if not name:
        return
    from .startup import InitError, load_init

    try:
        hook = load_init(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--init") from None
    except InitError as exc:
        _die(f"--init {name}: {exc}", 2)
    try:
        hook()
    except Exception as exc:  # noqa: BLE001 - the traceback first, then one line saying the worker did not start
        import traceback

        traceback.print_exc(file=sys.stderr)
        _die(f"--init {name} raised {exc.__class__.__name__}: {exc}; the worker did not start")


def _check_failure_hook(name: str, allowed: tuple[str, ...]) -> None:
    from .callbacks import FailureCallbacks
    from .handlers import HandlerNotFound, HandlerRegistry, JobNotAllowed

    try:
        FailureCallbacks.resolve_hook(HandlerRegistry(allowed), name)
    except (ValueError, JobNotAllowed) as exc:
        raise click.BadParameter(str(exc), param_hint="--on-failure") from None
    except HandlerNotFound as exc:
        _die(f"--on-failure: {exc}", 2)


def _check_redis_url(url: str) -> None:
    """Refuse a URL the package cannot use (redis://, rediss://, unix:// or redis+sentinel://), up front."""
    try:
        check_url(url)
    except (ValueError, TypeError) as exc:
        _die(f"bad Redis URL {redacted_url(url)}: {exc}")


@main.command()
@click.option("--file", "path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              envvar="QUEUEFLEET_SCHEDULE", help="Schedule file (.json or .toml; QUEUEFLEET_SCHEDULE).")
@click.option("--list", "list_only", is_flag=True, help="Check the file and print each entry's next runs (UTC), then exit.")
@click.option("--log-format", type=click.Choice(["plain", "json"]), default="plain", show_default=True)
@click.pass_obj
def schedule(obj: Context, path: Path, list_only: bool, log_format: str) -> None:
    """Push jobs by cron expressions (UTC, the Redis server's clock): run it under supervisor,
    on one host or several; each tick of each entry is pushed once fleet-wide."""
    from .identity import current_identity
    from .logs import JobLog
    from .schedule import ScheduleError, Scheduler, describe_next, load

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
    _check_redis_url(obj.redis_url)
    scheduler = Scheduler(obj.redis_url, entries, prefix=obj.prefix, log=JobLog(fmt=log_format, pool="schedule"),
                          host=current_identity().host, release=installed_release())
    scheduler.install_signals()
    try:
        sys.exit(scheduler.run())
    except redis.RedisError as exc:  # not an outage (those are waited out): a wrong password, a bad database number
        _die(f"scheduler stopped: Redis at {redacted_url(obj.redis_url)}: {exc}")


@main.command()
@click.argument("job")
@click.option("--data", default="null", show_default=True, help="Job data as JSON.")
@click.option("--queue", default="default", show_default=True)
@click.option("--delay", default=0.0, type=float, callback=_positive("--delay", True), help="Seconds before the job becomes available.")
@click.option("--tries", type=int, default=None, callback=_positive("--tries", True), help="Attempts for this job (overrides the worker's --tries).")
@click.option("--timeout", type=float, default=None, callback=_positive("--timeout"), help="Seconds this job may run (overrides the worker's --timeout).")
@click.option("--backoff", default=None, callback=_backoff, help="Retry delays for this job: S or S1,S2,...")
@click.option("--id", "job_id", default=None, help="Your own job id: pushing the same id again does nothing while the job is queued or running, nor for a day after it finished (safe retries).")
@click.option("--unique-key", default=None, help="No second job with this key is pushed while one is queued or running; prints the id of the job holding it.")
@click.option("--unique-for", default=3600.0, show_default=True, type=float, callback=_positive("--unique-for"), help="Seconds the unique key lives at most.")
@click.pass_obj
@_redis_errors
def push(obj: Context, job: str, data: str, queue: str, delay: float, tries: int | None, timeout: float | None,
         backoff: list[float] | None, job_id: str | None, unique_key: str | None, unique_for: float) -> None:
    """Push JOB (package.module:function) with JSON data; prints the job id."""
    try:
        payload = json.loads(data, parse_constant=_no_constant)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--data") from None
    try:
        item = Job.new(job, payload, queue, tries=tries, timeout=timeout, backoff=backoff, id=job_id)
        check_payload_size(item.encode(), obj.max_payload, "--max-payload, QUEUEFLEET_MAX_PAYLOAD")
        check_seconds("--delay", delay, maximum=MAX_DELAY)
        if unique_key is not None:
            check_unique_key(unique_key)
            check_seconds("--unique-for", unique_for, maximum=MAX_DELAY, allow_zero=False)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if unique_key is not None:
        pushed, holder = obj.queue().enqueue_unique(item, unique_key, unique_for, delay=delay, given_id=job_id is not None)
        if holder != item.id:
            click.echo(f"queue: job {holder} holds unique key {unique_key!r} (queued or running): not pushed", err=True)
        elif not pushed:
            click.echo(f"queue: job {item.id} is already queued or ran recently: not pushed again", err=True)
        click.echo(holder)
        return
    if not obj.queue().enqueue(item, delay=delay, given_id=job_id is not None):
        click.echo(f"queue: job {item.id} is already queued or ran recently: not pushed again", err=True)
    click.echo(item.id)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@main.command()
@click.option("--release", default="", help="Release the workers should run; workers already on it keep running. Not read from QUEUEFLEET_RELEASE: without it every targeted worker restarts.")
@click.option("--host", "hosts", multiple=True, help="Only the workers of this host (repeat); default: every worker.")
@click.pass_obj
@_redis_errors
def restart(obj: Context, release: str, hosts: tuple[str, ...]) -> None:
    """Ask workers to exit after their current job so supervisor starts them on new code."""
    signalled, skipped = obj.queue().signal_restart(release, hosts)
    scope = f"host{'s' if len(hosts) != 1 else ''} {', '.join(hosts)}" if hosts else "all workers"
    what = f" for release {release}" if release else ""
    if signalled:
        click.echo(f"restart signalled{what}: {scope}" + (f" ({skipped} already on it)" if skipped else ""))
    else:
        click.echo(f"release {release} already signalled for {scope}: nothing to do")


def _age(stamp: str) -> str:
    try:
        seconds = time.time() - float(stamp)
    except ValueError:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--queue", "only", default=None, help="Only these queues (comma-separated).")
@click.pass_obj
@_redis_errors
def status(obj: Context, as_json: bool, only: str | None) -> None:
    """Queue sizes and live workers."""
    q = obj.queue()
    state = q.status(_queues(None, None, only) if only else None)  # type: ignore[arg-type]
    sizes, workers, restart_state = state.sizes, state.workers, state.restart
    from .schedule import read_schedule

    schedule = read_schedule(q.redis, obj.prefix)
    if as_json:
        click.echo(json.dumps({"queues": sizes, "workers": workers, "restart": restart_state, "schedule": schedule},
                              indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="Queues")
    for col in ("queue", "ready", "delayed", "reserved"):
        table.add_column(col, justify="left" if col == "queue" else "right")
    for name, size in sizes.items():
        table.add_row(name, str(size["ready"]), str(size["delayed"]), str(size["reserved"]))
    console.print(table)
    wt = Table(title=f"Workers ({len(workers)})")
    for col in ("host", "pid", "pool", "release", "state", "job", "processed", "failed", "up", "seen"):
        wt.add_column(col)
    for w in sorted(workers, key=lambda w: (w.get("host", ""), w.get("pool", ""), int(w.get("pid", 0)))):
        wt.add_row(w.get("host", ""), w.get("pid", ""), w.get("pool", ""), w.get("release", "") or "-", w.get("state", ""),
                   w.get("job", "") or "-", w.get("processed", "0"), w.get("failed", "0"), _age(w.get("started", "")), _age(w.get("last_seen", "")) + " ago")
    console.print(wt)
    if schedule:
        st = Table(title="Schedule (UTC, the Redis server's clock)")
        for col in ("entry", "cron", "job", "queue", "next run", "scheduler seen"):
            st.add_column(col)
        for name, e in schedule.items():
            nxt = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(e.get("next", 0))))
            st.add_row(name, str(e.get("cron", "")), str(e.get("job", "")), str(e.get("queue", "")), nxt,
                       f"{_age(str(e.get('seen', '')))} ago on {e.get('host', '?')}")
        console.print(st)


@main.command()
@click.argument("thresholds", nargs=-1, required=True)
@click.pass_obj
@_redis_errors
def monitor(obj: Context, thresholds: tuple[str, ...]) -> None:
    """Exit 1 naming every queue whose ready backlog is over its MAX (QUEUE=MAX ...)."""
    limits: dict[str, int] = {}
    for item in thresholds:
        name, sep, limit = item.partition("=")
        if not sep or not limit.strip().isdigit():
            raise click.BadParameter(f"expected QUEUE=MAX with MAX a whole number, got {item!r}", param_hint="THRESHOLDS")
        try:
            check_queue_name(name)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="THRESHOLDS") from None
        limits[name] = int(limit)
    sizes = obj.queue().sizes(list(limits))
    over = [name for name, limit in limits.items() if sizes[name]["ready"] > limit]
    for name, limit in limits.items():
        mark = "OVER" if name in over else "ok"
        click.echo(f"{mark:<4} {name}: {sizes[name]['ready']} ready (max {limit}), {sizes[name]['delayed']} delayed, {sizes[name]['reserved']} reserved")
    if over:
        click.echo(f"queue: backlog over threshold: {', '.join(over)}", err=True)
        sys.exit(1)


def _settings(kind: str, convert: Callable[[str], Any], check: Callable[[str], str]) -> Callable[..., dict[str, Any]]:
    """A callback turning repeated NAME=VALUE options into a dict, with one-line usage errors."""

    def parse(_ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in values:
            name, sep, raw = item.partition("=")
            try:
                if not sep:
                    raise ValueError(f"expected {kind}=VALUE")
                value = convert(raw.strip())
                if not math.isfinite(value) or value < 0:
                    raise ValueError("the value must be a finite number >= 0")
                out[check(name.strip())] = value
            except ValueError as exc:
                raise click.BadParameter(f"{item!r}: {exc}", param_hint=f"--{param.name.replace('_', '-')}") from None
        return out

    return parse


def _pool_name(name: str) -> str:
    if not name or not all(c.isalnum() or c in "_.-" for c in name):
        raise ValueError(f"pool names are letters, digits, '_', '.' and '-', got {name!r}")
    return name


@main.command()
@click.option("--listen", default="127.0.0.1:9818", show_default=True, callback=listen_option("127.0.0.1:9818"),
              help="Address to serve /metrics on (loopback unless you mean otherwise).")
@click.option("--pool", "pools", multiple=True, metavar="POOL=N", callback=_settings("POOL", int, _pool_name),
              help="A pool this host runs and its process count (repeat per pool).")
@click.option("--backlog", multiple=True, metavar="QUEUE=N", callback=_settings("QUEUE", int, check_queue_name),
              help="Most ready jobs a queue may hold, exported for the alert rules (repeat per queue).")
@click.option("--max-age", multiple=True, metavar="QUEUE=SECONDS", callback=_settings("QUEUE", float, check_queue_name),
              help="Longest a ready job may wait in a queue, exported for the alert rules (repeat per queue).")
@click.option("--release-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File naming the release this host's `current` points at (read at each scrape).")
@click.option("--host", default=None, help="This host's name as workers report it (default: the hostname).")
@click.option("--allow", multiple=True, metavar="CIDR", callback=networks_option,
              help="Networks that may scrape besides loopback (repeat); others get 403. Needed with a non-loopback --listen.")
@click.pass_obj
def exporter(obj: Context, listen: tuple[str, int], pools: dict[str, int], backlog: dict[str, int], max_age: dict[str, float],
             release_file: Path | None, host: str | None, allow: list[Any]) -> None:
    """Serve the fleet's metrics to Prometheus (queue sizes and ages, job counters, this host's workers)."""
    from .metrics import ExporterSettings, FleetCollector, serve
    from .queue import client_from_url

    _check_redis_url(obj.redis_url)
    client = client_from_url(obj.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        store = FailedJobStore(obj.database_url, timeout=obj.database_timeout)
    except Exception as exc:  # noqa: BLE001 - bad URL, missing driver
        _die(f"bad database URL {redacted_url(obj.database_url)}: {exc}")
    settings = ExporterSettings(obj.prefix, pools=pools, backlog=backlog, max_age=max_age, release_file=release_file)
    if host:
        settings.host = host
    if not allow and not is_loopback(listen[0]):
        raise click.BadParameter(f"{listen[0]} is not a loopback address: name who may scrape with --allow CIDR",
                                 param_hint="--listen")
    collector = FleetCollector(client, settings, store.count)
    try:
        serve(collector, *listen, allow=allow, ready=lambda url: click.echo(f"queuefleet exporter on {url} (host {settings.host})"))
    except OSError as exc:
        _die(f"cannot listen on {listen[0]}:{listen[1]}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass


def release_laggards(workers: list[dict[str, str]], release: str, expect: dict[str, int],
                     replaced: frozenset[str] = frozenset()) -> list[str]:
    """Why the fleet is not (yet) all on `release`: one line per problem, empty when done.

    `replaced` are ids of workers that must have exited (a restart without a new release,
    where the release alone cannot tell a restarted worker from the one it replaces)."""
    problems: list[str] = []
    for host, count in sorted(expect.items()):
        on_host = [w for w in workers if w.get("host") == host]
        behind = [w for w in on_host if w.get("release") != release or w.get("id") in replaced]
        for w in sorted(behind, key=lambda w: (w.get("pool", ""), w.get("pid", ""))):
            why = "has not restarted yet" if w.get("id") in replaced and w.get("release") == release else ""
            problems.append(f"host={host} pool={w.get('pool', '?')} pid={w.get('pid', '?')} release={w.get('release') or '-'} "
                            f"state={w.get('state', '?')}" + (f" {why}" if why else ""))
        current = len(on_host) - len(behind)
        # More is fine: a surplus or replaced process drains on the right release.
        if current < count:
            problems.append(f"host={host}: {current} of {count} expected workers on release {release}")
    return problems


@main.command("await-release")
@click.argument("release")
@click.option("--expect", "expected", multiple=True, required=True, metavar="HOST=COUNT",
              help="Workers each host must run on RELEASE (repeat per host).")
@click.option("--replaced", "replaced", multiple=True, metavar="WORKER_ID",
              help="A worker that must have exited, as `status --json` names it (repeat): for a restart onto the same release.")
@click.option("--timeout", default=300.0, show_default=True, type=float, callback=_positive("--timeout"),
              help="Give up after this many seconds.")
@click.pass_obj
@_redis_errors
def await_release(obj: Context, release: str, expected: tuple[str, ...], replaced: tuple[str, ...], timeout: float) -> None:
    """Wait until every expected worker reports RELEASE in its heartbeat; exit 1 naming the laggards."""
    expect: dict[str, int] = {}
    for item in expected:
        host, sep, count = item.rpartition("=")
        if not sep or not host or not count.isdigit():
            raise click.BadParameter(f"expected HOST=COUNT, got {item!r}", param_hint="--expect")
        expect[host] = expect.get(host, 0) + int(count)
    q = obj.queue()
    deadline = time.monotonic() + timeout
    while True:
        problems = release_laggards(q.workers(), release, expect, frozenset(replaced))
        if not problems:
            total = sum(expect.values())
            click.echo(f"all {total} workers on {len(expect)} host{'s' if len(expect) != 1 else ''} run release {release}"
                       + (f", none of the {len(replaced)} replaced ones left" if replaced else ""))
            return
        if time.monotonic() >= deadline:
            click.echo(f"queue: workers not on release {release} after {timeout:g}s:", err=True)
            for line in problems:
                click.echo(f"  {line}", err=True)
            sys.exit(1)
        time.sleep(0.5)


@main.command()
@click.pass_obj
def migrate(obj: Context) -> None:
    """Create the failed_jobs table, or bring it to this release's schema (idempotent)."""
    store = obj.store(check=False)
    try:
        applied = store.migrate()
    except Exception as exc:  # noqa: BLE001
        _die(f"cannot migrate {redacted_url(obj.database_url)}: {str(exc).splitlines()[0]}")
    for migration in applied:
        click.echo("created table failed_jobs" if migration.version == 1 else
                   f"applied migration {migration.version}: {migration.description}")
    if not applied:
        click.echo("table failed_jobs is up to date")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--queue", default=None, help="Only this queue.")
@click.pass_obj
@_db_errors
def failed(obj: Context, as_json: bool, queue: str | None) -> None:
    """List failed jobs."""
    rows = obj.store().all(queue=queue)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no failed jobs")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Failed jobs ({len(rows)})")
    for col in ("id", "uuid", "queue", "job", "failed at", "error"):
        table.add_column(col, overflow="fold")
    for r in rows:
        try:
            job_name = json.loads(r.payload).get("job", "?")
        except (ValueError, AttributeError):
            job_name = "(malformed)"
        table.add_row(str(r.id), r.uuid, r.queue, job_name, r.failed_at.strftime("%Y-%m-%d %H:%M:%S"), (r.exception.strip().splitlines() or ["-"])[-1][:120])
    Console().print(table)


@main.command()
@click.argument("ids", nargs=-1, required=True)
@click.option("--queue", default=None, help="With `all`: only failed jobs of this queue.")
@click.pass_obj
@_redis_errors
@_db_errors
def retry(obj: Context, ids: tuple[str, ...], queue: str | None) -> None:
    """Push failed jobs back onto their queues (IDs or uuids, or `all`)."""
    store = obj.store()
    if ids == ("all",):
        rows, missing = store.all(queue=queue), []
    else:
        if "all" in ids:
            raise click.BadParameter("`all` cannot be mixed with ids", param_hint="IDS")
        rows, missing = store.find(list(ids))
    from .failed import retry_failed

    q = obj.queue()
    retried = 0
    for row in rows:
        try:
            job = retry_failed(store, q, row)
        except PayloadError as exc:
            click.echo(f"skipped {row.id}: cannot be retried, {exc}", err=True)
            continue
        if job is None:
            missing.append(f"{row.id} (retried or forgotten meanwhile)")
            continue
        retried += 1
        click.echo(f"retried {row.id} ({row.uuid}) as {job.id} on queue {job.queue}")
    for item in missing:
        click.echo(f"queue: no failed job {item}", err=True)
    if not rows and not missing:
        click.echo("no failed jobs to retry")
    if missing:
        sys.exit(1)


@main.command()
@click.argument("ids", nargs=-1, required=True)
@click.pass_obj
@_db_errors
def forget(obj: Context, ids: tuple[str, ...]) -> None:
    """Delete failed jobs by id or uuid."""
    store = obj.store()
    rows, missing = store.find(list(ids))
    store.forget([r.id for r in rows])
    for r in rows:
        click.echo(f"forgot {r.id} ({r.uuid})")
    for item in missing:
        click.echo(f"queue: no failed job {item}", err=True)
    if missing:
        sys.exit(1)


@main.command()
@click.option("--hours", type=float, default=None, callback=_positive("--hours", True), help="Only failed jobs older than this many hours.")
@click.pass_obj
@_db_errors
def flush(obj: Context, hours: float | None) -> None:
    """Delete all failed jobs (or those older than --hours)."""
    count = obj.store().flush(hours)
    click.echo(f"flushed {count} failed job{'s' if count != 1 else ''}")


@main.command()
@click.argument("queue_name", metavar="QUEUE")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
@_redis_errors
def clear(obj: Context, queue_name: str, force: bool) -> None:
    """Delete the ready and delayed jobs of QUEUE (jobs running now finish normally)."""
    try:
        check_queue_name(queue_name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="QUEUE") from None
    if not force and not click.confirm(f"Delete every waiting job of queue {queue_name!r}?", default=False):
        _die("aborted", 1)
    click.echo(f"cleared {obj.queue().clear(queue_name)} jobs from {queue_name}")


from .dashboard import dashboard_command  # noqa: E402 - at the end: dashboard.py uses cli.py's helpers

main.add_command(dashboard_command)


if __name__ == "__main__":  # pragma: no cover
    main()
