"""`queue dashboard`: one web page (and its JSON) over the fleet, served by the standard library.

What it shows comes from one read-only Redis call (stats.read_stats) and the newest rows
of the failed-jobs table. Either may be down: the page then says so and shows the rest.
Retry and forget are allowed only to a request carrying the token of --token-env; without
a token configured the dashboard is read-only.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable
from urllib.parse import parse_qs, quote

import click
import redis
from sqlalchemy.exc import SQLAlchemyError

from .dashboard_data import collect
from .dashboard_html import Access, render_page
from .failed import FailedJobStore, describe_db_error, retry_failed
from .payload import PayloadError
from .queue import Queue, client_from_url, redacted_url
from .serving import http_server, listen_option, shown_url

if TYPE_CHECKING:
    from .cli import Context

DEFAULT_LISTEN = "127.0.0.1:9819"
TOKEN_ENV = "QUEUEFLEET_DASHBOARD_TOKEN"
MAX_FORM_BYTES = 4096
ACTION = re.compile(r"/failed/([0-9]{1,18})/(retry|forget)")
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
]


@dataclass
class Response:
    status: str
    body: str
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def text(status: str, message: str, *headers: tuple[str, str]) -> Response:
    return Response(status, message.rstrip("\n") + "\n", headers=headers)


class Dashboard:
    """The WSGI application."""

    def __init__(self, queue: Queue, store: FailedJobStore, token: str,
                 audit: Callable[[str], None] = lambda line: None) -> None:
        self.queue = queue
        self.store = store
        self.token = token
        self.audit = audit

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        response = self.route(environ)
        body = response.body.encode()
        start_response(response.status, [("Content-Type", response.content_type), ("Content-Length", str(len(body))),
                                          *HEADERS, *response.headers])
        return [body]

    def route(self, environ: dict[str, Any]) -> Response:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        if method not in ("GET", "POST"):
            return text("405 Method Not Allowed", f"method {method} is not allowed", ("Allow", "GET, POST"))
        pages = {"/": self.page, "/api/overview": self.api, "/healthz": self.health}
        action = ACTION.fullmatch(path)
        if method == "POST" and action:
            return self.act(environ, int(action[1]), action[2])
        if method == "GET" and path in pages:
            return pages[path](parse_qs(environ.get("QUERY_STRING", "")))
        if action or path in pages:
            return text("405 Method Not Allowed", f"method {method} is not allowed on {path}",
                        ("Allow", "POST" if action else "GET"))
        return text("404 Not Found", f"no page {path}")

    def access(self, query: dict[str, list[str]]) -> Access:
        given = query.get("token", [""])[0]
        if not self.token:
            state = "off"
        elif not given:
            state = "locked"
        else:
            state = "ok" if self.token_ok(given) else "wrong"
        return Access(state, given if state == "ok" else "", unlock=query.get("unlock", [""])[0] == "1")

    def token_ok(self, given: str) -> bool:
        return bool(self.token) and hmac.compare_digest(given.encode(), self.token.encode())

    def overview(self) -> dict[str, Any]:
        doc = collect(self.queue, self.store)
        doc["read_only"] = not self.token
        return doc

    def page(self, query: dict[str, list[str]]) -> Response:
        return Response("200 OK", render_page(self.overview(), self.access(query)), "text/html; charset=utf-8")

    def api(self, _query: dict[str, list[str]]) -> Response:
        return Response("200 OK", json.dumps(self.overview(), indent=2, sort_keys=True) + "\n", "application/json")

    def health(self, _query: dict[str, list[str]]) -> Response:
        try:
            self.queue.redis.ping()
        except redis.RedisError as exc:
            return text("503 Service Unavailable", f"Redis unreachable: {redacted_url(self.queue.url)}: {exc}")
        return text("200 OK", "ok")

    def act(self, environ: dict[str, Any], row_id: int, action: str) -> Response:
        """POST /failed/<id>/retry|forget: with the token, do it and go back to the page (303)."""
        if not self.token:
            return text("403 Forbidden", f"the dashboard is read-only: no token is configured, {action} is not allowed")
        token = read_form(environ).get("token", [""])[0]
        if not self.token_ok(token):
            return text("403 Forbidden", "wrong token")
        try:
            done = self.apply(row_id, action)
        except redis.RedisError as exc:
            return text("503 Service Unavailable", f"Redis unreachable: {exc}; job {row_id} not retried")
        except SQLAlchemyError as exc:
            return text("503 Service Unavailable", f"failed-jobs database unreachable: {describe_db_error(exc)}")
        except PayloadError as exc:
            return text("409 Conflict", f"failed job {row_id} cannot be retried: {exc}")
        if done is None:
            return text("404 Not Found", f"no failed job {row_id}")
        self.audit(done)
        return Response("303 See Other", "", headers=(("Location", f"/?token={quote(token, safe='')}"),))

    def apply(self, row_id: int, action: str) -> str | None:
        """Retry or forget one failed job; a line saying what was done, None when there is no such row."""
        rows, _missing = self.store.find([str(row_id)])
        if not rows:
            return None
        row = rows[0]
        if action == "forget":
            self.store.forget([row.id])
            return f"dashboard: forgot {row.id} ({row.uuid})"
        job = retry_failed(self.store, self.queue, row)
        if job is None:
            return None  # retried or forgotten meanwhile (a double click)
        return f"dashboard: retried {row.id} ({row.uuid}) as {job.id} on queue {job.queue}"


def read_form(environ: dict[str, Any]) -> dict[str, list[str]]:
    try:
        length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_FORM_BYTES)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    return parse_qs(body.decode("utf-8", "replace"))


@click.command("dashboard")
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, callback=listen_option(DEFAULT_LISTEN), metavar="HOST:PORT",
              help="Address to serve on; keep it on loopback and reach it through an SSH tunnel.")
@click.option("--token-env", default=TOKEN_ENV, show_default=True, metavar="NAME",
              help="Environment variable holding the token that allows retry and forget (unset or empty: read-only).")
@click.pass_obj
def dashboard_command(obj: Context, listen: tuple[str, int], token_env: str) -> None:
    """Serve a web page of the fleet: workers, queues, the last hour's throughput and failed jobs."""
    from .cli import _check_redis_url, _die

    _check_redis_url(obj.redis_url)
    client = client_from_url(obj.redis_url, socket_connect_timeout=2, socket_timeout=5)
    queue = Queue(client, prefix=obj.prefix, url=obj.redis_url, max_payload=obj.max_payload)
    token = os.environ.get(token_env, "")
    app = Dashboard(queue, obj.store(check=False), token, audit=lambda line: click.echo(line))
    host, port = listen
    try:
        server = http_server(host, port, app)
    except OSError as exc:
        _die(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    mode = "retry and forget allowed with the token" if token else "read-only"
    click.echo(f"dashboard on {shown_url(host, port)} ({mode})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(0)
