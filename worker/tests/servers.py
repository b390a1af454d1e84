"""Real servers and network faults, shared by the worker tests (conftest.py) and bench/faults.

A redis-server and a MariaDB on private ports in temporary directories (never a system
one), a TCP proxy that fails the network on demand, and a real supervisord. The binaries
come from Debian's redis-server and mariadb-server packages; supervisord from the
`supervisor` pip package of the test extras.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, TypeVar

import redis

T = TypeVar("T")
VENV_BIN = Path(sys.executable).parent
RESET = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close() sends RST


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T | None:
    """The first truthy value of `predicate` within `timeout` seconds, else None. An exception
    counts as "not yet" (a server that is still coming back)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001
            value = None
        if value:
            return value
        time.sleep(interval)
    return None


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> T:
    """Like `poll`, but exceptions propagate and a timeout fails the test, naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def require(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if not path:
        raise RuntimeError(f"{binary} not found: run `make setup` (installs redis-server and mariadb-server)")
    return path


def pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class RedisServer:
    """A redis-server in a temp dir; can be stopped, killed and started again on the same port.
    With `appendonly`, the AOF is written with `appendfsync everysec` (Debian's and our role's default)."""

    def __init__(self, workdir: Path, *, appendonly: bool = False, password: str | None = None,
                 replicaof: "RedisServer | None" = None) -> None:
        self.binary = require("redis-server")
        self.dir = workdir
        self.port = free_port()
        self.appendonly = appendonly
        self.password = password
        self.replicaof = replicaof
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec", "--daemonize", "no",
                "--loglevel", "warning", "--logfile", str(self.dir / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        if self.replicaof is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replicaof.port)]
        args += ["--repl-diskless-sync-delay", "0"]  # a replica syncs at once (Debian's default waits 5 s)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        wait_for(lambda: pings(client), timeout=30, what="redis-server to answer")

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, **kwargs)  # type: ignore[arg-type]

    def role(self) -> str:
        return self.client(socket_timeout=2).role()[0].decode()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP: the process holds its sockets and answers nothing (a hung host)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def version(self) -> str:
        return self.client().info("server")["redis_version"]


class SentinelServer:
    """One redis-sentinel (`redis-server --sentinel`) watching `master` as MASTER_NAME."""

    def __init__(self, workdir: Path, master: RedisServer, *, quorum: int, down_after_ms: int, failover_timeout_ms: int,
                 password: str | None = None) -> None:
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.conf = workdir / "sentinel.conf"
        lines = [f"port {self.port}", "bind 127.0.0.1", "daemonize no", f"dir {workdir}", f"logfile {workdir / 'sentinel.log'}",
                 f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} {quorum}",
                 f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}",
                 f"sentinel failover-timeout {MASTER_NAME} {failover_timeout_ms}",
                 f"sentinel parallel-syncs {MASTER_NAME} 1"]
        if master.password:
            lines.append(f"sentinel auth-pass {MASTER_NAME} {_quoted(master.password)}")
        if password:
            lines.append(f"requirepass {_quoted(password)}")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([require("redis-server"), str(self.conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: pings(self.client()), timeout=30, what="redis-sentinel to answer")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_timeout=2, decode_responses=True)

    def master(self) -> dict:
        return _pairs(self.client().execute_command("SENTINEL", "MASTER", MASTER_NAME))

    def replicas(self) -> list[dict]:
        return [_pairs(r) for r in self.client().execute_command("SENTINEL", "REPLICAS", MASTER_NAME)]

    def master_port(self) -> int:
        return int(self.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)[1])

    def freeze(self) -> None:
        """SIGSTOP: a hung Sentinel (connections are accepted, nothing is answered)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(30)


MASTER_NAME = "qfmaster"


def _pairs(flat: list) -> dict:
    return dict(zip(flat[::2], flat[1::2]))


def _quoted(value: str) -> str:
    """A value for a redis config file line (spaces and quotes allowed)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SentinelGroup:
    """A master, one replica and 3 sentinels as local processes: what a Redis that survives its host
    looks like on one machine. `url` is the redis+sentinel:// URL the clients use."""

    def __init__(self, workdir: Path, *, password: str | None = "data pw/@:%", sentinel_password: str | None = None,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 5000, appendonly: bool = True) -> None:
        (workdir / "a").mkdir(parents=True, exist_ok=True)
        (workdir / "b").mkdir(parents=True, exist_ok=True)
        self.master = RedisServer(workdir / "a", appendonly=appendonly, password=password)
        self.replica = RedisServer(workdir / "b", appendonly=appendonly, password=password, replicaof=self.master)
        self.down_after_ms = down_after_ms
        self.sentinels = [SentinelServer(workdir / f"s{i}", self.master, quorum=2, down_after_ms=down_after_ms,
                                         failover_timeout_ms=failover_timeout_ms, password=sentinel_password)
                          for i in range(3)]
        self.password, self.sentinel_password = password, sentinel_password

    @property
    def url(self) -> str:
        return self.url_with()

    def url_with(self, query: str = "") -> str:
        from urllib.parse import quote

        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        params = [query] if query else []
        if self.sentinel_password:
            params.insert(0, f"sentinel_password={quote(self.sentinel_password, safe='')}")
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{auth}{hosts}/{MASTER_NAME}/0" + (f"?{'&'.join(params)}" if params else "")

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        wait_for(lambda: self.replica.client().info("replication")["master_link_status"] == "up", timeout=30,
                 what="the replica to sync")
        for s in self.sentinels:
            s.start()
        wait_for(self.settled, timeout=60, interval=0.1, what="the sentinels to know each other and the replica")

    def settled(self) -> bool:
        """Every sentinel names the same master, knows the other two and one replica that is up."""
        masters = set()
        for s in self.sentinels:
            try:
                m = s.master()
                replicas = s.replicas()
            except redis.RedisError:
                return False
            up = [r for r in replicas if not {"s_down", "disconnected"} & set(r["flags"].split(","))]
            if m["num-other-sentinels"] != "2" or len(up) != 1 or "down" in m["flags"]:
                return False
            masters.add(m["port"])
        return len(masters) == 1

    def current_master(self) -> RedisServer:
        port = self.sentinels[0].master_port()
        return self.master if port == self.master.port else self.replica

    def other(self, server: RedisServer) -> RedisServer:
        return self.replica if server is self.master else self.master

    def failover(self) -> None:
        """SENTINEL FAILOVER: a planned switch (no agreement needed)."""
        self.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", MASTER_NAME)

    def wait_promoted(self, new: RedisServer, timeout: float = 30) -> float:
        """Wait until every live sentinel names `new` and it says it is master; returns the seconds waited."""
        start = time.monotonic()

        def promoted() -> bool:
            ports = {s.master_port() for s in self.sentinels if s.proc and s.proc.poll() is None}
            return ports == {new.port} and new.role() == "master"

        wait_for(lambda: poll(promoted, 0.01), timeout=timeout, interval=0.05, what=f"port {new.port} to be promoted")
        return time.monotonic() - start

    def stop(self) -> None:
        for s in self.sentinels:
            s.stop()
        for r in (self.master, self.replica):
            if r.proc and r.proc.poll() is None:
                r.proc.send_signal(signal.SIGCONT)
            r.kill()


class MariaDB:
    """A mariadbd in a temp dir, root without a password over TCP on loopback."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.socket = str(workdir / "mysqld.sock")
        self.proc: subprocess.Popen | None = None

    def start(self, *, fresh: bool = True) -> None:
        """Start the server; `fresh` creates its data directory first (else it reuses the data)."""
        datadir = self.dir / "data"
        if fresh:
            subprocess.run(
                [require("mariadb-install-db"), "--no-defaults", f"--datadir={datadir}", "--user=root",
                 "--auth-root-authentication-method=normal", "--skip-test-db"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
        self.proc = subprocess.Popen(
            [require("mariadbd"), "--no-defaults", f"--datadir={datadir}", f"--socket={self.socket}", f"--port={self.port}",
             "--bind-address=127.0.0.1", "--user=root", "--skip-log-bin", "--innodb-buffer-pool-size=32M",
             f"--pid-file={self.dir / 'mysqld.pid'}", f"--log-error={self.dir / 'error.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=90, interval=0.2, what="mariadbd to accept connections")

    def _answers(self) -> bool:
        import pymysql

        try:
            pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="", connect_timeout=2).close()
            return True
        except pymysql.MySQLError:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {(self.dir / 'error.log').read_text()[-2000:]}")
            return False

    def sql(self, statement: str) -> list[tuple]:
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="", autocommit=True,
                               connect_timeout=2)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return list(cur.fetchall())
        finally:
            conn.close()

    def app_user(self, user: str, password: str, *databases: str) -> None:
        """Create `user`@127.0.0.1 (if missing) with every privilege on `databases` only."""
        self.sql(f"CREATE USER IF NOT EXISTS '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'")
        for name in databases:
            self.sql(f"CREATE DATABASE IF NOT EXISTS {name}")
            self.sql(f"GRANT ALL ON {name}.* TO '{user}'@'127.0.0.1'")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


class TcpProxy:
    """A TCP forwarder between clients and a server, to fail the network in two ways:
    `cut` (open connections reset, new ones refused: the server is unreachable) until
    `restore`, and `stall` (a blackhole: nothing passes either way and nothing is closed)
    until `heal`; then the held bytes flow again, as TCP retransmission would deliver them."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._flowing = threading.Event()
        self._flowing.set()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener, self._stop = listener, threading.Event()
        threading.Thread(target=self._accept, args=(listener, self._stop), daemon=True).start()

    def _accept(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                self._flowing.wait()
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()  # stalled between read and write: hold the bytes
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stall(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        self._flowing.set()
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
                s.close()
            except OSError:
                pass

    def restore(self) -> None:
        """Undo `cut` or `stall`: accept connections again and let bytes flow."""
        self._flowing.set()
        if self._listener is None:
            self.start()


class Supervisord:
    """A real supervisord (foreground) running the programs of `conf` (the text of its
    config file, with `{dir}` for its working directory), as in production."""

    def __init__(self, workdir: Path, conf: str) -> None:
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "supervisord.conf"
        self.conf.write_text(conf)
        self.ctl = [str(VENV_BIN / "supervisorctl"), "-c", str(self.conf)]
        self.proc = subprocess.Popen([str(VENV_BIN / "supervisord"), "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def status(self) -> dict[str, tuple[str, int]]:
        """Process name -> (state, pid; 0 when not running)."""
        out = subprocess.run([*self.ctl, "status"], capture_output=True, text=True).stdout
        procs = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                pid = int(parts[3].rstrip(",")) if len(parts) > 3 and parts[2] == "pid" else 0
                procs[parts[0]] = (parts[1], pid)
        return procs

    def states(self) -> set[str]:
        return {state for state, _ in self.status().values()}

    def pids(self) -> list[int]:
        return [pid for state, pid in self.status().values() if state == "RUNNING" and pid]

    def signal(self, name: str, programs: str) -> None:
        subprocess.run([*self.ctl, "signal", name, programs], capture_output=True, check=True)

    def logs(self, suffix: str = ".log") -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.dir.glob(f"*_[0-9][0-9]{suffix}")))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


SUPERVISOR_HEAD = """\
[supervisord]
nodaemon=true
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
[unix_http_server]
file={dir}/supervisor.sock
[supervisorctl]
serverurl=unix://{dir}/supervisor.sock
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
"""


def worker_program(*, dir: Path, command: str, numprocs: int, stopwaitsecs: int, environment: dict[str, object]) -> str:
    """A supervisord config: one program `workers` of `numprocs` worker processes, as our role renders them."""
    env = ",".join(f'{k}="{str(v).replace("%", "%%")}"' for k, v in environment.items())  # % is supervisor's interpolation
    return SUPERVISOR_HEAD.format(dir=dir) + f"""\
[program:workers]
command={command}
process_name=%(program_name)s_%(process_num)02d
numprocs={numprocs}
directory={dir}
startsecs=1
startretries=3
autorestart=true
stopwaitsecs={stopwaitsecs}
stdout_logfile={dir}/%(program_name)s_%(process_num)02d.log
stderr_logfile={dir}/%(program_name)s_%(process_num)02d.err
environment={env}
"""
