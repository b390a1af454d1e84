"""`queue push`, `queue clear` and `queue restart`: what an operator sends to the queues and the workers."""

from __future__ import annotations

import json
from typing import Any

import click

from ..payload import MAX_DELAY, Job, check_payload_size, check_queue_name, check_seconds, check_unique_key
from .app import Context, backoff_option, die, main, positive, redis_errors


@main.command()
@click.argument("job")
@click.option("--data", default="null", show_default=True, help="Job data as JSON.")
@click.option("--queue", default="default", show_default=True)
@click.option("--delay", default=0.0, type=float, callback=positive("--delay", True), help="Seconds before the job becomes available.")
@click.option("--tries", type=int, default=None, callback=positive("--tries", True), help="Attempts for this job (overrides the worker's --tries).")
@click.option("--timeout", type=float, default=None, callback=positive("--timeout"), help="Seconds this job may run (overrides the worker's --timeout).")
@click.option("--backoff", default=None, callback=backoff_option, help="Retry delays for this job: S or S1,S2,...")
@click.option("--id", "job_id", default=None, help="Your own job id: pushing the same id again does nothing while the job is queued or running, nor for a day after it finished (safe retries).")
@click.option("--unique-key", default=None, help="No second job with this key is pushed while one is queued or running; prints the id of the job holding it.")
@click.option("--unique-for", default=3600.0, show_default=True, type=float, callback=positive("--unique-for"), help="Seconds the unique key lives at most.")
@click.pass_obj
@redis_errors
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
@redis_errors
def restart(obj: Context, release: str, hosts: tuple[str, ...]) -> None:
    """Ask workers to exit after their current job so supervisor starts them on new code."""
    signalled, skipped = obj.queue().signal_restart(release, hosts)
    scope = f"host{'s' if len(hosts) != 1 else ''} {', '.join(hosts)}" if hosts else "all workers"
    what = f" for release {release}" if release else ""
    if signalled:
        click.echo(f"restart signalled{what}: {scope}" + (f" ({skipped} already on it)" if skipped else ""))
    else:
        click.echo(f"release {release} already signalled for {scope}: nothing to do")


@main.command()
@click.argument("queue_name", metavar="QUEUE")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
@redis_errors
def clear(obj: Context, queue_name: str, force: bool) -> None:
    """Delete the ready and delayed jobs of QUEUE (jobs running now finish normally)."""
    try:
        check_queue_name(queue_name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="QUEUE") from None
    if not force and not click.confirm(f"Delete every waiting job of queue {queue_name!r}?", default=False):
        die("aborted", 1)
    click.echo(f"cleared {obj.queue().clear(queue_name)} jobs from {queue_name}")
