"""`queue status`, `queue monitor` and `queue await-release`: what the queues and the workers are doing."""

from __future__ import annotations

import json
import sys
import time

import click

from ..payload import check_queue_name
from .app import Context, main, positive, queue_names, redis_errors


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
@redis_errors
def status(obj: Context, as_json: bool, only: str | None) -> None:
    """Queue sizes and live workers."""
    q = obj.queue()
    state = q.status(queue_names(None, None, only) if only else None)  # type: ignore[arg-type]
    sizes, workers, restart_state = state.sizes, state.workers, state.restart
    from ..schedule import read_schedule

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
@redis_errors
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
@click.option("--timeout", default=300.0, show_default=True, type=float, callback=positive("--timeout"),
              help="Give up after this many seconds.")
@click.pass_obj
@redis_errors
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
