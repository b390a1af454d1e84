"""The failed-jobs store: `queue migrate`, failed / retry / forget / flush, and a
worker that survives the database closing idle connections or going away."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.exc import IntegrityError

from conftest import QueueCli, executed
from servers import TcpProxy, wait_for
from queuefleet import Queue
from queuefleet.failed import FailedJobStore, failed_jobs
from queuefleet.failed_retry import retry_failed

COLUMNS = {"id", "uuid", "connection", "queue", "payload", "exception", "failed_at"}
WIDE = {"COLUMNS": "250"}  # rich must not fold ids and uuids in `queue failed`


def rows(url: str):
    store = FailedJobStore(url)
    try:
        return store.all()
    finally:
        store.engine.dispose()


def fail_jobs(cli: QueueCli, redis_url: str, specs: list[tuple[str, str]], tries: int = 1) -> list[str]:
    """Push one failing job per (queue, tag) and let a worker fail them all."""
    q = Queue.from_url(redis_url)
    ids = [q.push("qf_testjobs:fail", {"tag": tag}, queue=queue, tries=tries) for queue, tag in specs]
    queues = ",".join(dict.fromkeys(queue for queue, _ in specs))
    cli.run("work", "--queue", queues, "--stop-when-empty")
    return ids


# -- migrate ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_migrate_is_idempotent_and_creates_the_table(backend, request, redis_url, tmp_path):
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "mysql_url")
    cli = QueueCli(redis_url, url, tmp_path)

    first = cli.run("migrate")
    assert first.stdout.strip() == "created table failed_jobs"
    second = cli.run("migrate")
    assert second.stdout.strip() == "table failed_jobs is up to date"

    engine = create_engine(url)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("failed_jobs")}
        assert columns == COLUMNS
        # uuid is unique: a second row with the same uuid is refused by the database itself.
        row = {"uuid": "u-1", "connection": "c", "queue": "q", "payload": "{}", "exception": "e"}
        with engine.begin() as conn:
            conn.execute(failed_jobs.insert().values(**row))
        with pytest.raises(IntegrityError):
            with engine.begin() as conn:
                conn.execute(failed_jobs.insert().values(**row))
        # the server fills failed_at when a writer leaves it out
        assert rows(url)[0].failed_at is not None
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_migrations_are_versioned_and_a_later_one_upgrades_a_table_made_before_versions(backend, request, redis_url,
                                                                                         tmp_path, monkeypatch):
    """`queue migrate` was create_all: no way to change the table. Migrations are now versioned:
    a database migrated before counts as version 1, and a later migration (here, a column the
    next release would add) runs once on it, keeping its rows (issue 25)."""
    from sqlalchemy import text

    from queuefleet import migrations

    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "mysql_url")
    engine = create_engine(url)
    failed_jobs.create(engine)  # what `queue migrate` of an earlier release left
    with engine.begin() as conn:
        conn.execute(failed_jobs.insert().values(uuid="old-1", connection="c", queue="q", payload="{}", exception="e"))
    cli = QueueCli(redis_url, url, tmp_path)
    assert cli.run("migrate").stdout.strip() == "table failed_jobs is up to date"
    store = FailedJobStore(url)
    with engine.connect() as conn:
        assert migrations.current_version(conn) == 1
    store.check()

    def add_note(conn) -> None:
        conn.execute(text("ALTER TABLE failed_jobs ADD COLUMN note VARCHAR(64) NULL"))

    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, migrations.Migration(2, "add column note", add_note)))
    with pytest.raises(Exception, match="at schema version 1, this release needs 2: run `queue migrate`"):
        store.check()
    assert [m.version for m in store.migrate()] == [2]
    assert store.migrate() == []
    store.check()
    try:
        assert {c["name"] for c in inspect(engine).get_columns("failed_jobs")} == COLUMNS | {"note"}
        assert [row.uuid for row in store.all()] == ["old-1"]
        with engine.connect() as conn:
            assert [tuple(r) for r in conn.execute(text("SELECT version, description FROM queuefleet_schema ORDER BY version"))] \
                == [(1, "create table failed_jobs"), (2, "add column note")]
    finally:
        store.engine.dispose()
        engine.dispose()


def test_commands_on_an_unmigrated_database_say_to_migrate(redis_url, sqlite_url, tmp_path):
    cli = QueueCli(redis_url, sqlite_url, tmp_path)
    for args in (["failed"], ["work"], ["retry", "all"], ["forget", "1"], ["flush"]):
        result = cli.run(*args, check=False)
        assert result.returncode == 1, (args, result.stderr)
        assert "run `queue migrate` first" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_worker_is_ready_before_it_imports_the_database_layer():
    """`queue work` imports SQLAlchemy (and the dashboard's and the autoscaler's code) only beside
    its first jobs (database.py): on a small host that is half of a worker's start (bench/autoscale)."""
    code = ("import sys, queuefleet.cli, queuefleet.worker; print(' '.join(sorted(m for m in sys.modules "
            "if m.partition('.')[0] == 'sqlalchemy' or m in ('queuefleet.failed', 'queuefleet.dashboard', 'queuefleet.autoscaler'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == []


def test_a_worker_with_a_bad_database_url_exits_1_with_one_line(redis_url, sqlite_url, tmp_path):
    """The URL is checked beside the first jobs now, with the same verdict as before: exit 1, one
    line naming the URL without its password, no traceback."""
    cli = QueueCli(redis_url, sqlite_url, tmp_path)
    for url, needle in (("nosuchdb://x/y", "Can't load plugin"), ("mysql+pymysql://qf:s3cret@db:abc/x", "invalid literal")):
        result = cli.run("work", "--sleep", "30", check=False, env={"QUEUEFLEET_DATABASE_URL": url})
        assert result.returncode == 1, result.stderr
        assert f"queue: bad database URL {url.replace(':s3cret@', ':***@')}: " in result.stderr and needle in result.stderr
        assert "Traceback" not in result.stderr and "s3cret" not in result.stderr


def test_a_job_running_when_the_database_check_fails_finishes_and_the_worker_exits_1(redis_url, sqlite_url, tmp_path, r):
    """Not migrated: the check beside the first job stops the worker as SIGTERM would. The job it
    began finishes, no job is lost or failed, and supervisor sees exit 1 with the reason."""
    cli = QueueCli(redis_url, sqlite_url, tmp_path)  # no `queue migrate`
    q = Queue.from_url(redis_url)
    ids = [q.push("qf_testjobs:slow", {"tag": tag, "seconds": 1.0}) for tag in ("first", "second")]
    worker = cli.spawn("--prefetch", "2")
    assert worker.wait() == 1, worker.errors()
    assert "failed-jobs database" in worker.errors() and "run `queue migrate` first" in worker.errors()
    assert "Traceback" not in worker.errors()
    assert [t.decode() for t in r.lrange("started", 0, -1)] == executed(r) == ["first"]  # begun, so finished
    assert q.sizes(["default"])["default"]["ready"] == 1  # the second, reserved ahead, was given back
    assert "exits: the failed-jobs database cannot be used (see stderr) processed=1 failed=0" in worker.output()


# -- a job that fails all its tries -------------------------------------------------------


def test_job_failing_all_tries_lands_in_mariadb_and_is_listed(mysql_cli, mysql_url, redis_url, r):
    [job_id] = fail_jobs(mysql_cli, redis_url, [("default", "boom")], tries=3)

    [row] = rows(mysql_url)
    assert row.uuid == job_id
    assert row.queue == "default"
    assert row.connection == redis_url
    assert "Traceback" in row.exception and "RuntimeError: failing on purpose: boom" in row.exception
    payload = json.loads(row.payload)
    assert payload["id"] == job_id and payload["job"] == "qf_testjobs:fail" and payload["data"] == {"tag": "boom"}
    assert [e["attempt"] for e in payload["errors"]] == [1, 2, 3]
    assert all(e["error"] == "RuntimeError: failing on purpose: boom" for e in payload["errors"])
    assert len(r.lrange("attempts", 0, -1)) == 3
    # acked: nothing of the job is left in Redis
    assert not r.hexists("queuefleet:payloads", job_id)
    assert r.zcard("queuefleet:queue:default:reserved") == 0

    table = mysql_cli.run("failed", env=WIDE).stdout
    assert str(row.id) in table and job_id in table
    assert "qf_testjobs:fail" in table and "RuntimeError: failing on purpose: boom" in table

    [doc] = json.loads(mysql_cli.run("failed", "--json").stdout)
    assert doc["id"] == row.id and doc["uuid"] == job_id and doc["queue"] == "default"
    assert doc["connection"] == redis_url
    assert json.loads(doc["payload"])["errors"][-1]["attempt"] == 3
    assert "failing on purpose" in doc["exception"]
    dt.datetime.fromisoformat(doc["failed_at"])


def test_failed_lists_rows_written_by_other_tools(cli, sqlite_url):
    """Rows need not come from this worker (a Laravel app, a hand-written insert): an empty
    exception or a payload that is not a job must not break the listing."""
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(failed_jobs.insert().values(uuid="empty-exc", connection="c", queue="default",
                                                 payload="{}", exception=""))
        conn.execute(failed_jobs.insert().values(uuid="not-json", connection="c", queue="default",
                                                 payload="<xml/>", exception="boom"))
    engine.dispose()
    result = cli.run("failed", env=WIDE)
    assert "empty-exc" in result.stdout and "not-json" in result.stdout and "(malformed)" in result.stdout


def test_failed_lists_nothing_clearly(cli):
    assert cli.run("failed").stdout.strip() == "no failed jobs"
    assert json.loads(cli.run("failed", "--json").stdout) == []


# -- retry --------------------------------------------------------------------------------


def test_retry_pushes_the_job_back_and_removes_the_row(cli, sqlite_url, redis_url, r):
    q = Queue.from_url(redis_url)
    job_id = q.push("qf_testjobs:fail_then_succeed", {"tag": "again", "succeed_on": 2}, queue="mail", tries=1)
    cli.run("work", "--queue", "mail", "--stop-when-empty")
    [row] = rows(sqlite_url)
    assert row.uuid == job_id and executed(r) == []

    out = cli.run("retry", str(row.id)).stdout
    assert f"retried {row.id}" in out and "on queue mail" in out
    assert rows(sqlite_url) == []
    assert r.llen("queuefleet:queue:mail") == 1

    cli.run("work", "--queue", "mail", "--stop-when-empty")
    assert executed(r) == ["again"]
    assert rows(sqlite_url) == []
    assert r.hlen("queuefleet:payloads") == 0


def test_retry_by_uuid_and_retried_job_starts_with_fresh_attempts(cli, sqlite_url, redis_url, r):
    q = Queue.from_url(redis_url)
    q.push("qf_testjobs:fail_then_succeed", {"tag": "t3", "succeed_on": 4}, tries=2)
    cli.run("work", "--stop-when-empty")
    [row] = rows(sqlite_url)
    cli.run("retry", row.uuid)
    # attempts were reset: the retried job gets its 2 tries again, and the 4th run overall succeeds
    cli.run("work", "--stop-when-empty")
    assert executed(r) == ["t3"]
    assert rows(sqlite_url) == []


def test_retry_all_with_queue_only_touches_that_queue(cli, sqlite_url, redis_url, r):
    fail_jobs(cli, redis_url, [("a", "a1"), ("a", "a2"), ("b", "b1")])
    assert sorted(x.queue for x in rows(sqlite_url)) == ["a", "a", "b"]

    out = cli.run("retry", "all", "--queue", "a").stdout
    assert out.count("retried") == 2
    assert [x.queue for x in rows(sqlite_url)] == ["b"]
    assert r.llen("queuefleet:queue:a") == 2
    assert r.llen("queuefleet:queue:b") == 0

    assert cli.run("retry", "all", "--queue", "nothing-here").stdout.strip() == "no failed jobs to retry"
    cli.run("retry", "all")
    assert rows(sqlite_url) == []
    assert r.llen("queuefleet:queue:b") == 1


def test_a_failed_job_is_acked_once_stored_and_a_quick_retry_loses_nothing(cli, sqlite_url, redis_url, r):
    """A failed job is acked as soon as its row is stored, not with a later round trip, so a
    `queue retry` right away can never be undone by a late ack of the old job."""
    q = Queue.from_url(redis_url)
    worker = cli.spawn("--sleep", "0.2")
    worker.wait_log("STARTING")
    # Fast jobs first, so the worker reserves the next jobs in one batch.
    q.push_many([("qf_testjobs:incr", {})] * 60)
    wait_for(lambda: r.get("count") == b"60", what="warm-up jobs")
    [failing_id, _] = q.push_many(
        [
            ("qf_testjobs:fail_then_succeed", {"tag": "raced", "succeed_on": 2}),
            ("qf_testjobs:slow", {"tag": "slow", "seconds": 1.5}),
        ],
        tries=1,
    )
    row = wait_for(lambda: (rows(sqlite_url) or [None])[0], what="the failed row")
    assert row.uuid == failing_id
    wait_for(lambda: not r.hexists("queuefleet:payloads", failing_id), timeout=0.5, interval=0.01,
             what="the failed job to be acked while the slow job runs")
    assert "slow" not in executed(r)
    cli.run("retry", str(row.id))
    wait_for(lambda: "raced" in executed(r) or rows(sqlite_url), timeout=15, what="the retried job to run")
    assert [x.exception for x in rows(sqlite_url)] == []
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert sorted(executed(r)) == ["raced", "slow"]
    assert r.hlen("queuefleet:payloads") == 0


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_a_reused_producer_id_that_fails_again_is_stored_beside_the_first(backend, request, redis_url, r, tmp_path):
    """A producer may push its own id again once it is forgotten (a day later by default): if
    that job fails too, its failure is stored beside the first one, never dropped as if it were
    the same failure stored twice (issue 25, item 2)."""
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "mysql_url")
    cli = QueueCli(redis_url, url, tmp_path)
    cli.run("migrate")
    q = Queue.from_url(redis_url, remember_ids=0.001)
    q.push("qf_testjobs:fail", {"tag": "first"}, id="order-7", tries=1)
    cli.run("work", "--stop-when-empty")
    q.push("qf_testjobs:fail", {"tag": "second"}, id="order-7", tries=1)
    out = cli.run("work", "--stop-when-empty").stdout
    stored = rows(url)
    assert sorted(json.loads(row.payload)["data"]["tag"] for row in stored) == ["first", "second"], out
    assert stored[0].uuid == "order-7" and stored[1].uuid.startswith("dup-") and len(stored[1].uuid) == 36
    assert f"stored=\"stored as {stored[1].uuid}\"" in out
    assert r.hlen("queuefleet:payloads") == 0
    # The same failure recorded twice (a worker that died before its ack) is still one row.
    store = FailedJobStore(url)
    for _ in range(2):
        assert store.record(uuid="order-7", connection="c", queue="default", payload=stored[1].payload,
                            exception="again").startswith("stored")
    store.engine.dispose()
    assert len(rows(url)) == 2


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_retrying_one_failed_job_twice_at_once_pushes_it_once(backend, request, redis_url, r, tmp_path):
    """Two retries of one row at once (a double click on the dashboard, two `queue retry` runs):
    each read the row before either acted; the row is claimed in a transaction before the push,
    so the job is pushed once and the loser is told (issue 25, item 4)."""
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "mysql_url")
    cli = QueueCli(redis_url, url, tmp_path)
    cli.run("migrate")
    fail_jobs(cli, redis_url, [("default", "twice")])
    clients = [(FailedJobStore(url), Queue.from_url(redis_url)) for _ in range(2)]
    rows_read = [store.find(["1"])[0][0] for store, _ in clients]
    together = threading.Barrier(2)
    results: list = []

    def retry(store, queue, row) -> None:
        together.wait()
        results.append(retry_failed(store, queue, row))

    threads = [threading.Thread(target=retry, args=(*client, row)) for client, row in zip(clients, rows_read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 2 and sum(job is not None for job in results) == 1, results
    assert r.llen("queuefleet:queue:default") == 1
    assert rows(url) == []
    for store, _ in clients:
        store.engine.dispose()
    # From the shell, a second retry of the same id says that it is gone.
    again = cli.run("retry", "1", check=False)
    assert again.returncode == 1 and again.stderr.strip() == "queue: no failed job 1"


# -- forget / flush -----------------------------------------------------------------------


def test_forget_by_id_and_by_uuid(cli, sqlite_url, redis_url):
    fail_jobs(cli, redis_url, [("default", "x"), ("default", "y"), ("default", "z")])
    x, y, z = rows(sqlite_url)

    assert cli.run("forget", str(x.id)).stdout.strip() == f"forgot {x.id} ({x.uuid})"
    assert cli.run("forget", y.uuid).stdout.strip() == f"forgot {y.id} ({y.uuid})"
    assert [row.id for row in rows(sqlite_url)] == [z.id]


def test_flush_all_and_older_than(cli, sqlite_url, redis_url):
    fail_jobs(cli, redis_url, [("default", "fresh")])
    engine = create_engine(sqlite_url)
    old = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(hours=5)
    with engine.begin() as conn:
        conn.execute(failed_jobs.insert().values(uuid="old-one", connection="c", queue="default", payload="{}",
                                                 exception="e", failed_at=old))
    engine.dispose()

    assert cli.run("flush", "--hours", "6").stdout.strip() == "flushed 0 failed jobs"
    assert cli.run("flush", "--hours", "4").stdout.strip() == "flushed 1 failed job"
    [left] = rows(sqlite_url)
    assert left.uuid != "old-one"
    assert cli.run("flush").stdout.strip() == "flushed 1 failed job"
    assert rows(sqlite_url) == []
    assert cli.run("flush", "--hours", "-1", check=False).returncode == 2


def test_unknown_ids_give_a_clear_error(cli, sqlite_url, redis_url, r):
    fail_jobs(cli, redis_url, [("default", "known")])
    [row] = rows(sqlite_url)

    for command in ("retry", "forget"):
        result = cli.run(command, "999", "no-such-uuid", check=False)
        assert result.returncode == 1
        assert result.stderr.splitlines() == ["queue: no failed job 999", "queue: no failed job no-such-uuid"]
        assert "Traceback" not in result.stderr
    assert [x.id for x in rows(sqlite_url)] == [row.id]
    assert r.llen("queuefleet:queue:default") == 0

    # a known id next to an unknown one: the known one is handled, the exit code still says 1
    result = cli.run("forget", str(row.id), "4242", check=False)
    assert result.returncode == 1 and f"forgot {row.id}" in result.stdout
    assert "queue: no failed job 4242" in result.stderr
    assert rows(sqlite_url) == []

    mixed = cli.run("retry", "all", "1", check=False)
    assert mixed.returncode == 2 and "cannot be mixed" in mixed.stderr


# -- MySQL server has gone away -----------------------------------------------------------


def _qf_sessions(mariadb, database: str) -> int:
    return mariadb.sql(f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'qf' AND DB = '{database}'")[0][0]


def test_worker_survives_the_server_closing_idle_connections(mariadb, mysql_cli, mysql_url, redis_url):
    database = mysql_url.rsplit("/", 1)[1]
    [(original,)] = mariadb.sql("SELECT @@GLOBAL.wait_timeout")
    mariadb.sql("SET GLOBAL wait_timeout = 2")
    try:
        worker = mysql_cli.spawn("--sleep", "0.5")
        worker.wait_log("STARTING")
        # The worker checks the table beside its first jobs and keeps that connection in its pool ...
        wait_for(lambda: _qf_sessions(mariadb, database) >= 1, what="the worker's database check")
        # ... until the server drops it for idling past wait_timeout ("MySQL server has gone away").
        wait_for(lambda: _qf_sessions(mariadb, database) == 0, timeout=15, interval=0.2,
                 what="MariaDB to close the worker's idle connection")
        time.sleep(1)  # idle a little longer still: ~4 s past the timeout in total

        job_id = Queue.from_url(redis_url).push("qf_testjobs:fail", {"tag": "gone-away"}, tries=1)
        row = wait_for(lambda: (rows(mysql_url) or [None])[0], what="the failed row")
        assert row.uuid == job_id and "failing on purpose: gone-away" in row.exception
        assert worker.proc.poll() is None, worker.errors()
        assert "cannot store failed job" not in worker.output()
    finally:
        mariadb.sql(f"SET GLOBAL wait_timeout = {int(original)}")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_database_outage_when_a_job_fails_keeps_the_job_in_redis(mariadb, mysql_cli, mysql_url, redis_url, r):
    proxy = TcpProxy(mariadb.port)
    proxy.start()
    via_proxy = mysql_url.replace(f":{mariadb.port}/", f":{proxy.port}/")
    try:
        worker = mysql_cli.spawn("--sleep", "0.2", env={"QUEUEFLEET_DATABASE_URL": via_proxy})
        worker.wait_log("STARTING")
        proxy.cut()  # the database is unreachable from now on

        job_id = Queue.from_url(redis_url).push("qf_testjobs:fail", {"tag": "outage"}, tries=1)
        worker.wait_log("cannot store failed job")
        assert f"cannot store failed job {job_id}" in worker.output()
        assert "job kept in Redis" in worker.output()
        assert worker.proc.poll() is None, worker.errors()

        # held back in the delayed set for about 10 s, payload (with the attempt's error) kept
        due = r.zscore("queuefleet:queue:default:delayed", job_id)
        assert due is not None, "the job is not in the delayed set"
        seconds, micros = r.time()
        in_ms = due - (seconds * 1000 + micros // 1000)
        assert 5_000 < in_ms <= 10_000
        payload = json.loads(r.hget("queuefleet:payloads", job_id))
        assert payload["errors"][-1]["error"] == "RuntimeError: failing on purpose: outage"
        assert r.zcard("queuefleet:queue:default:reserved") == 0
        assert rows(mysql_url) == []

        # The database comes back; make the held job due now instead of waiting out the 10 s.
        proxy.start()
        r.zadd("queuefleet:queue:default:delayed", {job_id: 0})
        row = wait_for(lambda: (rows(mysql_url) or [None])[0], what="the failed row after the outage")
        assert row.uuid == job_id and "failing on purpose: outage" in row.exception
        wait_for(lambda: not r.hexists("queuefleet:payloads", job_id), what="the job to be acked")
        # The failure was decided before the outage: the handler ran once, not again after it,
        # and the stored row has the full traceback and one error per attempt.
        assert len(r.lrange("attempts", 0, -1)) == 1
        assert "Traceback" in row.exception
        stored = json.loads(row.payload)
        assert [e["attempt"] for e in stored["errors"]] == [1] and "failure" not in stored
        assert worker.proc.poll() is None, worker.errors()
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
    finally:
        proxy.cut()


def test_a_blackholed_database_fails_the_store_in_bounded_time_and_the_worker_carries_on(mariadb, mysql_cli, mysql_url,
                                                                                          redis_url, r):
    """A database that stops answering without closing anything (a blackhole) used to hang the
    worker's main thread for ever, while its keeper kept the lease alive. Every call now has a
    connect, read and write timeout (issue 25, item 6)."""
    proxy = TcpProxy(mariadb.port)
    proxy.start()
    via_proxy = mysql_url.replace(f":{mariadb.port}/", f":{proxy.port}/")
    try:
        worker = mysql_cli.spawn("--sleep", "0.2", env={"QUEUEFLEET_DATABASE_URL": via_proxy, "QUEUEFLEET_DATABASE_TIMEOUT": "1"})
        worker.wait_log("STARTING")
        proxy.stall()
        job_id = Queue.from_url(redis_url).push("qf_testjobs:fail", {"tag": "blackholed"}, tries=1)
        worker.wait_log(f"cannot store failed job {job_id}", timeout=30)
        assert r.zscore("queuefleet:queue:default:delayed", job_id) is not None  # kept in Redis, nothing lost
        Queue.from_url(redis_url).push("qf_testjobs:record", {"tag": "next"})
        wait_for(lambda: executed(r) == ["next"], what="the next job while the database is blackholed")
        proxy.heal()
        r.zadd("queuefleet:queue:default:delayed", {job_id: 0})
        row = wait_for(lambda: (rows(mysql_url) or [None])[0], timeout=30, what="the failed row once it answers")
        assert row.uuid == job_id
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
    finally:
        proxy.cut()
