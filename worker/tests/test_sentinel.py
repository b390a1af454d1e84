"""Redis behind Sentinel (issue 24): the redis+sentinel:// URL, durable push, the fleet clock
across a failover, and workers, producer, scheduler and exporter riding out a failover.

Real processes only: a master, a replica and three sentinels (servers.SentinelGroup). The
worker, scheduler and exporter run as the installed `queue ...`, as supervisor runs them.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from conftest import QUEUE_BIN, TESTS
from queuefleet import Queue, protocol
from queuefleet.connection import check_url, client_from_url, parse_sentinel_url, redacted_url
from queuefleet.durable import NotReplicated
from queuefleet.outage import is_transient
from queuefleet.replication import read_sentinels
from queuefleet.protocol import client_runner
from servers import RedisServer, SentinelGroup, free_port, poll, wait_for

QF_CLI = [str(Path(sys.executable).with_name("queue"))]  # the installed `queue`, as supervisor runs it


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    g = SentinelGroup(tmp_path / "redis", sentinel_password="sentinel pw&=")
    g.start()
    yield g
    g.stop()


def test_the_sentinel_url_form_is_percent_decoded_checked_and_redacted():
    t = parse_sentinel_url("redis+sentinel://:p%40ss%2Fw%20rd@h1:26379,h2,[::1]:26380/my%2Fmaster/3"
                           "?sentinel_password=s%26p&wait_replicas=1&socket_timeout=2")
    assert t.sentinels == (("h1", 26379), ("h2", 26379), ("::1", 26380))
    assert (t.service, t.db, t.password, t.sentinel_password) == ("my/master", 3, "p@ss/w rd", "s&p")
    assert t.options == {"socket_timeout": 2.0}
    assert parse_sentinel_url("redis+sentinel://h1/m").db == 0
    shown = redacted_url("redis+sentinel://:secret@h1:26379,h2:26379/m/0?sentinel_password=other&wait_replicas=1")
    assert shown == "redis+sentinel://:***@h1:26379,h2:26379/m/0?sentinel_password=***&wait_replicas=1"
    for bad in ("redis+sentinel://h1:26379/", "redis+sentinel://h1:x/m", "redis+sentinel://h1/m/x",
                "redis+sentinel://h1/m?nosuch=1", "redis://h/0?wait_replicas=-1", "redis://h/0?wait_timeout_ms=0"):
        with pytest.raises(ValueError):
            check_url(bad)
    check_url("redis://:pw@127.0.0.1:6379/0?wait_replicas=1&wait_timeout_ms=200")


def test_a_blocked_wait_on_a_master_turned_replica_counts_as_an_outage(tmp_path: Path):
    """An idle worker's BRPOP on a master that is made a replica gets -UNBLOCKED: a Redis outage
    to ride out (reconnect, find the new master), not a crash."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = RedisServer(tmp_path / "a"), RedisServer(tmp_path / "b")
    a.start()
    b.start()
    try:
        caught: list[BaseException] = []

        def wait() -> None:
            try:
                a.client(socket_timeout=10).brpop("queuefleet:queue:default:notify", 8)
            except redis.RedisError as exc:
                caught.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.3)
        a.client().replicaof("127.0.0.1", b.port)
        waiter.join(10)
        assert caught and str(caught[0]).startswith("UNBLOCKED"), caught
        assert is_transient(caught[0])
    finally:
        a.kill()
        b.kill()


def test_hung_sentinels_do_not_slow_a_client_whose_master_answers(group: SentinelGroup):
    """Every Sentinel hangs (SIGSTOP): the client asks them once (1 s each, no retries), then
    leaves them alone for 10 s while it keeps using the master it knows."""
    q = Queue.from_url(group.url)
    q.push("qf_testjobs:record", {"tag": "before"})
    time.sleep(1.1)  # the next call asks the Sentinels again
    for s in group.sentinels:
        s.freeze()
    slow, pushed, start = [], 0, time.monotonic()
    while time.monotonic() - start < 7:
        t = time.monotonic()
        q.push("qf_testjobs:record", {"tag": "during"})
        pushed += 1
        if time.monotonic() - t > 0.5:
            slow.append(round(time.monotonic() - t, 1))
    assert len(slow) == 1 and slow[0] < 4.5, slow
    assert pushed > 100


# -- durable push --------------------------------------------------------------------------------


def test_durable_push_waits_for_a_replica_and_raises_when_none_confirms(group: SentinelGroup, tmp_path: Path):
    master, replica = group.master.client(), group.replica.client()
    q = Queue.from_url(group.url_with("wait_replicas=1&wait_timeout_ms=300"))
    waits = lambda: master.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)  # noqa: E731
    assert q.push("qf_testjobs:record", {"tag": "one"}, id="one") == "one"
    assert replica.hexists("queuefleet:payloads", "one"), "acknowledged before the replica had it"
    before = waits()
    ids = q.push_many([("qf_testjobs:record", {"tag": f"b{i}"}, f"b{i}") for i in range(50)])
    assert waits() == before + 1, "a batch waits once"
    assert all(replica.hmget("queuefleet:payloads", ids))
    plain = Queue.from_url(group.url)
    assert not plain.durability.on and plain.push("qf_testjobs:record", {"tag": "x"})
    assert waits() == before + 1, "durable push is off by default"

    group.replica.freeze()  # the replica hangs: the master still takes writes, nobody confirms them
    try:
        start = time.monotonic()
        with pytest.raises(NotReplicated, match="0 of 1 replica") as caught:
            q.push("qf_testjobs:record", {"tag": "late"}, id="late")
        assert 0.3 <= time.monotonic() - start < 3 and caught.value.ids == ["late"]
        with pytest.raises(NotReplicated):
            q.push_many([("qf_testjobs:record", {"tag": "l2"}, "l2")])
        # `queue push` reads the setting from the environment and says so, with exit status 1.
        env = {**os.environ, "QUEUEFLEET_REDIS_URL": group.url, "QUEUEFLEET_DURABLE_PUSH": "1",
               "QUEUEFLEET_DURABLE_PUSH_TIMEOUT_MS": "200", "QUEUEFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'f.db'}"}
        out = subprocess.run([QUEUE_BIN, "push", "qf_testjobs:record", "--data", '{"tag": "cli"}', "--id", "cli"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and "push not durable: 0 of 1 replica(s)" in out.stderr, out
        assert "data pw" not in out.stderr
    finally:
        group.replica.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: poll(lambda: q.push("qf_testjobs:record", {"tag": "late"}, id="late"), 0.5), timeout=20,
             what="a durable push once the replica answers again")


# -- the fleet clock across a failover -------------------------------------------------------------


def test_a_new_master_with_a_fast_clock_neither_expires_leases_nor_releases_delays_early(group: SentinelGroup):
    """Servers' clocks cannot be set from a test: the skew is simulated where the scripts read
    TIME, by the P:clock hook 'skew:<run_id>' (common.lua), which tells the replica's scripts
    that its clock runs 20 s ahead of the master's."""
    client = client_from_url(group.url)
    q = Queue(client, url=group.url)
    run = client_runner(client)
    replica_id = group.replica.client().info("server")["run_id"]
    q.push("qf_testjobs:record", {"tag": "held"}, id="held")
    q.push("qf_testjobs:record", {"tag": "later"}, id="later", delay=15)
    holder = protocol.fetch(run, "queuefleet", ["default"], token_base="w1:1", host="h", lease_ms=10_000, max_jobs=1)
    assert [j.id for j in holder.jobs] == ["held"]
    client.hset("queuefleet:clock", f"skew:{replica_id}", 20_000)
    wait_for(lambda: group.replica.client().hexists("queuefleet:clock", f"skew:{replica_id}"), what="replication")
    group.failover()
    group.wait_promoted(group.replica)
    assert group.replica.client().time()[0] - time.time() < 2, "the servers' own clocks agree: the skew is the hook's"
    # Another worker fetches on the new master: by its clock the lease ran out 8+ s ago and the
    # delay is over; by the fleet clock neither is.
    other = wait_for(lambda: poll(lambda: protocol.fetch(run, "queuefleet", ["default"], token_base="w2:1", host="h",
                                                         lease_ms=10_000, max_jobs=5), 10), timeout=20, what="a fetch")
    assert group.replica.client().hget("queuefleet:clock", "server").decode() == replica_id, \
        "the client still wrote to the demoted master"
    assert other.jobs == [] and other.reclaimed == 0, "a lease or a delay ran out early on the new master's clock"
    assert group.replica.client().zscore("queuefleet:queue:default:reserved", "held")
    assert 0 <= other.now_ms - holder.now_ms < 10_000, "the fleet clock resumed from the old master's last stamp"
    # The holder still holds its job: its extend and ack work on the new master.
    assert protocol.extend(run, "queuefleet", [holder.jobs[0].key], 10_000) == []
    assert protocol.ack(run, "queuefleet", [holder.jobs[0].ack_key]) == []

    # What the exporter reads of the Sentinels: with two of three gone, quorum (2) is lost.
    view = read_sentinels(client)
    assert view is not None and (view.answering, view.quorum_ok, view.master) == (3, True, f"127.0.0.1:{group.replica.port}")
    group.sentinels[1].stop()
    group.sentinels[2].stop()
    view = wait_for(lambda: (v := read_sentinels(client)) and not v.quorum_ok and v, timeout=10, what="quorum lost")
    assert view.answering == 1 and view.master == f"127.0.0.1:{group.replica.port}"


# -- a fleet rides out failovers ------------------------------------------------------------------


class Producer(threading.Thread):
    """Pushes jobs with its own ids, retrying a push that raised (safe: push is idempotent per id)."""

    def __init__(self, url: str, record: Path) -> None:
        super().__init__(daemon=True)
        self.queue = Queue.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.record = record
        self.acked: list[str] = []
        self.errors: collections.Counter[str] = collections.Counter()
        self.finish = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.finish.is_set():
            job_id = f"p{i}"
            while not self.finish.is_set():
                try:
                    self.queue.push("qf_testjobs:sleep", {"tag": job_id, "seconds": 0.02, "file": str(self.record)}, id=job_id)
                    self.acked.append(job_id)
                    break
                except redis.RedisError as exc:
                    self.errors[exc.__class__.__name__] += 1
                    time.sleep(0.05)
            i += 1
            time.sleep(0.05)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_workers_producer_scheduler_and_exporter_ride_out_a_switchover_and_a_killed_master(group: SentinelGroup,
                                                                                           tmp_path: Path):
    url = group.url_with("wait_replicas=1&wait_timeout_ms=500")
    record = tmp_path / "ran.txt"
    ran = lambda: record.read_text().split() if record.exists() else []  # noqa: E731
    env = {**os.environ, "QUEUEFLEET_REDIS_URL": url, "QUEUEFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'failed.db'}",
           "QUEUEFLEET_JOBS": "qf_testjobs", "PYTHONPATH": str(TESTS)}
    env.pop("QUEUEFLEET_DURABLE_PUSH", None)
    subprocess.run([*QF_CLI, "migrate"], env=env, check=True, capture_output=True, timeout=60)
    schedule = tmp_path / "schedule.json"
    schedule.write_text(json.dumps([{"name": "tick", "cron": "* * * * * *", "job": "qf_testjobs:sleep",
                                     "data": {"tag": "tick", "seconds": 0, "file": str(tmp_path / "ticks.txt")}}]))
    port = free_port()
    procs = [subprocess.Popen([*QF_CLI, "work", "--sleep", "1", "--lease", "10"], env=env, cwd=tmp_path,
                              stdout=open(tmp_path / f"w{i}.log", "w"), stderr=open(tmp_path / f"w{i}.err", "w"))
             for i in range(2)]
    procs.append(subprocess.Popen([*QF_CLI, "schedule", "--file", str(schedule)], env=env, cwd=tmp_path,
                                  stdout=open(tmp_path / "sched.log", "w"), stderr=subprocess.STDOUT))
    procs.append(subprocess.Popen([*QF_CLI, "exporter", "--listen", f"127.0.0.1:{port}"], env=env, cwd=tmp_path,
                                  stdout=subprocess.DEVNULL, stderr=open(tmp_path / "exporter.err", "w")))
    producer = Producer(url, record)
    ticks = lambda: len((tmp_path / "ticks.txt").read_text().split()) if (tmp_path / "ticks.txt").exists() else 0  # noqa: E731
    logs = lambda: "".join((tmp_path / n).read_text() for n in ("w0.log", "w1.log", "w0.err", "w1.err", "sched.log"))  # noqa: E731
    try:
        producer.start()
        wait_for(lambda: len(ran()) >= 20 and ticks() >= 2, timeout=30, what="work before the faults")
        m = wait_for(lambda: poll(lambda: scrape(port), 5), timeout=20, what="the exporter")
        assert m[("queuefleet_redis_connected_replicas", ())] == 1
        assert m[("queuefleet_redis_replication_role", (("role", "master"),))] == 1
        assert ("queuefleet_redis_replica_lag_bytes", (("replica", f"127.0.0.1:{group.replica.port}"),)) in m
        assert m[("queuefleet_sentinel_master_known", ())] == 1
        assert m[("queuefleet_sentinel_master_info", (("master", f"127.0.0.1:{group.master.port}"),))] == 1
        assert m[("queuefleet_sentinel_quorum_ok", ())] == 1 and m[("queuefleet_sentinels_up", ())] == 3

        # 1. A switchover (SENTINEL FAILOVER): the replica is promoted, the old master demoted.
        group.failover()
        group.wait_promoted(group.replica)
        n, t = len(ran()), ticks()
        wait_for(lambda: len(ran()) >= n + 20 and ticks() >= t + 2, timeout=30, what=f"work on the new master\n{logs()}")
        assert group.replica.client().info("errorstats")["errorstat_NOSCRIPT"]["count"] >= 1, "scripts were loaded again"

        # 2. The new master's redis-server is killed: the old one, a replica again, is promoted.
        wait_for(lambda: group.replica.client().info("replication")["connected_slaves"] == 1, timeout=30,
                 what="the old master to come back as a replica")
        wait_for(lambda: group.master.client().info("replication")["master_link_status"] == "up", timeout=30,
                 what="the old master to sync")
        killed_at = time.monotonic()
        group.replica.kill()
        group.wait_promoted(group.master, timeout=30)
        group.replica.start()  # as supervisor would: it comes back, and the sentinels make it a replica
        n, t = len(ran()), ticks()
        wait_for(lambda: len(ran()) >= n + 20 and ticks() >= t + 2, timeout=30, what=f"work after the kill\n{logs()}")
        back = time.monotonic() - killed_at
        assert back < group.down_after_ms / 1000 + 10, f"service back after {back:.1f}s"
        m = wait_for(lambda: poll(lambda: (s := scrape(port)) and s.get(("queuefleet_sentinel_master_info", (
            ("master", f"127.0.0.1:{group.master.port}"),))) == 1 and s, 5), timeout=30, what="the exporter to follow")
        assert m[("queuefleet_redis_up", ())] == 1
        assert m[("queuefleet_redis_replication_role", (("role", "master"),))] == 1

        producer.finish.set()
        producer.join(10)
        acked = set(producer.acked)
        wait_for(lambda: acked <= set(ran()), timeout=60, what=f"every acknowledged push to run\n{logs()}")
        counts = collections.Counter(ran())
        twice = sorted(i for i, c in counts.items() if c > 1)
        # Durable mode: a push the replicas did not confirm was pushed again (NotReplicated, same id),
        # and a worker runs nothing it reserved on a master that was just replaced, so nothing ran twice.
        assert producer.errors["NotReplicated"] >= 1, producer.errors
        assert twice == [], twice
        assert all(p.poll() is None for p in procs), logs()
        assert "Traceback" not in logs()
    finally:
        producer.finish.set()
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_an_acl_user_without_info_keeps_the_servers_own_clock(r, redis_url):
    """The fleet clock reads the server's run_id with INFO; a user denied INFO still works."""
    r.acl_setuser("noinfo", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"], commands=["+@all", "-info"])
    try:
        url = redis_url.replace("redis://", "redis://noinfo:pw@")
        q = Queue.from_url(url)
        with pytest.raises(redis.exceptions.NoPermissionError):
            q.redis.info()
        q.push("qf_testjobs:record", {"tag": "a"}, id="a")
        got = protocol.fetch(client_runner(q.redis), "queuefleet", ["default"], token_base="w:1", host="h", lease_ms=5000,
                             max_jobs=1)
        assert [j.id for j in got.jobs] == ["a"]
        assert abs(got.now_ms / 1000 - time.time()) < 2
        assert r.hget("queuefleet:clock", "server") == b"?"
    finally:
        r.acl_deluser("noinfo")
