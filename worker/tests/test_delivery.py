"""Delivery guarantees, end to end, with real worker processes and a real Redis."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import redis

from queuefleet import FailedJobStore, Queue, protocol
from queuefleet.protocol import ReleaseEntry, client_runner

from conftest import executed, leases_expired, redis_ms, worker_note
from servers import wait_for

JOB = "qf_testjobs:record"


def job_ids_in_failed(store: FailedJobStore) -> list[str]:
    return [row.uuid for row in store.all()]


# -- ordering and timing -------------------------------------------------------


def test_strict_priority_order(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    q.push_many([(JOB, {"tag": f"low{i}"}) for i in range(3)], queue="low")
    q.push_many([(JOB, {"tag": f"high{i}"}) for i in range(3)], queue="high")
    q.push(JOB, {"tag": "mid0"}, queue="mid")
    cli.run("work", "--queue", "high,mid,low", "--stop-when-empty")
    assert executed(r) == ["high0", "high1", "high2", "mid0", "low0", "low1", "low2"]


def test_high_priority_job_overtakes_a_backlog_of_slow_jobs(cli, r, redis_url):
    """Slow jobs are reserved one at a time, so a later high-priority push runs next."""
    q = Queue.from_url(redis_url)
    q.push_many([("qf_testjobs:slow", {"tag": f"slow{i}", "seconds": 0.3}) for i in range(4)], queue="low")
    worker = cli.spawn("--queue", "high,low", "--sleep", "1")
    wait_for(lambda: r.llen("executed") >= 1, what="first slow job")
    q.push(JOB, {"tag": "urgent"}, queue="high")
    wait_for(lambda: r.llen("executed") >= 5, timeout=10, what="all jobs")
    order = executed(r)
    assert order.index("urgent") <= 2, order
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_delayed_job_waits_then_runs_on_time(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    q.push(JOB, {"tag": "later"}, queue="default", delay=1.5)
    q.push(JOB, {"tag": "now"}, queue="default")
    cli.run("work", "--stop-when-empty")
    assert executed(r) == ["now"]  # the delayed job is not due yet
    assert q.sizes(["default"])["default"]["delayed"] == 1
    pushed = time.monotonic()
    worker = cli.spawn("--sleep", "10")
    wait_for(lambda: executed(r) == ["now", "later"], timeout=9, what="delayed job")
    # The idle worker sleeps until the job is due (1.5 s after its push), not for the whole --sleep 10.
    assert time.monotonic() - pushed < 9
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_idle_worker_wakes_on_push_and_stops_on_sigterm_at_once(cli, r, redis_url):
    worker = cli.spawn("--sleep", "30")
    worker.wait_log("STARTING")
    q = Queue.from_url(redis_url)
    wait_for(lambda: q.workers(), what="the worker's heartbeat")
    start = time.monotonic()
    q.push(JOB, {"tag": "wake"})
    wait_for(lambda: executed(r) == ["wake"], timeout=10, interval=0.002, what="job run")
    assert time.monotonic() - start < 10  # woken by the push, not by --sleep 30
    wait_for(lambda: r.hlen("queuefleet:payloads") == 0, what="the ack, before the worker waits again")
    start = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert time.monotonic() - start < 20  # SIGTERM breaks the 30 s wait


# -- retries, failures, timeouts -------------------------------------------------------


def test_tries_and_backoff_then_failed_store(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    job_id = q.push("qf_testjobs:fail", {"tag": "f"}, tries=3, backoff=[0.4, 0.8])
    cli.run("work", "--stop-when-empty", "--sleep", "0.1", "--tries", "1")  # the job's own tries win
    # Backoff keeps the job delayed, so --stop-when-empty returns before it is done: keep working.
    worker = cli.spawn("--sleep", "0.1")
    store = FailedJobStore(sqlite_url)
    wait_for(lambda: job_ids_in_failed(store) == [job_id], timeout=10, what="job in failed_jobs")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    stamps = [float(a.decode().split("@")[1]) for a in r.lrange("attempts", 0, -1)]
    assert len(stamps) == 3
    assert stamps[1] - stamps[0] >= 0.35
    assert stamps[2] - stamps[1] >= 0.75
    row = store.all()[0]
    assert "failing on purpose: f" in row.exception
    payload = json.loads(row.payload)
    assert [e["attempt"] for e in payload["errors"]] == [1, 2, 3]
    assert all("failing on purpose" in e["error"] for e in payload["errors"])
    assert q.sizes(["default"])["default"] == {"ready": 0, "delayed": 0, "reserved": 0}
    assert r.hlen("queuefleet:payloads") == 0


def test_success_on_a_later_try_is_not_a_failure(cli, r, redis_url, sqlite_url):
    Queue.from_url(redis_url).push("qf_testjobs:fail_then_succeed", {"tag": "x", "succeed_on": 2}, tries=3)
    worker = cli.spawn("--sleep", "0.1")
    wait_for(lambda: executed(r) == ["x"], what="second attempt to succeed")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert FailedJobStore(sqlite_url).count() == 0


def test_hard_timeout_stops_the_job_and_the_worker_carries_on(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    slow_id = q.push("qf_testjobs:swallow", {"tag": "slow", "seconds": 30}, timeout=1)
    q.push(JOB, {"tag": "next"})
    start = time.monotonic()
    worker = cli.spawn("--sleep", "0.2", "--tries", "1")
    wait_for(lambda: executed(r) == ["next"], timeout=20, what="job after the timed-out one")
    assert time.monotonic() - start < 20  # the timed-out job would have run 30 s
    assert worker.proc.poll() is None  # the worker stayed healthy
    store = FailedJobStore(sqlite_url)
    row = store.all()[0]
    assert row.uuid == slow_id and "JobTimeout" in row.exception
    assert r.lrange("started", 0, -1) == [b"slow"]  # it never finished
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_handler_that_blocks_the_timeout_signal_is_ended_by_the_watchdog(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    job_id = q.push("qf_testjobs:stuck", {"tag": "stuck", "seconds": 60}, timeout=1, tries=1)
    worker = cli.spawn("--sleep", "0.2")
    code = worker.wait(20)
    assert code == 1  # exits for supervisor to restart it
    store = FailedJobStore(sqlite_url)
    wait_for(lambda: job_ids_in_failed(store) == [job_id], timeout=15, what="stuck job failed")
    assert "did not stop" in store.all()[0].exception


def test_memory_limit_exits_cleanly_after_the_job(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    q.push("qf_testjobs:hog", {"tag": "hog", "mb": 120})
    q.push(JOB, {"tag": "after"})
    worker = cli.spawn("--memory", "100", "--sleep", "0.2")
    assert worker.wait(20) == 0
    assert executed(r) == ["hog"]  # finished its job, then exited before the next
    assert "memory" in worker.output()
    assert q.sizes(["default"])["default"]["ready"] == 1


# -- leases and fencing ------------------------------------------------------------


def test_killed_worker_job_is_redelivered_after_the_lease(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    q.push("qf_testjobs:slow", {"tag": "long", "seconds": 1.5})
    victim = cli.spawn("--lease", "2", "--sleep", "0.2")
    wait_for(lambda: r.llen("started") == 1, what="job start")
    victim.proc.kill()
    victim.wait()
    killed_at = time.monotonic()
    rescuer = cli.spawn("--lease", "2", "--sleep", "0.2")
    wait_for(lambda: executed(r) == ["long"], timeout=15, what="redelivery")
    assert time.monotonic() - killed_at >= 1.5  # not before the lease expired
    assert r.llen("started") == 2
    assert "attempt=1" in rescuer.output()  # the lost run did not use up an attempt
    rescuer.signal(signal.SIGTERM)
    assert rescuer.wait() == 0


def test_long_job_is_not_redelivered_while_its_worker_lives(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    q.push("qf_testjobs:slow", {"tag": "long", "seconds": 4})
    first = cli.spawn("--lease", "1", "--sleep", "0.1", "--timeout", "30")
    wait_for(lambda: r.llen("started") == 1, what="job start")
    second = cli.spawn("--lease", "1", "--sleep", "0.1")
    wait_for(lambda: executed(r) == ["long"], timeout=15, what="job end")
    wait_for(lambda: r.hlen("queuefleet:payloads") == 0, what="its ack")  # after it, nothing can run it again
    assert r.llen("started") == 1, "the job ran twice while its worker was alive"
    for w in (first, second):
        w.signal(signal.SIGTERM)
        assert w.wait() == 0


def fetch_one(r, worker: str, lease_ms: int, queue: str = "default"):
    result = protocol.fetch(client_runner(r), "queuefleet", [queue], token_base=worker, host="h", lease_ms=lease_ms, max_jobs=1)
    return result.jobs[0] if result.jobs else None


def start(r, entry) -> None:
    """What a worker does before it runs a job: name it in its running-job marker."""
    r.set(f"queuefleet:running:{entry.token.rsplit(':', 1)[0]}", f"{entry.token} {entry.id}")


def test_ack_and_release_are_fenced(redis_url, r):
    q = Queue.from_url(redis_url)
    run = client_runner(r)
    job_id = q.push(JOB, {"tag": "x"})
    a = fetch_one(r, "A", 50)
    assert a.id == job_id
    start(r, a)
    wait_for(lambda: leases_expired(r), what="A's lease to run out (A stalled)")
    b = fetch_one(r, "B", 30_000)
    assert b.id == job_id
    assert b.attempts == 1 and b.lost == 1  # A had started it: counted as lost, not as an attempt
    # A can neither delete, release nor extend what B now holds.
    assert protocol.ack(run, "queuefleet", [a.ack_key]) == [job_id]
    assert protocol.release(run, "queuefleet", [ReleaseEntry("default", job_id, a.token)]) == [job_id]
    assert protocol.extend(run, "queuefleet", [a.ack_key], 30_000) == [job_id]
    assert q.sizes(["default"])["default"] == {"ready": 0, "delayed": 0, "reserved": 1}
    assert r.hexists("queuefleet:payloads", job_id)
    # B's ack works; acking again is not reported as a lost lease.
    assert protocol.ack(run, "queuefleet", [b.ack_key]) == []
    assert protocol.ack(run, "queuefleet", [b.ack_key]) == []
    assert q.sizes(["default"])["default"] == {"ready": 0, "delayed": 0, "reserved": 0}
    assert not r.hexists("queuefleet:payloads", job_id)


def test_an_expired_lease_of_a_job_never_started_is_not_blamed(redis_url, r):
    q = Queue.from_url(redis_url)
    first, second = q.push(JOB, {"tag": "1"}), q.push(JOB, {"tag": "2"})
    result = protocol.fetch(client_runner(r), "queuefleet", ["default"], token_base="A", host="h", lease_ms=20, max_jobs=2)
    assert [j.id for j in result.jobs] == [first, second]
    start(r, result.jobs[0])  # A began the first, then died
    wait_for(lambda: leases_expired(r), what="A's leases to run out")
    again = protocol.fetch(client_runner(r), "queuefleet", ["default"], token_base="B", host="h", lease_ms=30_000, max_jobs=2)
    # The unstarted one comes back first and unblamed; the started one is counted as lost.
    assert [(j.id, j.attempts, j.lost) for j in again.jobs] == [(second, 1, 0), (first, 1, 1)]


def test_worker_lost_too_often_goes_to_failed_jobs(redis_url, r, cli, sqlite_url):
    q = Queue.from_url(redis_url)
    job_id = q.push(JOB, {"tag": "poison"})
    for _ in range(2):
        start(r, fetch_one(r, "doomed", 1))
        wait_for(lambda: leases_expired(r), what="the doomed worker's lease to run out")
    cli.run("work", "--stop-when-empty", "--max-lost", "2")
    assert executed(r) == []
    row = FailedJobStore(sqlite_url).all()[0]
    assert row.uuid == job_id and "lost 2 times" in row.exception


# -- stopping, pausing, restarting ------------------------------------------------------


def test_sigterm_drains_the_current_job_then_exits_0(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    q.push("qf_testjobs:slow", {"tag": "drain", "seconds": 1})
    q.push(JOB, {"tag": "not-started"})
    worker = cli.spawn("--sleep", "0.2")
    wait_for(lambda: r.llen("started") == 1, what="job start")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert executed(r) == ["drain"]
    assert q.sizes(["default"])["default"] == {"ready": 1, "delayed": 0, "reserved": 0}


def test_second_signal_puts_the_job_back_without_counting_the_attempt(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    job_id = q.push("qf_testjobs:slow", {"tag": "interrupted", "seconds": 30}, tries=1)
    worker = cli.spawn("--sleep", "0.2")
    wait_for(lambda: r.llen("started") == 1, what="job start")
    worker.signal(signal.SIGTERM)
    wait_for(lambda: worker_note(worker.pid).startswith(b"stopping "), what="the first signal to be handled")
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert executed(r) == []
    assert q.sizes(["default"])["default"] == {"ready": 1, "delayed": 0, "reserved": 0}
    assert int(r.hget("queuefleet:attempts", job_id) or 0) == 0
    # With tries=1 it still runs: the interrupted attempt did not count.
    again = cli.spawn("--sleep", "0.2")
    wait_for(lambda: r.llen("started") == 2, what="job to run again")
    again.wait_log("attempt=1")
    again.proc.kill()


def test_drain_timeout_puts_a_long_job_back(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    q.push("qf_testjobs:slow", {"tag": "long", "seconds": 30})
    worker = cli.spawn("--sleep", "0.2", "--drain-timeout", "1")
    wait_for(lambda: r.llen("started") == 1, what="job start")
    start = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(25) == 0
    assert time.monotonic() - start < 25  # not the job's 30 s
    assert q.sizes(["default"])["default"]["ready"] == 1
    assert "released" in worker.output().lower()


def stop_like_supervisor(worker, stopwaitsecs: float) -> int:
    """What supervisor does to stop a program: SIGTERM, then SIGKILL after stopwaitsecs."""
    worker.signal(signal.SIGTERM)
    try:
        return worker.wait(stopwaitsecs)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        return worker.wait()


def test_the_drain_ends_before_supervisor_kills_a_job_with_a_longer_timeout_of_its_own(cli, r, redis_url):
    """A job's own timeout may outlast stopwaitsecs (the worker's --timeout + a margin): the drain
    still ends at the worker's --timeout and puts the job back uncounted, so three deploys
    during a long job never fail it as lost (issue 25, item 5)."""
    q = Queue.from_url(redis_url)
    job_id = q.push("qf_testjobs:slow", {"tag": "long", "seconds": 60}, timeout=120, tries=1)
    worker = cli.spawn("--sleep", "0.2", "--timeout", "2")
    wait_for(lambda: r.llen("started") == 1, what="job start")
    assert stop_like_supervisor(worker, stopwaitsecs=6) == 0, worker.output()
    assert q.sizes(["default"])["default"] == {"ready": 1, "delayed": 0, "reserved": 0}
    assert r.hget("queuefleet:lost", job_id) is None
    assert int(r.hget("queuefleet:attempts", job_id) or 0) == 0
    assert "RELEASED" in worker.output() and "stopping" in worker.output()


def test_a_worker_killed_during_its_graceful_stop_is_not_a_crash(cli, r, redis_url):
    """Without any limit on the drain (--timeout 0), supervisor kills the worker at stopwaitsecs:
    its job goes back unblamed, attempt not counted, as if the drain had put it back."""
    q = Queue.from_url(redis_url)
    job_id = q.push("qf_testjobs:slow", {"tag": "long", "seconds": 60}, tries=1)
    worker = cli.spawn("--sleep", "0.2", "--timeout", "0")
    wait_for(lambda: r.llen("started") == 1, what="job start")
    assert stop_like_supervisor(worker, stopwaitsecs=1) == -signal.SIGKILL
    rescuer = cli.spawn("--sleep", "0.2", "--queue", "elsewhere")  # the next process on this host reaps it
    rescuer.wait_log("REAPED")
    assert "counts as lost" not in rescuer.output()
    assert r.hget("queuefleet:lost", job_id) is None
    assert int(r.hget("queuefleet:attempts", job_id) or 0) == 0
    assert q.sizes(["default"])["default"] == {"ready": 1, "delayed": 0, "reserved": 0}
    rescuer.signal(signal.SIGTERM)
    assert rescuer.wait() == 0


def test_sigusr2_pauses_and_sigcont_resumes(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    worker = cli.spawn("--sleep", "0.2")
    worker.wait_log("STARTING")
    worker.signal(signal.SIGUSR2)
    wait_for(lambda: any(w["state"] == "paused" for w in q.workers()), timeout=10, what="paused heartbeat")
    q.push(JOB, {"tag": "held"})
    pushed = float(redis_ms(r)) / 1000
    # A heartbeat written after the push: the worker lived through it, paused, and took nothing.
    wait_for(lambda: any(float(w["last_seen"]) > pushed + 0.1 for w in q.workers()), what="a heartbeat after the push")
    assert executed(r) == [] and [w["state"] for w in q.workers()] == ["paused"]
    worker.signal(signal.SIGCONT)
    wait_for(lambda: executed(r) == ["held"], timeout=10, what="job after resume")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_restart_generations(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    old = cli.spawn("--sleep", "0.2", "--release", "r1")
    new = cli.spawn("--sleep", "0.2", "--release", "r2")
    wait_for(lambda: len(q.workers()) == 2, what="two heartbeats")
    assert sorted(w["release"] for w in q.workers()) == ["r1", "r2"]
    first = cli.run("restart", "--release", "r2")
    assert first.stdout.strip() == "restart signalled for release r2: all workers"
    assert old.wait(10) == 0  # behind: exits for supervisor to restart it on r2
    assert "restart signal" in old.output()
    # Another host signals the same release: no new generation, nobody restarts.
    second = cli.run("restart", "--release", "r2")
    assert second.stdout.strip() == "release r2 already signalled for all workers: nothing to do"
    assert q.restart_state()["generation"] == "1"
    # Already on r2: it keeps running. A job pushed after the signal runs there, so it saw the signal.
    q.push(JOB, {"tag": "still-working"})
    wait_for(lambda: executed(r) == ["still-working"], what="r2 worker still processing")
    assert new.proc.poll() is None
    # A restart without a release restarts everyone.
    cli.run("restart")
    assert new.wait(10) == 0


def test_restart_waits_for_the_running_job(cli, r, redis_url):
    Queue.from_url(redis_url).push("qf_testjobs:slow", {"tag": "busy", "seconds": 1})
    worker = cli.spawn("--sleep", "0.2", "--release", "r1")
    wait_for(lambda: r.llen("started") == 1, what="job start")
    cli.run("restart", "--release", "r2")
    assert worker.wait(10) == 0
    assert executed(r) == ["busy"]


# -- hostile or broken input -------------------------------------------------------------


def test_poison_payloads_go_to_failed_jobs_and_the_worker_carries_on(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    r.lpush("queuefleet:queue:default", "no-such-id")  # an id without a payload
    r.hset("queuefleet:payloads", "bad-json", "{not json")
    r.lpush("queuefleet:queue:default", "bad-json")
    r.hset("queuefleet:payloads", "bad-shape", json.dumps({"id": "bad-shape", "job": "no colon", "queue": "default"}))
    r.lpush("queuefleet:queue:default", "bad-shape")
    q.push(JOB, {"tag": "good"})
    cli.run("work", "--stop-when-empty")
    assert executed(r) == ["good"]
    rows = {row.uuid: row for row in FailedJobStore(sqlite_url).all()}
    assert set(rows) == {"no-such-id", "bad-json", "bad-shape"}
    assert "no payload is stored" in rows["no-such-id"].exception
    assert "not valid JSON" in rows["bad-json"].exception
    assert rows["bad-json"].payload == "{not json"
    assert "package.module:function" in rows["bad-shape"].exception
    assert q.sizes(["default"])["default"] == {"ready": 0, "delayed": 0, "reserved": 0}


@pytest.mark.parametrize("job", ["os:system", "qf_testjobsx:record", "subprocess:run"])
def test_handlers_outside_the_allow_list_are_refused(cli, r, redis_url, sqlite_url, job):
    q = Queue.from_url(redis_url)
    job_id = q.push(job, "echo pwned > /tmp/pwned", tries=5)
    cli.run("work", "--stop-when-empty")
    row = FailedJobStore(sqlite_url).all()[0]
    assert row.uuid == job_id
    assert "is not allowed" in row.exception and "qf_testjobs" in row.exception
    # A refused job is a permanent failure: no retries are spent on it.
    assert json.loads(row.payload)["errors"][0]["attempt"] == 1
    assert q.sizes(["default"])["default"] == {"ready": 0, "delayed": 0, "reserved": 0}


@pytest.mark.parametrize(("job", "reason"), [
    ("qf_testjobs:run", "is run of module 'subprocess', which 'qf_testjobs' only imports"),
    ("qf_testjobs:_private", "'_private' is a private name"),
    ("qf_testjobs:__loader__", "'__loader__' is a private name"),
], ids=["re-exported", "private", "dunder"])
def test_a_callable_an_allowed_module_only_imports_or_keeps_private_is_refused(cli, r, redis_url, sqlite_url, tmp_path,
                                                                               job, reason):
    """The allow-list checks the callable's own module and refuses private names: an allowed
    module that does `from subprocess import run` must not hand it to a payload (issue 25)."""
    marker = tmp_path / "pwned"
    job_id = Queue.from_url(redis_url).push(job, ["touch", str(marker)], tries=5)
    cli.run("work", "--stop-when-empty")
    assert not marker.exists() and executed(r) == []
    [row] = FailedJobStore(sqlite_url).all()
    assert row.uuid == job_id and "JobNotAllowed" in row.exception and reason in row.exception, row.exception
    assert json.loads(row.payload)["errors"][0]["attempt"] == 1  # permanent: no retries spent


def test_a_payload_over_the_size_limit_is_refused_at_push_and_at_decode(cli, r, redis_url, sqlite_url):
    """Payloads have a size limit (4 MiB unless set): a push over it raises and writes nothing;
    one written to Redis by other means goes to failed jobs unparsed, cut (issue 25)."""
    q = Queue.from_url(redis_url, max_payload=10_000)
    with pytest.raises(ValueError, match=r"job payload is 10,\d{3} bytes, over the limit of 10,000 bytes"):
        q.push(JOB, {"blob": "x" * 10_100})
    with pytest.raises(ValueError, match="over the limit of 10,000 bytes"):
        q.push_many([(JOB, {"tag": "fits"}), (JOB, {"blob": "é" * 5_000})])  # 10,000 characters, more bytes
    assert r.keys("queuefleet:*") == []
    refused = cli.run("push", JOB, "--data", json.dumps({"blob": "y" * 2000}), check=False,
                      env={"QUEUEFLEET_MAX_PAYLOAD": "1024"})
    assert refused.returncode == 2 and "over the limit of 1,024 bytes" in refused.stderr
    assert r.keys("queuefleet:*") == []
    big = json.dumps({"id": "big", "job": JOB, "queue": "default", "data": {"tag": "big", "blob": "z" * 100_000}})
    r.hset("queuefleet:payloads", "big", big)
    r.lpush("queuefleet:queue:default", "big")
    Queue.from_url(redis_url).push(JOB, {"tag": "good"})
    cli.run("work", "--stop-when-empty", env={"QUEUEFLEET_MAX_PAYLOAD": "50000"})
    assert executed(r) == ["good"]
    [row] = FailedJobStore(sqlite_url).all()
    assert row.uuid == "big" and "over the limit of 50,000 bytes (the worker's --max-payload)" in row.exception
    stored = json.loads(row.payload)
    assert stored["truncated"] is True and stored["characters"] == len(big) and len(row.payload) < len(big)


def test_missing_handler_fails_with_the_reason(cli, redis_url, sqlite_url):
    Queue.from_url(redis_url).push("qf_testjobs:no_such_function", {})
    Queue.from_url(redis_url).push("qf_testjobs.nothere:f", {})
    cli.run("work", "--stop-when-empty")
    errors = sorted(row.exception for row in FailedJobStore(sqlite_url).all())
    assert "has no callable 'no_such_function'" in errors[1]
    assert "cannot import 'qf_testjobs.nothere'" in errors[0]


# -- outages -------------------------------------------------------------------------------


def test_worker_survives_a_redis_restart(tmp_path, sqlite_url):
    from conftest import QueueCli
    from servers import RedisServer

    server = RedisServer(tmp_path / "own-redis", appendonly=True)
    (tmp_path / "own-redis").mkdir()
    server.start()
    cli = QueueCli(server.url, sqlite_url, tmp_path)
    try:
        cli.run("migrate")
        client = redis.Redis.from_url(server.url)
        worker = cli.spawn("--sleep", "0.5", env={"TEST_REDIS_URL": server.url})
        worker.wait_log("STARTING")
        server.stop()
        worker.wait_log("lost Redis")
        assert worker.proc.poll() is None
        server.start()
        Queue.from_url(server.url).push(JOB, {"tag": "after-restart"})
        wait_for(lambda: client.lrange("executed", 0, -1) == [b"after-restart"], timeout=15, what="job after Redis came back")
        out = worker.output()
        assert "lost Redis" in out and "Redis is back" in out
        assert out.count("lost Redis") == 1  # one line per outage, no crash loop
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
    finally:
        cli.close()
        server.stop()


def test_many_jobs_none_lost_none_duplicated_across_workers(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    n = 3000
    q.push_many([(JOB, {"tag": str(i)}) for i in range(n)], queue="bulk")
    workers = [cli.spawn("--queue", "bulk", "--stop-when-empty") for _ in range(3)]
    for w in workers:
        assert w.wait(60) == 0
    done = executed(r)
    assert len(done) == n and len(set(done)) == n


def test_await_release_names_laggards_then_passes(cli, r, redis_url):
    import socket

    host = socket.gethostname()
    old = cli.spawn("--sleep", "0.2", "--release", "r1", "--name", "mail")
    wait_for(lambda: len(Queue.from_url(redis_url).workers()) == 1, what="heartbeat")
    lagging = cli.run("await-release", "r2", "--expect", f"{host}=1", "--timeout", "0.5", check=False)
    assert lagging.returncode == 1
    assert f"host={host} pool=mail pid={old.pid} release=r1" in lagging.stderr
    cli.run("restart", "--release", "r2")
    assert old.wait(10) == 0
    cli.spawn("--sleep", "0.2", "--release", "r2", "--name", "mail")  # what supervisor does
    done = cli.run("await-release", "r2", "--expect", f"{host}=1", "--timeout", "10")
    assert "all 1 workers" in done.stdout
    short = cli.run("await-release", "r2", "--expect", f"{host}=2", "--timeout", "0.5", check=False)
    assert short.returncode == 1 and "1 of 2 expected workers" in short.stderr
    # A process beyond numprocs on the right release (a surplus or replaced one finishing
    # its job after a scale-down) runs the right code: the deploy does not wait for it.
    cli.spawn("--sleep", "0.2", "--release", "r2", "--name", "mail")
    wait_for(lambda: len(Queue.from_url(redis_url).workers()) == 2, what="second heartbeat")
    extra = cli.run("await-release", "r2", "--expect", f"{host}=1", "--timeout", "0.5", check=False)
    assert extra.returncode == 0, extra.stderr


def test_await_release_with_replaced_ids_waits_for_a_restart_onto_the_same_release(cli, r, redis_url):
    import socket

    host = socket.gethostname()
    q = Queue.from_url(redis_url)
    old = cli.spawn("--sleep", "0.2", "--release", "r1", "--name", "mail")
    wait_for(lambda: len(q.workers()) == 1, what="heartbeat")
    old_id = q.workers()[0]["id"]
    # Same release: without --replaced the old worker already passes, with it the wait goes on.
    assert cli.run("await-release", "r1", "--expect", f"{host}=1", "--timeout", "0.5").returncode == 0
    waiting = cli.run("await-release", "r1", "--expect", f"{host}=1", "--replaced", old_id, "--timeout", "0.5", check=False)
    assert waiting.returncode == 1
    assert f"pid={old.pid} release=r1" in waiting.stderr and "has not restarted yet" in waiting.stderr
    cli.run("restart")
    assert old.wait(10) == 0
    cli.spawn("--sleep", "0.2", "--release", "r1", "--name", "mail")  # what supervisor does
    done = cli.run("await-release", "r1", "--expect", f"{host}=1", "--replaced", old_id, "--timeout", "10")
    assert "none of the 1 replaced ones left" in done.stdout


def test_host_scoped_restart_only_restarts_that_hosts_workers(cli, r, redis_url):
    import socket

    host = socket.gethostname()
    worker = cli.spawn("--sleep", "0.2", "--release", "r1")
    worker.wait_log("STARTING")
    # A rolling deploy switched another host first: our worker keeps running.
    assert "host other-host" in cli.run("restart", "--release", "r2", "--host", "other-host").stdout
    q = Queue.from_url(redis_url)
    q.push(JOB, {"tag": "after-other-host"})  # runs only once the worker has seen that signal
    wait_for(lambda: executed(r) == ["after-other-host"], what="a job after the other host's signal")
    assert worker.proc.poll() is None
    # Then it switches this host.
    cli.run("restart", "--release", "r2", "--host", host, "--host", "other-host")
    assert worker.wait(10) == 0
    assert f"restart signal for host {host}" in worker.output()
    # Booted on r2 after the signal: later signals for r2 are no-ops for it.
    again = cli.spawn("--sleep", "0.2", "--release", "r2")
    again.wait_log("STARTING")
    assert "nothing to do" in cli.run("restart", "--release", "r2", "--host", host).stdout
    cli.run("restart", "--release", "r2")  # global signal for the release it already runs
    q.push(JOB, {"tag": "after-r2-signal"})
    wait_for(lambda: "after-r2-signal" in executed(r), what="a job after the signal for its own release")
    assert again.proc.poll() is None


def test_a_worker_reports_the_release_its_virtualenv_was_installed_as(tmp_path, monkeypatch):
    import sys

    from queuefleet.cli import app as cli_module

    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert cli_module.installed_release() == ""
    (tmp_path / "RELEASE").write_text("abc123\n")
    assert cli_module.installed_release() == "abc123"


def test_jobs_done_before_a_long_one_are_acked_while_it_runs(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    q.push_many([("qf_testjobs:record", {"tag": f"warm{i}"}) for i in range(60)])
    q.push("qf_testjobs:slow", {"tag": "long", "seconds": 4})
    q.push_many([("qf_testjobs:record", {"tag": f"after{i}"}) for i in range(5)])
    worker = cli.spawn("--sleep", "0.2")
    wait_for(lambda: r.llen("started") == 1, what="long job start")
    # Everything that ran before the long job is acked (its payload deleted)
    # within a keeper tick, not only when the batch ends.
    wait_for(lambda: r.hlen("queuefleet:payloads") == 6, timeout=3.5, what="earlier jobs acked (the long job runs 4 s)")
    assert r.llen("executed") == 60
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0


def test_the_builtin_canary_runs_whatever_jobs_allows(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    q.push("queuefleet.canary:ping", None)
    q.push("queuefleet.cli:main", None)  # the rest of queuefleet stays off limits
    out = cli.run("work", "--stop-when-empty").stdout
    assert "DONE" in out and "queuefleet.canary:ping" in out
    rows = FailedJobStore(sqlite_url).all()
    assert len(rows) == 1 and "is not allowed" in rows[0].exception


def test_restart_ignores_the_release_of_the_env_file(cli, r, redis_url, tmp_path):
    """An operator's `queue --env-file <deploy env> restart` restarts everyone: the env
    file's QUEUEFLEET_RELEASE must not turn it into a no-op release-scoped signal."""
    env_file = tmp_path / "queuefleet.env"
    env_file.write_text("QUEUEFLEET_RELEASE=r1\n")
    worker = cli.spawn("--sleep", "0.2", "--release", "r1")
    worker.wait_log("STARTING")
    out = cli.run("--env-file", str(env_file), "restart").stdout
    assert out.strip() == "restart signalled: all workers"
    assert worker.wait(10) == 0


def test_error_summaries_keep_the_reason_not_sqlalchemys_link_line():
    from queuefleet.payload import error_summary as _summary

    error = "(pymysql.err.OperationalError) (2003, \"Can't connect to MySQL server\")\n(Background on this error at: https://sqlalche.me/e/20/e3q8)"
    assert _summary(error) == "(pymysql.err.OperationalError) (2003, \"Can't connect to MySQL server\")"
    assert _summary("Traceback...\nRuntimeError: boom") == "RuntimeError: boom"
