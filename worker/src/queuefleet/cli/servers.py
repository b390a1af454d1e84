"""`queue exporter` and `queue dashboard`: the HTTP servers, for Prometheus and for people."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from ..connection import client_from_url
from ..payload import check_pool_name, check_queue_name
from ..queue import Queue, redacted_url
from ..serving import Network, http_server, is_loopback, listen_option, networks_option, shown_url
from .app import Context, check_redis_url, die, main

# The dashboard, the exporter and the autoscaler are imported by their commands only: `queue work`
# and every other command start without them.
DASHBOARD_LISTEN = "127.0.0.1:9819"
DASHBOARD_TOKEN_ENV = "QUEUEFLEET_DASHBOARD_TOKEN"


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


@main.command()
@click.option("--listen", default="127.0.0.1:9818", show_default=True, callback=listen_option("127.0.0.1:9818"),
              help="Address to serve /metrics on (loopback unless you mean otherwise).")
@click.option("--pool", "pools", multiple=True, metavar="POOL=N", callback=_settings("POOL", int, check_pool_name),
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
    """Serve the fleet's metrics to Prometheus (queue sizes and ages, job counters, this host's workers and autoscaled pools)."""
    from ..metrics import ExporterSettings, FleetCollector, serve

    check_redis_url(obj.redis_url)
    client = client_from_url(obj.redis_url, socket_timeout=5, socket_connect_timeout=5)
    store = obj.store(check=False)
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
        die(f"cannot listen on {listen[0]}:{listen[1]}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass


@main.command("dashboard")
@click.option("--listen", default=DASHBOARD_LISTEN, show_default=True, callback=listen_option(DASHBOARD_LISTEN), metavar="HOST:PORT",
              help="Address to serve on; keep it on loopback and reach it through an SSH tunnel, or name who may connect "
                   "with --allow.")
@click.option("--allow", multiple=True, metavar="CIDR", callback=networks_option,
              help="Networks that may connect besides loopback (repeat); others get 403. Needed with a non-loopback --listen.")
@click.option("--allow-host", "hosts", multiple=True, metavar="NAME",
              help="A DNS name the dashboard may be opened by (repeat); IP addresses and localhost always work.")
@click.option("--token-env", default=DASHBOARD_TOKEN_ENV, show_default=True, metavar="NAME",
              help="Environment variable holding the token that allows retry and forget (unset or empty: read-only).")
@click.pass_obj
def dashboard(obj: Context, listen: tuple[str, int], allow: list[Network], hosts: tuple[str, ...],
              token_env: str) -> None:
    """Serve a web page of the fleet: workers, queues, the last hour's throughput and failed jobs."""
    from ..dashboard import Dashboard

    host, port = listen
    if not allow and not is_loopback(host):
        raise click.BadParameter(f"{host} is not a loopback address: name who may connect with --allow CIDR",
                                 param_hint="--listen")
    check_redis_url(obj.redis_url)
    client = client_from_url(obj.redis_url, socket_connect_timeout=2, socket_timeout=5)
    queue = Queue(client, prefix=obj.prefix, url=obj.redis_url, max_payload=obj.max_payload)
    token = os.environ.get(token_env, "")
    app = Dashboard(queue, obj.store(check=False), token, audit=lambda line: click.echo(line), allow=allow, hosts=hosts)
    try:
        server = http_server(host, port, app)
    except OSError as exc:
        die(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    mode = "retry and forget allowed after logging in with the token" if token else "read-only"
    click.echo(f"dashboard on {shown_url(host, port)} ({mode})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(0)
