"""The worker's promises under faults (issue 9), each against a real Redis and real
worker processes: never lose a job, never run one twice while its worker lives,
never blame a job for what it did not do."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import pytest
import redis

from conftest import QUEUE_BIN, TESTS, QueueCli, executed, leases_expired, process_age
from servers import Supervisord, TcpProxy, free_port, wait_for, worker_program
from queuefleet import FailedJobStore, Queue, protocol
from queuefleet.protocol import client_runner

RECORD = "qf_testjobs:record"
SLEEP = "qf_testjobs:sleep"


def warm_up(q: Queue, r: redis.Redis, n: int = 80, queue: str = "default") -> None:
    """Run fast jobs first, so the worker believes jobs are fast and reserves ahead."""
    q.push_many([("qf_testjobs:incr", {"key": "warm"})] * n, queue=queue)
    wait_for(lambda: r.get("warm") == str(n).encode(), what="warm-up jobs")


def started(r: redis.Redis) -> list[str]:
    return [v.decode() for v in r.lrange("started", 0, -1)]


def failed_rows(url: str):
    store = FailedJobStore(url)
    try:
        return store.all()
    finally:
        store.engine.dispose()


def stop(worker, timeout: float = 15) -> int:
    worker.signal(signal.SIGTERM)
    return worker.wait(timeout)


# -- 1. Redis goes away ----------------------------------------------------------------------


def test_redis_outage_while_busy_loses_nothing_and_fails_nothing(own_redis, sqlite_url, tmp_path):
    cli = QueueCli(own_redis.url, sqlite_url, tmp_path)
    try:
        cli.run("migrate")
        r = redis.Redis.from_url(own_redis.url)
        q = Queue.from_url(own_redis.url)
        worker = cli.spawn("--sleep", "0.5")
        warm_up(q, r)
        record = tmp_path / "ran.txt"
        ran = lambda: record.read_text().split() if record.exists() else []  # noqa: E731
        q.push_many([(SLEEP, {"tag": f"j{i}", "seconds": 0.5, "file": str(record)}) for i in range(10)])
        wait_for(lambda: len(ran()) >= 1, what="the first slow job")
        own_redis.stop()
        worker.wait_log("lost Redis")
        assert worker.proc.poll() is None, worker.errors()
        own_redis.start()
        wait_for(lambda: sorted(set(ran())) == sorted(f"j{i}" for i in range(10)), timeout=30,
                 what=f"every job to run\n{worker.output()}\n{worker.errors()}")
        wait_for(lambda: q.sizes(["default"])["default"] == {"ready": 0, "delayed": 0, "reserved": 0}, what="queue to settle")
        assert failed_rows(sqlite_url) == []
        out = worker.output()
        assert out.count("lost Redis") == 1 and out.count("Redis is back") == 1, out
        assert "Traceback" not in worker.errors()
        assert stop(worker) == 0
    finally:
        cli.close()


def test_a_worker_started_while_redis_is_down_waits_for_it(own_redis, sqlite_url, tmp_path):
    cli = QueueCli(own_redis.url, sqlite_url, tmp_path)
    try:
        cli.run("migrate")
        own_redis.stop()
        worker = cli.spawn("--sleep", "0.5")
        worker.wait_log("waiting for Redis")
        # Supervisor counts a start as failed if the process exits within startsecs (1 s by default).
        wait_for(lambda: worker.proc.poll() is not None or process_age(worker.pid) > 2, what="the worker to outlive startsecs")
        assert worker.proc.poll() is None, worker.errors()
        assert worker.output().count("waiting for Redis") == 1
        own_redis.start()
        worker.wait_log("STARTING")
        Queue.from_url(own_redis.url).push(RECORD, {"tag": "after"})
        r = redis.Redis.from_url(own_redis.url)
        wait_for(lambda: executed(r) == ["after"], what="a job once Redis is up")
        assert stop(worker) == 0
        # And one stopped while it waits exits 0 at once.
        own_redis.stop()
        waiting = cli.spawn("--sleep", "0.5")
        waiting.wait_log("waiting for Redis")
        assert stop(waiting, 5) == 0
    finally:
        cli.close()


def test_a_redis_out_of_memory_at_start_is_waited_out_with_one_clear_line(cli, r, redis_url):
    before = r.info("memory")["used_memory"]
    r.set("ballast", "x" * 4_000_000)
    wait_for(lambda: r.info("memory")["used_memory"] < before + 6_000_000, what="the query buffer that carried it to be freed")
    r.config_set("maxmemory", str(r.info("memory")["used_memory"] - 1_000_000))
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            r.set("probe", "1")
        worker = cli.spawn("--sleep", "0.5")
        worker.wait_log("waiting for Redis")
        assert "out of memory (OOM)" in worker.output() and "Traceback" not in worker.errors()
        oom_replies = lambda: r.info("errorstats").get("errorstat_OOM", {}).get("count", 0)  # noqa: E731
        wait_for(lambda: oom_replies() >= 3, what="the worker to try again (the probe, its first try, a retry)")
        assert worker.proc.poll() is None
        r.delete("ballast")
        worker.wait_log("STARTING")
        Queue.from_url(redis_url).push(RECORD, {"tag": "fits"})
        wait_for(lambda: executed(r) == ["fits"], what="a job once Redis has memory again")
        assert stop(worker) == 0
    finally:
        r.config_set("maxmemory", "0")


# -- 2. and 3. priority and head-of-line blocking ------------------------------------------------


def test_a_high_priority_job_starts_when_the_running_job_ends(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    worker = cli.spawn("--queue", "high,low", "--sleep", "0.5")
    warm_up(q, r, queue="low")
    q.push_many([("qf_testjobs:slow", {"tag": f"low{i}", "seconds": 0.1}) for i in range(30)], queue="low")
    wait_for(lambda: len(started(r)) >= 3, what="low jobs to run")
    before = len(started(r))
    q.push("qf_testjobs:slow", {"tag": "urgent", "seconds": 0}, queue="high")
    wait_for(lambda: "urgent" in started(r), timeout=5, what="the urgent job")
    order = started(r)
    # At most the low job running at the push (and one that began as it was pushed) before it.
    assert order.index("urgent") <= before + 1, order
    assert stop(worker) == 0


def test_a_long_job_holds_back_no_job_while_another_worker_is_idle(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    first = cli.spawn("--sleep", "0.5")
    warm_up(q, r)
    second = cli.spawn("--sleep", "0.5")
    second.wait_log("STARTING")
    wait_for(lambda: [w["state"] for w in q.workers()] == ["idle", "idle"], what="both workers idle")
    pushed = time.monotonic()
    q.push_many([("qf_testjobs:slow", {"tag": "long", "seconds": 5})] + [(RECORD, {"tag": f"f{i}"}) for i in range(20)])
    wait_for(lambda: len(executed(r)) == 20, timeout=4.5, interval=0.01, what="the fast jobs while the long one runs")
    assert time.monotonic() - pushed < 4.5  # not behind the long job's 5 s
    wait_for(lambda: "long" in started(r), what="the long job to start (it may start after the fast ones on a busy machine)")
    assert "long" not in executed(r)
    for w in (first, second):
        assert stop(w) == 0


# -- 4. only the job that was running is blamed ------------------------------------------------------


def test_kill_9_blames_only_the_job_that_was_running(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    victim = cli.spawn("--sleep", "0.5", "--max-lost", "1")
    warm_up(q, r)
    [killer, *rest] = q.push_many([("qf_testjobs:kill9", {"tag": "killer"})] + [(RECORD, {"tag": f"f{i}"}) for i in range(20)])
    assert victim.wait(10) == -signal.SIGKILL
    # It had reserved the fast jobs ahead; it never started them.
    assert executed(r) == []
    rescuer = cli.spawn("--sleep", "0.5", "--max-lost", "1")
    wait_for(lambda: sorted(executed(r)) == sorted(f"f{i}" for i in range(20)), timeout=15, what="the other jobs")
    rows = wait_for(lambda: failed_rows(sqlite_url), what="the killer in failed jobs")
    assert [row.uuid for row in rows] == [killer]
    assert "qf_testjobs:kill9" in rows[0].exception and "lost 1 times" in rows[0].exception
    assert "took back" in rescuer.output()  # at once, not after the lease
    assert stop(rescuer) == 0


def supervised_worker(workdir: Path, redis_url: str, db_url: str, numprocs: int, *args: str) -> Supervisord:
    """A real supervisord running worker processes, as in production."""
    env = {"QUEUEFLEET_REDIS_URL": redis_url, "QUEUEFLEET_DATABASE_URL": db_url, "QUEUEFLEET_JOBS": "qf_testjobs",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])), "TEST_REDIS_URL": redis_url}
    command = " ".join([QUEUE_BIN, "work", "--sleep", "0.5", "--max-lost", "3", *args])
    return Supervisord(workdir, worker_program(dir=workdir, command=command, numprocs=numprocs, stopwaitsecs=10,
                                               environment=env))


# A lease of 1 s runs out during supervisor's restart backoff (1 s, 2 s, ...): the restarted
# worker must still blame its predecessor's job precisely instead of taking it back as an
# unexplained orphan (issue 25, item 1: such a job looped for ever and the program went FATAL).
@pytest.mark.parametrize("lease", ["30", "1"], ids=["lease-30s", "lease-1s"])
def test_a_poison_job_fails_alone_under_supervisor(redis_url, r, sqlite_url, tmp_path, lease):
    QueueCli(redis_url, sqlite_url, tmp_path).run("migrate")
    q = Queue.from_url(redis_url)
    sup = supervised_worker(tmp_path / "sup", redis_url, sqlite_url, 1, "--lease", lease)
    try:
        wait_for(lambda: sup.states() == {"RUNNING"}, timeout=20, what="supervisor to run the worker")
        warm_up(q, r)
        jobs = [(RECORD, {"tag": f"ok{i}"}) for i in range(30)]
        jobs.insert(12, ("qf_testjobs:poison", {"tag": "poison"}))
        ids = q.push_many(jobs)
        poison_id = ids[12]
        rows = wait_for(lambda: failed_rows(sqlite_url), timeout=60, interval=0.2, what=f"the poison job to fail\n{sup.logs()}")
        wait_for(lambda: len(set(executed(r))) == 30, timeout=30, what="every other job")
        assert [row.uuid for row in rows] == [poison_id]
        assert "qf_testjobs:poison" in rows[0].exception and "lost 3 times" in rows[0].exception
        assert started(r).count("poison") == 3
        assert sorted(set(executed(r))) == sorted(f"ok{i}" for i in range(30))
        # Each death names the job that caused it: its START line was written before it ran.
        assert sup.logs().count(f"START    {poison_id} qf_testjobs:poison") == 3
        # Three deaths within startsecs at most: supervisor (startretries 3) keeps it, never FATAL.
        wait_for(lambda: sup.states() == {"RUNNING"}, timeout=10, what="the worker RUNNING again")
    finally:
        sup.close()


def test_a_job_that_finished_is_not_blamed_when_its_worker_dies_before_its_ack(cli, r, redis_server, redis_url):
    """The note on the host names a job while its handler runs, not after: a worker killed
    before the ack of a finished job reached Redis (cut off from it here) gives the job back
    unblamed, so it runs again (at least once) but is not counted as lost (issue 25, item 5)."""
    proxy = TcpProxy(redis_server.port)
    proxy.start()
    try:
        job_id = Queue.from_url(redis_url).push("qf_testjobs:slow", {"tag": "done", "seconds": 1})
        worker = cli.spawn("--sleep", "0.2", env={"QUEUEFLEET_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0"})
        wait_for(lambda: started(r) == ["done"], what="the job to start")
        proxy.cut()  # the handler reaches Redis directly; the worker's ack will not
        wait_for(lambda: executed(r) == ["done"], what="the job to finish")
        worker.wait_log("lost Redis")
        worker.proc.kill()
        worker.wait()
        rescuer = cli.spawn("--sleep", "0.2", "--queue", "elsewhere")
        rescuer.wait_log("REAPED")
        assert "counts as lost" not in rescuer.output(), rescuer.output()
        assert r.hget("queuefleet:lost", job_id) is None
        assert stop(rescuer) == 0
    finally:
        proxy.cut()


def test_a_suspect_job_is_named_in_redis_even_when_redis_dropped_the_workers_connections(cli, r, redis_url):
    """A job nobody could explain (its worker died where no neighbour read its note) is named
    in Redis before it runs, so that its next death is blamed even by a worker on another
    host. That name must land whatever happened to the connection before (issue 25, item 1:
    it was written without a reply, on a connection Redis may have closed)."""
    q = Queue.from_url(redis_url)
    first = q.push(RECORD, {"tag": "first"}, delay=0.5)
    r.hset("queuefleet:tokens", first, "suspect")  # as a lease that ran out leaves it
    worker = cli.spawn("--sleep", "0.5", "--lease", "1")
    wait_for(lambda: executed(r) == ["first"], what="the first suspect job")
    r.client_kill_filter(_type="normal", skipme=True)  # a Redis restart or timeout closes its connections
    worker.wait_log("Redis is back")
    poison = Queue.from_url(redis_url).push("qf_testjobs:poison", {"tag": "p"}, delay=0.5)
    r.hset("queuefleet:tokens", poison, "suspect")
    assert worker.wait(15) == 3  # the poison job ran and killed it
    # A worker on another host takes the job back once the dead worker's lease has run out.
    other = lambda: protocol.fetch(client_runner(r), "queuefleet", ["default"], token_base="elsewhere:1:x",  # noqa: E731
                                   host="elsewhere", lease_ms=1000, max_jobs=0)
    wait_for(lambda: other() and r.zscore("queuefleet:queue:default:reserved", poison) is None, timeout=10,
             what="the dead worker's lease to run out")
    assert r.hget("queuefleet:lost", poison) == b"1", "the death was not blamed on the job that caused it"
    assert r.hget("queuefleet:tokens", poison) is None  # blamed, so no longer a suspect


# -- 5. bad numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"id":"%s","job":"qf_testjobs:record","queue":"default","data":{"tag":NaN}}', "NaN"),
        ('{"id":"%s","job":"qf_testjobs:record","queue":"default","data":[Infinity]}', "Infinity"),
        ('{"id":"%s","job":"qf_testjobs:record","queue":"default","data":{"tag":"t"},"timeout":1e999}', "1e999"),
        ('{"id":"%s","job":"qf_testjobs:record","queue":"default","data":{"tag":"t"},"timeout":1e300}', "timeout"),
        ('{"id":"%s","job":"qf_testjobs:record","queue":"default","data":{"tag":"t"},"pushed_at":-Infinity}', "Infinity"),
        ('{"id":"%s","job":"qf_testjobs:record","queue":"default","data":{"tag":"t"},"max_tries":-1}', "max_tries"),
        ('{"id":"other","job":"qf_testjobs:record","queue":"default","data":{"tag":"t"}}', "not the id"),
    ],
    ids=["nan", "infinity", "timeout-1e999", "timeout-1e300", "pushed-at", "max-tries", "wrong-id"],
)
def test_bad_numbers_in_a_payload_are_refused_and_the_worker_carries_on(cli, r, redis_url, sqlite_url, raw, reason):
    job_id = "bad-" + reason.replace(" ", "")
    r.hset("queuefleet:payloads", job_id, raw.replace("%s", job_id) if "%s" in raw else raw)
    r.lpush("queuefleet:queue:default", job_id)
    Queue.from_url(redis_url).push(RECORD, {"tag": "good"})
    result = cli.run("work", "--stop-when-empty", "--max-lost", "0")
    assert executed(r) == ["good"]
    [row] = failed_rows(sqlite_url)
    assert row.uuid == job_id and "PayloadError" in row.exception and reason in row.exception
    assert "Traceback" not in result.stderr
    assert r.hlen("queuefleet:payloads") == 0


# -- 6. restarts after Redis lost its data ----------------------------------------------------------


def test_a_restart_signal_after_redis_lost_its_data_restarts_workers(cli, r, redis_url):
    cli.run("restart")  # generation 1, seen by the worker at boot
    worker = cli.spawn("--sleep", "0.2")
    worker.wait_log("STARTING")
    r.flushall()  # or a fresh, empty Redis
    Queue.from_url(redis_url).push(RECORD, {"tag": "after-flush"})  # runs only once the worker has looked
    wait_for(lambda: executed(r) == ["after-flush"], what="a job after the flush")
    assert worker.proc.poll() is None  # an emptied Redis is no restart signal
    cli.run("restart")  # generation 1 again, but a new signal
    assert worker.wait(10) == 0
    assert "restart signal for all workers" in worker.output()


# -- 7. retried pushes -------------------------------------------------------------------------------


def test_pushing_the_same_id_again_runs_the_job_once(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    assert q.push(RECORD, {"tag": "once"}, id="order-42") == "order-42"
    assert q.push(RECORD, {"tag": "once"}, id="order-42") == "order-42"  # a retried push
    again = cli.run("push", RECORD, "--data", '{"tag": "once"}', "--id", "order-42")
    assert again.stdout.strip() == "order-42" and "not pushed again" in again.stderr
    assert q.push_many([(RECORD, {"tag": "pair"}, "p-1"), (RECORD, {"tag": "pair"}, "p-1")]) == ["p-1", "p-1"]
    cli.run("work", "--stop-when-empty")
    # After it ran, a late retry of the push does not run it again either.
    q.push(RECORD, {"tag": "once"}, id="order-42")
    cli.run("work", "--stop-when-empty")
    assert sorted(executed(r)) == ["once", "pair"]
    assert failed_rows(sqlite_url) == []


def test_a_ready_copy_of_a_reserved_job_does_not_run_it_twice(cli, r, redis_url, sqlite_url):
    """What a push retried by older code leaves: the id twice in the list, one payload."""
    q = Queue.from_url(redis_url)
    job_id = q.push("qf_testjobs:slow", {"tag": "dup", "seconds": 1})
    r.lpush("queuefleet:queue:default", job_id)
    workers = [cli.spawn("--sleep", "0.2") for _ in range(2)]
    wait_for(lambda: executed(r) == ["dup"], what="the job")
    # Once the queue is empty and the job acked, nothing is left that could run it again.
    wait_for(lambda: q.sizes(["default"])["default"] == {"ready": 0, "delayed": 0, "reserved": 0}
             and not r.hexists("queuefleet:payloads", job_id), what="the queue to settle")
    assert executed(r) == ["dup"] and failed_rows(sqlite_url) == []
    for w in workers:
        assert stop(w) == 0


def test_push_ids_are_checked(redis_url):
    q = Queue.from_url(redis_url)
    for bad in ("", "has space", "x" * 129, "-leading", "new\nline"):
        with pytest.raises(ValueError, match="job id must be"):
            q.push(RECORD, {}, id=bad)


# -- 8. network blackhole ----------------------------------------------------------------------------


def test_a_blackholed_worker_notices_reconnects_and_runs_later_jobs(cli, r, redis_server):
    proxy = TcpProxy(redis_server.port)
    proxy.start()
    via_proxy = f"redis://127.0.0.1:{proxy.port}/0"
    try:
        worker = cli.spawn("--sleep", "1", env={"QUEUEFLEET_REDIS_URL": via_proxy})
        worker.wait_log("STARTING")
        proxy.stall()
        stalled = time.monotonic()
        worker.wait_log("lost Redis", timeout=25)
        assert time.monotonic() - stalled < 25  # socket timeouts (5 s), not a hang
        proxy.heal()
        worker.wait_log("Redis is back", timeout=20)
        Queue.from_url(cli.env["QUEUEFLEET_REDIS_URL"]).push(RECORD, {"tag": "after"})
        wait_for(lambda: executed(r) == ["after"], timeout=15, what="a job pushed after the network healed")
        assert worker.proc.poll() is None
        assert stop(worker) == 0
    finally:
        proxy.cut()


def test_a_lease_lost_in_a_blackhole_is_logged_and_its_outcome_not_recorded(cli, r, redis_server, redis_url):
    proxy = TcpProxy(redis_server.port)
    proxy.start()
    via_proxy = f"redis://127.0.0.1:{proxy.port}/0"
    try:
        job_id = Queue.from_url(redis_url).push("qf_testjobs:slow", {"tag": "long", "seconds": 6})
        cut_off = cli.spawn("--sleep", "0.2", "--lease", "2", env={"QUEUEFLEET_REDIS_URL": via_proxy})
        wait_for(lambda: started(r) == ["long"], what="the job to start")
        proxy.stall()
        wait_for(lambda: leases_expired(r), what="its lease to run out")  # a worker that can reach Redis takes it over
        rescuer = cli.spawn("--sleep", "0.2", "--lease", "2")
        wait_for(lambda: started(r) == ["long", "long"], timeout=10, what="the job to be redelivered")
        proxy.heal()
        cut_off.wait_log(f"lease on running job {job_id} was lost", timeout=20)
        cut_off.wait_log("LEASE-LOST", timeout=20)
        wait_for(lambda: executed(r) == ["long", "long"], timeout=15, what="both runs to end")
        wait_for(lambda: not r.hexists("queuefleet:payloads", job_id), what="the rescuer's ack")
        for w in (cut_off, rescuer):
            assert stop(w) == 0
    finally:
        proxy.cut()


# -- 9. bounded growth ---------------------------------------------------------------------------------


def test_unlimited_tries_keep_a_bounded_error_history(cli, r, redis_url):
    job_id = Queue.from_url(redis_url).push("qf_testjobs:fail", {"tag": "forever"}, tries=0)
    worker = cli.spawn("--sleep", "0.1")
    wait_for(lambda: r.llen("attempts") >= 40, timeout=20, what="many attempts")
    assert stop(worker) == 0
    payload = json.loads(r.hget("queuefleet:payloads", job_id))
    assert len(payload["errors"]) == 10
    assert payload["errors"][-1]["attempt"] >= 40
    assert len(r.hget("queuefleet:payloads", job_id)) < 4000


def test_fleet_keys_do_not_grow_without_bound(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    # Host-scoped restart signals expire.
    cli.run("restart", "--host", "gone-host")
    assert 0 < r.ttl("queuefleet:restart:host:gone-host") <= 7 * 86400
    # Dead workers leave the workers set; empty queues nobody serves leave the queues set.
    workers = [cli.spawn("--sleep", "0.2", "--queue", f"q{i}") for i in range(3)]
    wait_for(lambda: r.scard("queuefleet:workers") == 3, what="three heartbeats")
    for w in workers:
        w.proc.kill()
        w.wait()
    survivor = cli.spawn("--sleep", "0.2", "--queue", "q0")
    survivor.wait_log("STARTING")
    wait_for(lambda: r.scard("queuefleet:workers") == 1, timeout=10, what="the dead workers to be dropped")
    q.push_many([(RECORD, {"tag": "x"})], queue="q1")
    cli.run("work", "--queue", "q1", "--stop-when-empty")
    assert set(q.status().sizes) == {"q0"}
    assert stop(survivor) == 0
    assert r.keys("queuefleet:worker:*") == []


# -- 10. failures that cannot be stored --------------------------------------------------------------


def test_failures_too_big_or_too_long_for_the_table_are_stored_and_leak_nothing(mariadb, mysql_cli, mysql_url, redis_url, r):
    secret = "SECRET-DATA-7f3a"
    [(original,)] = mariadb.sql("SELECT @@GLOBAL.max_allowed_packet")
    mariadb.sql("SET GLOBAL max_allowed_packet = 1048576")
    try:
        q = Queue.from_url(redis_url)
        big = q.push("qf_testjobs:quiet_fail", {"secret": secret, "blob": "y" * 2_000_000}, tries=1)
        long_id = "order-" + "9" * 100
        q.push("qf_testjobs:quiet_fail", {"secret": secret}, tries=1, id=long_id)
        worker = mysql_cli.spawn("--sleep", "0.2")
        rows = wait_for(lambda: (found := failed_rows(mysql_url)) and len(found) == 2 and found, timeout=30,
                        what=f"both failures stored\n{worker.output()}")
        by_uuid = {row.uuid: row for row in rows}
        stored_big = json.loads(by_uuid[big].payload)
        assert stored_big["truncated"] is True and stored_big["job"] == "qf_testjobs:quiet_fail"
        assert stored_big["characters"] > 2_000_000
        [hashed] = [u for u in by_uuid if u != big]
        assert hashed.startswith("sha1-") and len(hashed) == 36
        assert json.loads(by_uuid[hashed].payload)["id"] == long_id
        assert long_id in mysql_cli.run("failed", "--json").stdout
        mysql_cli.run("forget", long_id)  # found by its own id
        assert len(failed_rows(mysql_url)) == 1
        retried = mysql_cli.run("retry", big, check=False)
        assert "cannot be run" in retried.stderr  # a truncated payload cannot be retried
        wait_for(lambda: r.hlen("queuefleet:payloads") == 0, what="both failures acked")
        assert "cannot store" not in worker.output()
        assert stop(worker) == 0
        assert secret not in worker.output() and secret not in worker.errors()
    finally:
        mariadb.sql(f"SET GLOBAL max_allowed_packet = {int(original)}")


# -- 11. the smaller ones --------------------------------------------------------------------------


def test_sys_exit_in_a_handler_is_a_failure_not_a_stop(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    job_id = q.push("qf_testjobs:exits", {"tag": "bye", "code": 0}, tries=1)
    q.push(RECORD, {"tag": "next"})
    worker = cli.spawn("--sleep", "0.2")
    wait_for(lambda: executed(r) == ["next"], what="the job after the one that called sys.exit")
    assert worker.proc.poll() is None
    [row] = failed_rows(sqlite_url)
    assert row.uuid == job_id and "SystemExit" in row.exception
    assert stop(worker) == 0


def test_a_missing_handler_fails_at_once_whatever_its_tries(cli, r, redis_url, sqlite_url):
    Queue.from_url(redis_url).push("qf_testjobs:no_such_function", {}, tries=5, backoff=0)
    cli.run("work", "--stop-when-empty")
    [row] = failed_rows(sqlite_url)
    assert "HandlerNotFound" in row.exception
    assert [e["attempt"] for e in json.loads(row.payload)["errors"]] == [1]


def test_a_timeout_shorter_than_anything_still_stops_the_handler(cli, r, redis_url, sqlite_url):
    """The alarm is armed only once the worker is in the handler: it cannot fire unseen."""
    Queue.from_url(redis_url).push("qf_testjobs:slow", {"tag": "t", "seconds": 3}, timeout=0.000001, tries=1)
    cli.run("work", "--stop-when-empty")
    [row] = failed_rows(sqlite_url)
    assert "JobTimeout" in row.exception
    assert executed(r) == []  # stopped inside its 3 s sleep


def test_queue_names_with_a_trailing_newline_are_refused(redis_url):
    q = Queue.from_url(redis_url)
    with pytest.raises(ValueError, match="queue name must be"):
        q.push(RECORD, {}, queue="default\n")
    with pytest.raises(ValueError, match="job must look like"):
        q.push(RECORD + "\n", {})


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["push", RECORD, "--delay", "1e308"], {}, "--delay must be a finite number"),
        (["push", RECORD, "--timeout", "1e300"], {}, "timeout must be a finite number"),
        (["push", RECORD, "--backoff", "1e300"], {}, "backoff seconds must be"),
        (["push", RECORD, "--data", '{"x": NaN}'], {}, "NaN is not JSON"),
        (["push", RECORD, "--id", "bad id"], {}, "job id must be"),
    ],
)
def test_out_of_range_cli_values_are_usage_errors(cli, r, args, env, needle):
    result = cli.run(*args, check=False, env=env)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr and needle in result.stderr
    assert r.keys("queuefleet:queue:*") == []


def test_a_database_url_with_a_bad_port_is_one_line(cli):
    result = cli.run("failed", check=False, env={"QUEUEFLEET_DATABASE_URL": "mysql+pymysql://u:pw@db:abc/x"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("queue: ") and len(result.stderr.strip().splitlines()) == 1
    assert "pw" not in result.stderr.replace("pymysql", "")


def test_a_worker_starts_while_the_database_is_down_and_keeps_failures_in_redis(cli, r, redis_url):
    url = f"mysql+pymysql://qf:s3cret@127.0.0.1:{free_port()}/nowhere"
    worker = cli.spawn("--sleep", "0.2", env={"QUEUEFLEET_DATABASE_URL": url})
    worker.wait_log("STARTING")
    wait_for(lambda: "the worker runs jobs anyway" in worker.errors(), what="the database check's warning")
    assert "s3cret" not in worker.errors() and worker.proc.poll() is None
    Queue.from_url(redis_url).push(RECORD, {"tag": "runs"})
    wait_for(lambda: executed(r) == ["runs"], what="a job while the database is down")
    assert stop(worker) == 0


def test_jobs_reserved_by_a_fetch_whose_reply_was_lost_are_taken_back(redis_url, r):
    """A network that stalls and heals can deliver a worker's fetch after the worker gave up
    on it: Redis reserves jobs for a worker that never hears of them. The worker's next
    fetch takes them back, instead of leaving them to wait out their lease."""
    from queuefleet.identity import current_identity
    from queuefleet.redis_link import Link
    from queuefleet.logs import JobLog
    from queuefleet.reservations import Reservations

    class LosesOneReply(Link):
        lose = True

        def call(self, name, args):
            reply = super().call(name, args)
            if name == "fetch" and self.lose:
                self.lose = False
                raise redis.ConnectionError("reply lost on the way back")
            return reply

    job_id = Queue.from_url(redis_url).push(RECORD, {"tag": "x"})
    log = io.StringIO()
    reservations = Reservations(LosesOneReply(redis_url), None, "queuefleet", current_identity(), ["default"], 60,
                                JobLog(log))
    with pytest.raises(redis.ConnectionError):
        reservations.fetch(8)
    assert r.zscore("queuefleet:queue:default:reserved", job_id) is not None  # reserved, the worker does not know it
    again = reservations.fetch(8)
    assert [j.id for j in again.jobs] == [job_id] and again.jobs[0].attempts == 1
    assert again.reclaimed == 1 and "took back 1 job(s)" in log.getvalue()


def test_reclaim_and_reap_read_one_workers_index_not_every_reservation(redis_url, r):
    """Reclaim (after a fetch whose reply was lost: after an outage, every worker at once) and
    reap find a worker's reservations by its own index: the Redis work does not grow with the
    other workers' reservations (issue 25, item 7; bench/RECOVERY.md measures a fleet)."""
    q = Queue.from_url(redis_url)
    q.push_many([(RECORD, {"tag": str(i)}) for i in range(2003)])
    run = client_runner(r)

    def reserve(base: str, n: int, keep=None):
        return protocol.fetch(run, "queuefleet", ["default"], token_base=base, host="h", lease_ms=60_000, max_jobs=n,
                              keep=keep)

    for k in range(20):
        reserve(f"other:{k}:x", 100)  # 2,000 reservations of twenty other workers
    mine = reserve("mine:1:x", 3).jobs

    def commands_run() -> int:
        """Redis commands run since the last reset, scripts' own calls included (not the script calls)."""
        return sum(v["calls"] for name, v in r.info("commandstats").items()
                   if not name.startswith(("cmdstat_evalsha", "cmdstat_info", "cmdstat_config", "cmdstat_client")))

    r.config_resetstat()
    assert reserve("mine:1:x", 0, keep=[mine[0].id]).reclaimed == 2  # the two it never heard of go back
    assert commands_run() < 50
    r.config_resetstat()
    known = f"{mine[0].token} {mine[0].id}"
    assert protocol.reap(run, "queuefleet", "ns", "mine:1", "value", "mine:1:x", known) == ([mine[0].id], 0)
    assert commands_run() < 50
    assert r.keys("queuefleet:holder:mine:*") == []
    assert q.sizes(["default"])["default"] == {"ready": 3, "delayed": 0, "reserved": 2000}


def test_a_workers_own_bookkeeping_is_emptied_by_acks_releases_and_lost_leases(redis_url, r):
    """No set inside the worker grows with jobs it no longer holds."""
    from queuefleet.identity import current_identity
    from queuefleet.redis_link import Link
    from queuefleet.logs import JobLog
    from queuefleet.reservations import Reservations

    q = Queue.from_url(redis_url)
    q.push_many([(RECORD, {"tag": str(i)}) for i in range(6)])
    reservations = Reservations(Link(redis_url), None, "queuefleet", current_identity(), ["default"], 60,
                                JobLog(io.StringIO()))
    reservations.holdings.runtime_ewma = 0.001
    jobs = reservations.fetch(6).jobs
    assert reservations.held_count() == 6 and reservations.waiting == 6
    # Two finish, and the leases of the rest are lost (another worker took over).
    for _ in range(2):
        entry = reservations.take()
        reservations.finished(entry, 0.001)
    r.hdel("queuefleet:tokens", *[j.id for j in jobs[2:]])
    holdings = reservations.holdings
    holdings.extended(0.0, holdings.leases(), [j.id for j in jobs[2:]])
    assert reservations.waiting == 0
    reservations.settle()
    assert reservations.held_count() == 0
    assert holdings.leases() == [] and holdings.still_returning() == [] and holdings.finished == []
