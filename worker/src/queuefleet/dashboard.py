"""`queue dashboard`: one web page (and its JSON) over the fleet, served by the standard library
(the command and its options: cli/servers.py).

What it shows comes from one read-only Redis call (stats.read_stats) and the newest rows
of the failed-jobs table. Either may be down: the page then says so and shows the rest.

Who may do what:
- Clients: loopback always, others only from the networks of --allow (a non-loopback --listen
  needs it, as for the exporter). The Host header must be an IP address, localhost, or a name
  given with --allow-host: a page of another site whose name was re-pointed at this address
  (DNS rebinding) is refused.
- Retry and forget need a session: the token of --token-env, posted once to /login, sets an
  HttpOnly, SameSite=Strict cookie (signed, 12 hours). The token never appears in a URL, a
  redirect or the page. POSTs from another origin are refused. Without a token configured the
  dashboard is read-only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import parse_qs, urlsplit

import redis
from sqlalchemy.exc import SQLAlchemyError

from .dashboard_data import collect
from .dashboard_html import Access, render_login, render_page
from .failed import FailedJobStore, describe_db_error
from .failed_retry import retry_failed
from .payload import PayloadError
from .connection import redacted_url
from .queue import Queue
from .serving import Network, allowed, is_loopback

MAX_FORM_BYTES = 4096
SESSION_COOKIE = "queuefleet_session"
SESSION_SECONDS = 12 * 3600
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


def see_other(*headers: tuple[str, str]) -> Response:
    return Response("303 See Other", "", headers=(("Location", "/"), *headers))


def host_of(header: str) -> str:
    """The host of a Host header (or of an Origin's netloc), without its port, lower case."""
    if header.startswith("["):
        return header[1 : header.find("]")].lower() if "]" in header else ""
    return header.rsplit(":", 1)[0].lower() if header.count(":") == 1 else header.lower()


def host_allowed(header: str, names: Sequence[str]) -> bool:
    """An IP address (no DNS involved), localhost, or a name given with --allow-host."""
    host = host_of(header)
    return is_loopback(host) or _is_ip(host) or host in names


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class Dashboard:
    """The WSGI application."""

    def __init__(self, queue: Queue, store: FailedJobStore, token: str, audit: Callable[[str], None] = lambda line: None,
                 *, allow: Sequence[Network] = (), hosts: Sequence[str] = ()) -> None:
        self.queue = queue
        self.store = store
        self.token = token
        self.audit = audit
        self.allow = tuple(allow)
        self.hosts = tuple(h.lower() for h in hosts)
        self.session_key = secrets.token_bytes(32)  # sessions end when the dashboard restarts

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        response = self.refused(environ) or self.route(environ)
        body = response.body.encode()
        start_response(response.status, [("Content-Type", response.content_type), ("Content-Length", str(len(body))),
                                          *HEADERS, *response.headers])
        return [body]

    def refused(self, environ: dict[str, Any]) -> Response | None:
        """403 for a client outside --allow, a Host that may be DNS rebinding, a POST from another origin."""
        if not allowed(environ.get("REMOTE_ADDR", ""), self.allow):
            return text("403 Forbidden", "forbidden: this address is not in the dashboard's --allow list")
        host = environ.get("HTTP_HOST")
        if host is not None and not host_allowed(host, self.hosts):
            return text("403 Forbidden", f"forbidden: Host {host[:100]!r} is not this dashboard's address (open it by IP "
                                         "address or localhost, or name it with --allow-host)")
        if environ.get("REQUEST_METHOD") == "POST" and not self.same_origin(environ):
            return text("403 Forbidden", "forbidden: a form of another site may not post here")
        return None

    @staticmethod
    def same_origin(environ: dict[str, Any]) -> bool:
        """A browser's POST names the page it comes from (Origin, else Referer): it must be this host."""
        source = environ.get("HTTP_ORIGIN") or environ.get("HTTP_REFERER")
        if not source:
            return True  # not a browser (curl and the like): the session cookie is what they need
        host = environ.get("HTTP_HOST", "")
        return source != "null" and urlsplit(source).netloc.lower() == host.lower()

    def route(self, environ: dict[str, Any]) -> Response:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        if method not in ("GET", "POST"):
            return text("405 Method Not Allowed", f"method {method} is not allowed", ("Allow", "GET, POST"))
        gets = {"/": self.page, "/api/overview": self.api, "/healthz": self.health, "/login": self.login_page}
        posts = {"/login": self.login, "/logout": self.logout}
        action = ACTION.fullmatch(path)
        if method == "POST" and action:
            return self.act(environ, int(action[1]), action[2])
        if method == "POST" and path in posts:
            return posts[path](environ)
        if method == "GET" and path in gets:
            return gets[path](environ)
        if action or path in gets or path in posts:
            allow = ", ".join(m for m, routes in (("GET", gets), ("POST", posts)) if path in routes) or "POST"
            return text("405 Method Not Allowed", f"method {method} is not allowed on {path}", ("Allow", allow))
        return text("404 Not Found", f"no page {path}")

    # -- sessions ---------------------------------------------------------------------------

    def _signature(self, expires: str) -> str:
        return hmac.new(self.session_key, expires.encode(), hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        expires = str(int(time.time()) + SESSION_SECONDS)
        return f"{expires}.{self._signature(expires)}"

    def logged_in(self, environ: dict[str, Any]) -> bool:
        if not self.token:
            return False
        try:
            morsel = SimpleCookie(environ.get("HTTP_COOKIE", "")).get(SESSION_COOKIE)
        except CookieError:
            return False
        expires, _, signature = (morsel.value if morsel else "").partition(".")
        return (expires.isdigit() and int(expires) > time.time()
                and hmac.compare_digest(signature.encode(), self._signature(expires).encode()))

    def access(self, environ: dict[str, Any]) -> Access:
        if not self.token:
            return Access("off")
        return Access("ok" if self.logged_in(environ) else "locked")

    def token_ok(self, given: str) -> bool:
        return bool(self.token) and hmac.compare_digest(given.encode(), self.token.encode())

    def login_page(self, environ: dict[str, Any]) -> Response:
        if not self.token:
            return text("404 Not Found", "the dashboard is read-only: no token is configured, there is nothing to log in to")
        return Response("200 OK", render_login(), "text/html; charset=utf-8")

    def login(self, environ: dict[str, Any]) -> Response:
        """POST /login with the token: a session cookie, and back to the page."""
        if not self.token:
            return text("403 Forbidden", "the dashboard is read-only: no token is configured")
        if not self.token_ok(read_form(environ).get("token", [""])[0]):
            return Response("403 Forbidden", render_login(error="Wrong token."), "text/html; charset=utf-8")
        cookie = f"{SESSION_COOKIE}={self.new_session()}; Path=/; Max-Age={SESSION_SECONDS}; HttpOnly; SameSite=Strict"
        return see_other(("Set-Cookie", cookie))

    def logout(self, _environ: dict[str, Any]) -> Response:
        return see_other(("Set-Cookie", f"{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"))

    # -- pages ------------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        doc = collect(self.queue, self.store)
        doc["read_only"] = not self.token
        return doc

    def page(self, environ: dict[str, Any]) -> Response:
        return Response("200 OK", render_page(self.overview(), self.access(environ)), "text/html; charset=utf-8")

    def api(self, _environ: dict[str, Any]) -> Response:
        return Response("200 OK", json.dumps(self.overview(), indent=2, sort_keys=True) + "\n", "application/json")

    def health(self, _environ: dict[str, Any]) -> Response:
        try:
            self.queue.redis.ping()
        except redis.RedisError as exc:
            return text("503 Service Unavailable", f"Redis unreachable: {redacted_url(self.queue.url)}: {exc}")
        return text("200 OK", "ok")

    def act(self, environ: dict[str, Any], row_id: int, action: str) -> Response:
        """POST /failed/<id>/retry|forget: with a session, do it and go back to the page (303)."""
        if not self.token:
            return text("403 Forbidden", f"the dashboard is read-only: no token is configured, {action} is not allowed")
        if not self.logged_in(environ):
            return text("403 Forbidden", "not logged in: POST the token to /login first")
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
        return see_other()

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
