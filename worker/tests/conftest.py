"""Real servers for the suite: a redis-server and a MariaDB the suite starts itself.

Both run on private ports from temporary directories, so the suite never
touches a system Redis or database. The binaries come from Debian's
redis-server and mariadb-server packages (installed by `make setup`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis

TESTS = Path(__file__).resolve().parent
QUEUE_BIN = str(Path(sys.executable).with_name("queue"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _require(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if not path:
        raise RuntimeError(f"{binary} not found: run `make setup` (installs redis-server and mariadb-server)")
    return path


class RedisServer:
    """A redis-server in a temp dir; can be stopped and started again on the same port."""

    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        self.binary = _require("redis-server")
        self.dir = workdir
        self.port = free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
                "--appendonly", "yes" if self.appendonly else "no", "--daemonize", "no", "--loglevel", "warning"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        wait_for(lambda: _pings(client), what="redis-server to answer")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def own_redis(tmp_path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (AOF on), to stop, kill and restart."""
    workdir = tmp_path / "own-redis"
    workdir.mkdir()
    server = RedisServer(workdir, appendonly=True)
    server.start()
    yield server
    server.stop()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis.Redis(port=redis_server.port).flushall()
    return redis_server.url


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


class TcpProxy:
    """A TCP forwarder between a client and a server, to fail the network in two ways:
    `cut` (connections reset, new ones refused: the server is gone) and `stall`
    (a blackhole: nothing passes either way and nothing is closed, until `heal`;
    then the bytes flow again, as TCP retransmission would deliver them)."""

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
        listener.listen(16)
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
                upstream = socket.create_connection(("127.0.0.1", self.target))
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
        """Refuse new connections and break the open ones."""
        self._flowing.set()
        self._stop.set()
        assert self._listener is not None
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class MariaDB:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.socket = str(workdir / "mysqld.sock")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        datadir = self.dir / "data"
        subprocess.run(
            [_require("mariadb-install-db"), "--no-defaults", f"--datadir={datadir}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.proc = subprocess.Popen(
            [_require("mariadbd"), "--no-defaults", f"--datadir={datadir}", f"--socket={self.socket}", f"--port={self.port}",
             "--bind-address=127.0.0.1", "--user=root", "--skip-log-bin", "--innodb-buffer-pool-size=32M",
             f"--pid-file={self.dir / 'mysqld.pid'}", f"--log-error={self.dir / 'error.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=60, interval=0.2, what="mariadbd to accept connections")
        self.sql("CREATE USER IF NOT EXISTS 'qf'@'127.0.0.1' IDENTIFIED BY 'qf-secret'")

    def _answers(self) -> bool:
        import pymysql

        try:
            pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="").close()
            return True
        except pymysql.MySQLError:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {(self.dir / 'error.log').read_text()[-2000:]}")
            return False

    def sql(self, statement: str) -> list[tuple]:
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return list(cur.fetchall())
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory) -> Iterator[MariaDB]:
    server = MariaDB(Path(tempfile.mkdtemp(prefix="qf-mariadb-")))
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def mysql_url(mariadb: MariaDB) -> Iterator[str]:
    """A fresh database per test, reachable only by the app user `qf`."""
    name = f"qf_{uuid.uuid4().hex[:10]}"
    mariadb.sql(f"CREATE DATABASE {name}")
    mariadb.sql(f"GRANT ALL ON {name}.* TO 'qf'@'127.0.0.1'")
    yield f"mysql+pymysql://qf:qf-secret@127.0.0.1:{mariadb.port}/{name}"
    mariadb.sql(f"DROP DATABASE {name}")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'failed.sqlite3'}"


class QueueCli:
    """Runs the real `queue` console script against the test servers."""

    def __init__(self, redis_url: str, database_url: str, workdir: Path) -> None:
        self.env = {
            **os.environ,
            "QUEUEFLEET_REDIS_URL": redis_url,
            "QUEUEFLEET_DATABASE_URL": database_url,
            "QUEUEFLEET_JOBS": "qf_testjobs",
            "PYTHONPATH": str(TESTS),
            "TEST_REDIS_URL": redis_url,
        }
        self.env.pop("QUEUEFLEET_RELEASE", None)
        self.workdir = workdir
        self.workers: list[subprocess.Popen] = []

    def run(self, *args: str, check: bool = True, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        result = subprocess.run([QUEUE_BIN, *args], env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout, cwd=self.workdir)
        if check and result.returncode != 0:
            raise AssertionError(f"queue {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def spawn(self, *args: str, env: dict | None = None) -> "WorkerProcess":
        log = self.workdir / f"worker-{len(self.workers)}.log"
        err = self.workdir / f"worker-{len(self.workers)}.err"
        proc = subprocess.Popen([QUEUE_BIN, "work", *args], env={**self.env, **(env or {})}, cwd=self.workdir,
                                stdout=open(log, "w"), stderr=open(err, "w"))
        self.workers.append(proc)
        return WorkerProcess(proc, log, err)

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen, log: Path, err: Path) -> None:
        self.proc, self.log, self.err = proc, log, err

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text()

    def errors(self) -> str:
        return self.err.read_text()

    def wait_log(self, text: str, timeout: float = 15) -> None:
        wait_for(lambda: text in self.output() or self.proc.poll() is not None and text in self.output(), timeout=timeout,
                 what=f"worker log line {text!r}\n--- stdout:\n{self.output()}\n--- stderr:\n{self.errors()}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)


@pytest.fixture
def cli(redis_url: str, sqlite_url: str, tmp_path: Path) -> Iterator[QueueCli]:
    c = QueueCli(redis_url, sqlite_url, tmp_path)
    c.run("migrate")
    yield c
    c.close()


@pytest.fixture
def mysql_cli(redis_url: str, mysql_url: str, tmp_path: Path) -> Iterator[QueueCli]:
    c = QueueCli(redis_url, mysql_url, tmp_path)
    c.run("migrate")
    yield c
    c.close()


def executed(r: redis.Redis, key: str = "executed") -> list[str]:
    return [v.decode() for v in r.lrange(key, 0, -1)]
