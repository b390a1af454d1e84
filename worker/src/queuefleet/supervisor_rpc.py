"""supervisord's XML-RPC interface, over its unix socket or HTTP: list, start and stop processes.

The same calls `supervisorctl` makes (supervisor.getAllProcessInfo, startProcess, stopProcess),
with the standard library's xmlrpc client and a transport that speaks HTTP over a unix socket.
"""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

RUNNING_STATES = frozenset({"STARTING", "RUNNING", "BACKOFF"})  # present, or about to be
STARTABLE_STATES = frozenset({"STOPPED", "EXITED", "FATAL"})


class SupervisorError(Exception):
    """supervisord cannot be reached, or refused a call."""


@dataclass(frozen=True)
class ProcessInfo:
    group: str
    name: str
    state: str
    pid: int

    @property
    def full_name(self) -> str:
        return f"{self.group}:{self.name}"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self.path = path
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixConnection(self.path, self.timeout)


class Supervisor:
    """`url` as in supervisorctl's serverurl: unix:///run/supervisor.sock or http://127.0.0.1:9001."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError(f"a unix:// supervisor URL needs the socket's path, got {url!r}")
            self._proxy = xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=_UnixTransport(parts.path, timeout))
        elif parts.scheme in ("http", "https"):
            self._proxy = xmlrpc.client.ServerProxy(url.rstrip("/") + "/RPC2")
        else:
            raise ValueError(f"supervisor URL must be unix:///path or http://host:port, got {url!r}")
        self.url = url

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault as exc:
            raise SupervisorError(f"supervisor.{method}{args}: {exc.faultString}") from exc
        except (OSError, xmlrpc.client.ProtocolError, http.client.HTTPException) as exc:
            raise SupervisorError(f"cannot reach supervisord at {self.url}: {exc}") from exc

    def processes(self) -> list[ProcessInfo]:
        """Every process supervisord runs, sorted by name."""
        infos = [ProcessInfo(p["group"], p["name"], p["statename"], int(p.get("pid") or 0))
                 for p in self._call("getAllProcessInfo")]
        return sorted(infos, key=lambda p: p.full_name)

    def start(self, process: ProcessInfo) -> None:
        """Start one process without waiting for it to be RUNNING (supervisord reports that later)."""
        self._call_unless("ALREADY_STARTED", "startProcess", process.full_name, False)

    def stop(self, process: ProcessInfo) -> None:
        """Ask one process to stop with its stopsignal, without waiting: a worker finishes its job first."""
        self._call_unless("NOT_RUNNING", "stopProcess", process.full_name, False)

    def _call_unless(self, fault: str, method: str, *args: Any) -> None:
        """`method`, where supervisord's `fault` means it is done already (a race with autorestart or a hand)."""
        try:
            self._call(method, *args)
        except SupervisorError as exc:
            if fault not in str(exc):
                raise
