"""Unique jobs (issue 14): while a job holding a unique key is queued, delayed or running,
no second job with that key is pushed; the key is let go when the job is finished or after
its bound."""

from __future__ import annotations

import signal
import time

import pytest

from conftest import executed
from queuefleet import FailedJobStore, Queue
from servers import wait_for


def test_a_unique_job_pushed_again_while_queued_returns_the_first_id(r, redis_url):
    q = Queue.from_url(redis_url)
    first = q.push("qf_testjobs:record", {"tag": "a"}, unique_key="report-42")
    again = q.push("qf_testjobs:record", {"tag": "b"}, unique_key="report-42", delay=5)
    other = q.push("qf_testjobs:record", {"tag": "c"}, unique_key="report-43")
    assert again == first and other != first
    assert q.sizes(["default"])["default"] == {"ready": 2, "delayed": 0, "reserved": 0}


def test_a_unique_job_pushed_twice_while_the_first_runs_runs_once(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    first = q.push("qf_testjobs:slow", {"tag": "one", "seconds": 1.0}, unique_key="sync")
    worker = cli.spawn("--sleep", "0.1")
    wait_for(lambda: r.lrange("started", 0, -1) == [b"one"], what="the first job to start")
    assert q.push("qf_testjobs:slow", {"tag": "two", "seconds": 0}, unique_key="sync") == first
    wait_for(lambda: executed(r) == ["one"], what="the first job to finish")
    wait_for(lambda: not r.hexists("queuefleet:payloads", first), what="the first job's ack")
    # Finished: the key is free again.
    third = q.push("qf_testjobs:slow", {"tag": "three", "seconds": 0}, unique_key="sync")
    assert third != first
    wait_for(lambda: executed(r) == ["one", "three"], what="the next unique job")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert r.hlen("queuefleet:uniques") == 0 and not r.exists("queuefleet:unique:sync")


def test_a_unique_job_that_fails_for_good_lets_go_of_its_key(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    first = q.push("qf_testjobs:fail", {"tag": "f"}, unique_key="k", tries=2)
    cli.run("work", "--stop-when-empty")
    assert [row.uuid for row in FailedJobStore(sqlite_url).all()] == [first]
    assert q.push("qf_testjobs:record", {"tag": "again"}, unique_key="k") != first


def test_the_key_lives_at_most_unique_for_and_is_never_freed_by_a_job_that_lost_it(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    a = q.push("qf_testjobs:record", {"tag": "a"}, unique_key="k", unique_for=0.3)
    time.sleep(0.4)
    b = q.push("qf_testjobs:record", {"tag": "b"}, unique_key="k")  # the bound is up: a second job is pushed
    assert b != a
    cli.run("work", "--once")  # runs a (first in), whose end must not free b's key
    assert executed(r) == ["a"]
    assert q.push("qf_testjobs:record", {"tag": "c"}, unique_key="k") == b


def test_clearing_a_queue_lets_go_of_its_jobs_keys(r, redis_url):
    q = Queue.from_url(redis_url)
    first = q.push("qf_testjobs:record", {"tag": "a"}, unique_key="k")
    assert q.clear("default") == 1
    assert q.push("qf_testjobs:record", {"tag": "b"}, unique_key="k") != first


def test_queue_push_unique_key_from_the_shell(cli, r):
    first = cli.run("push", "qf_testjobs:record", "--data", '{"tag": "a"}', "--unique-key", "nightly").stdout.strip()
    again = cli.run("push", "qf_testjobs:record", "--data", '{"tag": "b"}', "--unique-key", "nightly")
    assert again.stdout.strip() == first
    assert f"job {first} holds unique key 'nightly' (queued or running): not pushed" in again.stderr


@pytest.mark.parametrize(("args", "needle"), [
    (["--unique-key", "bad key"], "unique_key must be"),
    (["--unique-key", "k", "--unique-for", "0"], "unique-for"),
    (["--unique-key", "k", "--unique-for", "nan"], "unique-for"),
])
def test_bad_unique_options_are_usage_errors(cli, r, args, needle):
    result = cli.run("push", "qf_testjobs:record", *args, check=False)
    assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr
    assert r.keys("queuefleet:queue:*") == []


def test_bad_unique_values_raise_before_anything_is_written(r, redis_url):
    q = Queue.from_url(redis_url)
    for kwargs in ({"unique_key": ""}, {"unique_key": "k\n"}, {"unique_key": "k", "unique_for": -1},
                   {"unique_key": "k", "unique_for": float("inf")}):
        with pytest.raises(ValueError):
            q.push("qf_testjobs:record", {"tag": "x"}, **kwargs)
    assert r.keys("queuefleet:*") == []
