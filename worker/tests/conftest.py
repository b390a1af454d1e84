"""Real servers for the suite: a redis-server and a MariaDB the suite starts itself.

Both run on private ports from temporary directories, so the suite never
touches a system Redis or database. The binaries come from Debian's
redis-server and mariadb-server packages (installed by `make setup`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis

from servers import MariaDB, RedisServer, wait_for

TESTS = Path(__file__).resolve().parent
QUEUE_BIN = str(Path(sys.executable).with_name("queue"))


@pytest.fixture
def own_redis(tmp_path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (AOF on), to stop, kill and restart."""
    workdir = tmp_path / "own-redis"
    workdir.mkdir()
    server = RedisServer(workdir, appendonly=True)
    server.start()
    yield server
    server.stop()


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


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory) -> Iterator[MariaDB]:
    server = MariaDB(Path(tempfile.mkdtemp(prefix="qf-mariadb-")))
    server.start()
    server.app_user("qf", "qf-secret")
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def mysql_url(mariadb: MariaDB) -> Iterator[str]:
    """A fresh database per test, reachable only by the app user `qf`."""
    name = f"qf_{uuid.uuid4().hex[:10]}"
    mariadb.app_user("qf", "qf-secret", name)
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
            "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
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


def redis_ms(r: redis.Redis) -> int:
    seconds, micros = r.time()
    return seconds * 1000 + micros // 1000


def leases_expired(r: redis.Redis, queue: str = "default", prefix: str = "queuefleet") -> bool:
    """Every reservation of `queue` is past its lease deadline, by the Redis clock (and there is one)."""
    first = r.zrange(f"{prefix}:queue:{queue}:reserved", -1, -1, withscores=True)
    return bool(first) and first[0][1] < redis_ms(r)


def worker_note(pid: int) -> bytes:
    """What a live worker notes on its host about the job it runs (see queuefleet.running_notes)."""
    from queuefleet.running_notes import notes_dir

    for path in Path(notes_dir()).glob(f"queuefleet-{pid}-*.running"):
        return path.read_bytes().split(b"\n", 1)[0]
    return b""


def process_age(pid: int) -> float:
    """Seconds since process `pid` started."""
    ticks = os.sysconf("SC_CLK_TCK")
    stat = Path(f"/proc/{pid}/stat").read_text()
    started = int(stat[stat.rfind(")") + 2 :].split()[19]) / ticks
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started
