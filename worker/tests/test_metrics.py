"""`queue exporter` against real workers: the scraped numbers match the work done."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import QUEUE_BIN, QueueCli
from queuefleet.queue import Queue
from servers import free_port, wait_for

HOST = socket.gethostname()
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Exporter:
    def __init__(self, cli: QueueCli, *args: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.err = cli.workdir / f"exporter-{self.port}.err"
        self.proc = subprocess.Popen([QUEUE_BIN, "exporter", "--listen", f"127.0.0.1:{self.port}", *args],
                                     env={**cli.env, **(env or {})}, cwd=cli.workdir, stdout=subprocess.PIPE, text=True,
                                     stderr=open(self.err, "w"))
        assert self.proc.stdout is not None
        self.banner = self.proc.stdout.readline()

    def text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as reply:
            assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return reply.read().decode()

    def scrape(self) -> Samples:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(self.text()) for s in family.samples}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


@pytest.fixture
def exporters(cli: QueueCli) -> Iterator[list[Exporter]]:
    started: list[Exporter] = []
    yield started
    for e in started:
        if e.proc.poll() is None:
            e.proc.kill()
            e.proc.wait(10)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def by_job(samples: Samples, name: str, job: str) -> dict[str, float]:
    """{outcome: value} of `name` for one job of the default queue."""
    out = {}
    for (n, labels), v in samples.items():
        d = dict(labels)
        if n == name and d.get("job") == job and d.get("queue") == "default":
            out[d.get("outcome", "")] = v
    return out


def test_scraped_counters_match_known_work(cli, r, redis_url, sqlite_url, exporters):
    q = Queue.from_url(redis_url)
    q.push_many([("qf_testjobs:record", {"tag": f"ok{i}"}) for i in range(5)])
    q.push_many([("qf_testjobs:fail", {"tag": f"bad{i}"}) for i in range(2)], tries=1)
    q.push("qf_testjobs:fail_then_succeed", {"tag": "flaky", "succeed_on": 2}, tries=3)
    q.push("qf_testjobs:slow", {"tag": "slow", "seconds": 0.3})
    cli.run("work", "--stop-when-empty", "--sleep", "0.2", "--backoff", "0", timeout=60)
    # A job that kills its worker: lost once, then failed by the next worker (--max-lost 1).
    q.push("qf_testjobs:kill9", {"tag": "killer"})
    victim = cli.spawn("--sleep", "0.2", "--max-lost", "1")
    assert victim.wait(15) == -signal.SIGKILL
    cli.run("work", "--stop-when-empty", "--sleep", "0.2", "--max-lost", "1", timeout=60)

    exporters.append(e := Exporter(cli, "--pool", "default=2", "--backlog", "default=100", "--max-age", "default=60"))
    assert f"queuefleet exporter on http://127.0.0.1:{e.port}/metrics" in e.banner
    s = e.scrape()
    assert by_job(s, "queuefleet_jobs_total", "qf_testjobs:record") == {"done": 5}
    assert by_job(s, "queuefleet_jobs_total", "qf_testjobs:fail") == {"failed": 2}
    assert by_job(s, "queuefleet_jobs_total", "qf_testjobs:fail_then_succeed") == {"retried": 1, "done": 1}
    assert by_job(s, "queuefleet_jobs_total", "qf_testjobs:kill9") == {"lost": 1, "failed": 1}
    # Every attempt that ran to an outcome is timed; the killer never finished one.
    assert by_job(s, "queuefleet_job_duration_seconds_count", "qf_testjobs:record") == {"": 5}
    assert by_job(s, "queuefleet_job_duration_seconds_count", "qf_testjobs:fail_then_succeed") == {"": 2}
    assert by_job(s, "queuefleet_job_duration_seconds_count", "qf_testjobs:kill9") == {}
    slow = {dict(k[1]).get("le"): v for k, v in s.items()
            if k[0] == "queuefleet_job_duration_seconds_bucket" and dict(k[1])["job"] == "qf_testjobs:slow"}
    assert slow["0.25"] == 0 and slow["0.5"] == 1 and slow["+Inf"] == 1
    assert 0.3 <= by_job(s, "queuefleet_job_duration_seconds_sum", "qf_testjobs:slow")[""] < 0.5
    assert value(s, "queuefleet_failed_jobs") == 3
    assert value(s, "queuefleet_database_up") == 1 and value(s, "queuefleet_redis_up") == 1
    for state in ("ready", "delayed", "reserved"):
        assert value(s, "queuefleet_jobs", queue="default", state=state) == 0
    assert value(s, "queuefleet_oldest_job_age_seconds", queue="default") == 0
    assert value(s, "queuefleet_backlog_threshold", queue="default") == 100
    assert value(s, "queuefleet_oldest_job_age_threshold_seconds", queue="default") == 60
    # No worker runs now: the expected pool shows zero live processes in every state.
    assert value(s, "queuefleet_pool_expected_workers", host=HOST, pool="default") == 2
    assert [value(s, "queuefleet_workers", host=HOST, pool="default", state=st) for st in ("idle", "busy", "paused")] == [0, 0, 0]


def test_backlog_age_and_live_workers(cli, r, redis_url, exporters, tmp_path: Path):
    q = Queue.from_url(redis_url)
    release_file = tmp_path / "RELEASE"
    release_file.write_text("r2\n")
    exporters.append(e := Exporter(cli, "--pool", "emails=1", "--release-file", str(release_file)))
    q.push_many([("qf_testjobs:record", {"tag": f"t{i}"}) for i in range(3)], queue="emails")
    q.push("qf_testjobs:record", {"tag": "later"}, queue="emails", delay=600)
    wait_for(lambda: (value(e.scrape(), "queuefleet_oldest_job_age_seconds", queue="emails") or 0) >= 1.0, timeout=5,
             what="the oldest ready job to age a second")
    s = e.scrape()
    assert value(s, "queuefleet_jobs", queue="emails", state="ready") == 3
    assert value(s, "queuefleet_jobs", queue="emails", state="delayed") == 1
    assert value(s, "queuefleet_release_info", host=HOST, release="r2") == 1
    worker = cli.spawn("--queue", "emails", "--name", "emails", "--sleep", "0.2", env={"QUEUEFLEET_RELEASE": "r1"})
    def idle_worker_seen() -> Samples | None:
        now = e.scrape()
        done = value(now, "queuefleet_jobs_total", queue="emails", job="qf_testjobs:record", outcome="done") == 3
        return now if done and value(now, "queuefleet_workers", host=HOST, pool="emails", state="idle") == 1 else None

    s = wait_for(idle_worker_seen, timeout=15, what="the worker done and idle in the exporter")
    assert value(s, "queuefleet_jobs", queue="emails", state="ready") == 0
    assert value(s, "queuefleet_oldest_job_age_seconds", queue="emails") == 0
    assert value(s, "queuefleet_worker_info", host=HOST, pool="emails", release="r1") == 1
    # Counters live in Redis: a second exporter (another host's, or this one restarted) reads the same.
    e.stop()
    exporters.append(again := Exporter(cli, "--host", "other-host"))
    s2 = again.scrape()
    assert value(s2, "queuefleet_jobs_total", queue="emails", job="qf_testjobs:record", outcome="done") == 3
    assert value(s2, "queuefleet_workers", host="other-host", pool="emails", state="idle") is None  # not its host
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0


def test_unreachable_servers_are_reported_not_fatal(cli, exporters, tmp_path: Path):
    closed = free_port()
    exporters.append(e := Exporter(cli, env={"QUEUEFLEET_REDIS_URL": f"redis://127.0.0.1:{closed}/0",
                                             "QUEUEFLEET_DATABASE_URL": f"sqlite:///{tmp_path}/missing/dir/x.db"}))
    s = e.scrape()
    assert value(s, "queuefleet_redis_up") == 0
    assert value(s, "queuefleet_database_up") == 0
    assert value(s, "queuefleet_failed_jobs") is None
    assert e.proc.poll() is None


@pytest.mark.parametrize("args, message", [
    (["--listen", "9818"], "expected HOST:PORT"),
    (["--listen", "127.0.0.1:99999"], "expected HOST:PORT"),
    (["--pool", "default"], "expected POOL=VALUE"),
    (["--pool", "default=two"], "invalid literal"),
    (["--backlog", "bad queue=5"], "queue"),
    (["--max-age", "default=nan"], "finite number"),
])
def test_bad_options_are_usage_errors(cli, args, message):
    result = cli.run("exporter", *args, check=False, timeout=20)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_port_in_use_is_a_clear_error(cli, exporters):
    exporters.append(e := Exporter(cli))
    result = cli.run("exporter", "--listen", f"127.0.0.1:{e.port}", check=False, timeout=20)
    assert result.returncode != 0 and "cannot listen on 127.0.0.1" in result.stderr


def test_only_allowed_networks_may_scrape(cli, exporters):
    # Beyond loopback the exporter must be told who may scrape.
    result = cli.run("exporter", "--listen", "0.0.0.0:9", check=False, timeout=20)
    assert result.returncode == 2 and "name who may scrape with --allow" in result.stderr
    assert cli.run("exporter", "--allow", "10.0.0.0/33", check=False, timeout=20).returncode == 2
    exporters.append(e := Exporter(cli, "--allow", "192.0.2.0/24"))
    assert "queuefleet_redis_up" in e.text()  # loopback may always scrape


def test_allow_list_decides_by_client_address():
    import ipaddress

    from queuefleet.serving import allowed

    nets = [ipaddress.ip_network("10.1.0.0/16")]
    assert allowed("10.1.2.3", nets) and allowed("127.0.0.1", nets) and allowed("::1", nets)
    assert allowed("::ffff:10.1.2.3", nets)
    assert not allowed("10.2.0.1", nets) and not allowed("192.168.0.1", []) and not allowed("", nets)


def test_the_oldest_jobs_age_counts_from_when_it_became_ready_on_the_redis_clock(r, redis_url):
    """Not from the producer's pushed_at: a producer's clock may be off, and a delayed, retried
    or released job has not been waiting while it was not due (issue 25, false backlog alerts)."""
    from queuefleet import Job, protocol
    from queuefleet.stats import read_stats

    q = Queue.from_url(redis_url)
    skewed = Job.new("qf_testjobs:record", {"tag": "s"}, "skewed")
    skewed.pushed_at -= 3600  # its producer's clock is an hour behind
    q.enqueue(skewed, given_id=False)
    q.push("qf_testjobs:record", {"tag": "d"}, queue="later", delay=1)
    wait_for(lambda: protocol.fetch(protocol.client_runner(r), "queuefleet", ["later"], token_base="t:1:x", host="h",
                                    lease_ms=1000, max_jobs=0) and q.sizes(["later"])["later"]["ready"] == 1,
             what="the delayed job to come due")
    ages = read_stats(r, "queuefleet").oldest_age
    assert ages["skewed"] < 5, ages
    assert ages["later"] < 1, ages


def test_job_names_from_payloads_cannot_grow_the_counters_without_bound(r, redis_url):
    """Job labels come from payloads, which anyone who can write to Redis writes: the counters
    keep a bounded set of (queue, job) pairs, count the rest as '(other)', and expire when the
    fleet stops writing them (issue 25)."""
    from queuefleet import protocol
    from queuefleet.stats import read_stats
    from queuefleet.job_counters import tally

    q = Queue.from_url(redis_url)
    q.push_many([("qf_testjobs:record", {})] * 600)
    run = protocol.client_runner(r)
    jobs = protocol.fetch(run, "queuefleet", ["default"], token_base="w:1:x", host="h", lease_ms=60_000, max_jobs=600).jobs
    protocol.ack(run, "queuefleet", [(j.queue, j.id, j.token, tally(f"made.up{i}:f", "failed", 0.01)) for i, j in enumerate(jobs)])
    stats = read_stats(r, "queuefleet")
    names = {job for (_queue, job, _outcome) in stats.jobs}
    assert len(names) == 501 and "(other)" in names
    assert sum(stats.jobs.values()) == 600 and stats.jobs[("default", "(other)", "failed")] == 100  # every attempt counted
    assert len(stats.durations) == 501 and stats.durations[("default", "(other)")].count == 100
    for key in ("stats:jobs", "stats:durations", "stats:series"):
        assert 0 < r.ttl(f"queuefleet:{key}") <= 30 * 86400, key


# -- autoscaled pools (issue 26) ------------------------------------------------------------------


def test_autoscaled_pools_sizes_and_scale_events_of_this_host(cli, r, redis_url, exporters):
    """Each exporter reports its own host's announcements of the pools it knows, as the real autoscaler
    writes them, with a counter of its scale events by direction; a stale announcement (an autoscaler
    that stopped) only by its age, another host's not at all, a pool that is not autoscaled not at all."""
    from queuefleet.autoscale_policy import ScaleRule
    from scaling import autoscaler

    Queue.from_url(redis_url).push_many([("qf_testjobs:record", {"tag": f"x{i}"}) for i in range(10)], queue="exports")
    rule = ScaleRule(min=1, max=3, step=2, cooldown=0, target_wait=1)
    here, here_sup = autoscaler(r, HOST, "exports", ["exports"], rule)
    there, _ = autoscaler(r, "other-host", "exports", ["exports"], rule)
    assert any("1 -> 3 (scale up)" in line for line in here.tick(now=0))
    assert any("1 -> 3 (scale up)" in line for line in there.tick(now=0))
    assert here.tick(now=1) == [] and here_sup.running() == 3
    # An autoscaler that stopped two minutes ago left its announcement and its count behind.
    seconds, micros = r.time()
    r.hset("queuefleet:autoscale:nightly", HOST, json.dumps({"min": 0, "max": 4, "running": 4, "desired": 4,
                                                             "at": seconds + micros / 1e6 - 120}))
    r.hset("queuefleet:autoscale:counts", f"nightly|{HOST}|down", 4)

    exporters.append(e := Exporter(cli, "--pool", "exports=1", "--pool", "nightly=0", "--pool", "default=2"))
    s = e.scrape()
    sizes = {kind: value(s, f"queuefleet_autoscale_{kind}_processes", host=HOST, pool="exports")
             for kind in ("min", "desired", "running", "max")}
    assert sizes == {"min": 1, "desired": 3, "running": 3, "max": 3}, sizes
    assert value(s, "queuefleet_autoscale_events_total", host=HOST, pool="exports", direction="up") == 1
    assert value(s, "queuefleet_autoscale_events_total", host=HOST, pool="exports", direction="down") == 0
    assert 0 <= value(s, "queuefleet_autoscale_announcement_age_seconds", host=HOST, pool="exports") < 30
    # stale: its age and its count, not its sizes
    assert 120 <= value(s, "queuefleet_autoscale_announcement_age_seconds", host=HOST, pool="nightly") < 150
    assert value(s, "queuefleet_autoscale_events_total", host=HOST, pool="nightly", direction="down") == 4
    autoscale = {(name, dict(labels).get("pool"), dict(labels).get("host")) for name, labels in s
                 if name.startswith("queuefleet_autoscale_")}
    assert not {n for n, pool, _ in autoscale if pool == "nightly"} & {
        f"queuefleet_autoscale_{k}_processes" for k in ("min", "desired", "running", "max")}, autoscale
    assert {pool for _, pool, _ in autoscale} == {"exports", "nightly"}  # `default` is not autoscaled
    assert {host for _, _, host in autoscale} == {HOST}  # other-host's exporter reports other-host's

    # The backlog drains: the next decision scales down (cooldown 0), and the counter follows.
    cli.run("work", "--queue", "exports", "--name", "drain", "--stop-when-empty", "--sleep", "0.1")
    assert any("3 -> 1 (scale down" in line for line in here.tick(now=2))
    s = e.scrape()
    assert value(s, "queuefleet_autoscale_desired_processes", host=HOST, pool="exports") == 1
    assert value(s, "queuefleet_autoscale_events_total", host=HOST, pool="exports", direction="down") == 1


def test_pools_of_live_workers_their_queues_and_autoscale_without_pool_options(cli, r, exporters):
    """An exporter run without --pool finds the autoscaled pools of its host's live workers, and maps
    every live pool to the queues it reads (for the alert on a pool at max with a growing backlog)."""
    from queuefleet.autoscale_policy import ScaleRule
    from scaling import autoscaler

    scaler, _ = autoscaler(r, HOST, "exports", ["exports", "bulk"], ScaleRule(min=1, max=2))
    scaler.tick(now=0)
    exporters.append(e := Exporter(cli))
    s = e.scrape()
    assert value(s, "queuefleet_autoscale_max_processes", host=HOST, pool="exports") is None  # no pool known yet
    worker = cli.spawn("--queue", "exports,bulk", "--name", "exports", "--sleep", "0.2")

    def seen() -> Samples | None:
        now = e.scrape()
        return now if value(now, "queuefleet_pool_queue_info", host=HOST, pool="exports", queue="bulk") == 1 else None

    s = wait_for(seen, timeout=15, what="the worker's pool and queues in the exporter")
    assert value(s, "queuefleet_pool_queue_info", host=HOST, pool="exports", queue="exports") == 1
    assert value(s, "queuefleet_autoscale_max_processes", host=HOST, pool="exports") == 2
    assert value(s, "queuefleet_autoscale_running_processes", host=HOST, pool="exports") == 1  # its floor, started by the first tick
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0
