"""`queue migrate`, `failed`, `retry`, `forget` and `flush`: the failed-jobs table."""

from __future__ import annotations

import json
import sys

import click

from ..payload import PayloadError
from ..queue import redacted_url
from .app import Context, db_errors, die, main, positive, redis_errors


@main.command()
@click.pass_obj
def migrate(obj: Context) -> None:
    """Create the failed_jobs table, or bring it to this release's schema (idempotent)."""
    store = obj.store(check=False)
    try:
        applied = store.migrate()
    except Exception as exc:  # noqa: BLE001
        die(f"cannot migrate {redacted_url(obj.database_url)}: {str(exc).splitlines()[0]}")
    for migration in applied:
        click.echo("created table failed_jobs" if migration.version == 1 else
                   f"applied migration {migration.version}: {migration.description}")
    if not applied:
        click.echo("table failed_jobs is up to date")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--queue", default=None, help="Only this queue.")
@click.pass_obj
@db_errors
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
@redis_errors
@db_errors
def retry(obj: Context, ids: tuple[str, ...], queue: str | None) -> None:
    """Push failed jobs back onto their queues (IDs or uuids, or `all`)."""
    store = obj.store()
    if ids == ("all",):
        rows, missing = store.all(queue=queue), []
    else:
        if "all" in ids:
            raise click.BadParameter("`all` cannot be mixed with ids", param_hint="IDS")
        rows, missing = store.find(list(ids))
    from ..failed_retry import retry_failed

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
@db_errors
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
@click.option("--hours", type=float, default=None, callback=positive("--hours", True), help="Only failed jobs older than this many hours.")
@click.pass_obj
@db_errors
def flush(obj: Context, hours: float | None) -> None:
    """Delete all failed jobs (or those older than --hours)."""
    count = obj.store().flush(hours)
    click.echo(f"flushed {count} failed job{'s' if count != 1 else ''}")
