"""The small HTTP servers of `queue exporter` and `queue dashboard` (standard library WSGI), and
who may talk to them: loopback always, other clients only from the networks given with --allow."""

from __future__ import annotations

import ipaddress
import socket
from socketserver import ThreadingMixIn
from typing import Any, Callable, Sequence
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import click

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def allowed(remote: str, networks: Sequence[Network]) -> bool:
    """Whether a client address may be served: loopback always, else only the networks given."""
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in (*LOOPBACK, *networks))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def networks_option(_ctx: click.Context | None, _param: click.Parameter | None, values: tuple[str, ...]) -> list[Network]:
    """A click callback turning repeated CIDR options into networks, with a one-line usage error."""
    try:
        return [ipaddress.ip_network(v, strict=False) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class IPv6Server(ThreadingServer):
    address_family = socket.AF_INET6


class QuietHandler(WSGIRequestHandler):
    """Access log lines without the query string (it may carry a token)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = self.path.split("?", 1)[0]
        self.log_message('"%s %s" %s %s', self.command, path, str(code), str(size))


class SilentHandler(WSGIRequestHandler):
    """No access log at all (a scrape every few seconds says nothing)."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass


def http_server(host: str, port: int, app: Callable[..., Any], *, quiet: bool = False) -> WSGIServer:
    """A threading WSGI server bound to host:port (IPv6 when host has a ':'); OSError if it cannot bind."""
    return make_server(host, port, app, server_class=IPv6Server if ":" in host else ThreadingServer,
                       handler_class=SilentHandler if quiet else QuietHandler)


def shown_url(host: str, port: int, path: str = "/") -> str:
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}{path}"


def listen_option(default: str) -> Callable[[click.Context | None, click.Parameter | None, str], tuple[str, int]]:
    """A click callback turning HOST:PORT (or [IPv6]:PORT) into (host, port), with a one-line usage error."""

    def parse(_ctx: click.Context | None, _param: click.Parameter | None, value: str) -> tuple[str, int]:
        host, sep, port = value.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise click.BadParameter(f"expected HOST:PORT (like {default}), got {value!r}")
        return host, int(port)

    return parse
