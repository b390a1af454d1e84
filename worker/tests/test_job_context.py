"""What job authors expect (issue 14): a job context with release and fail, failure
callbacks called once per failure, and a worker-wide failure hook; each in real worker
processes against a real Redis."""

from __future__ import annotations

import json
import signal
import time

import pytest
import redis

from conftest import executed
from queuefleet import FailedJobStore, Queue
from servers import wait_for

JOB = "qf_testjobs:with_context"


def contexts(r: redis.Redis) -> list[dict]:
    return [json.loads(v) for v in r.lrange("contexts", 0, -1)]


def callbacks(r: redis.Redis) -> list[str]:
    return [v.decode() for v in r.lrange("callbacks", 0, -1)]


def hooked(r: redis.Redis) -> list[dict]:
    return [json.loads(v) for v in r.lrange("hooked", 0, -1)]


def failed(url: str):
    store = FailedJobStore(url)
    try:
        return store.all()
    finally:
        store.engine.dispose()


def test_a_handler_with_a_second_parameter_gets_its_job_context(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    before = time.time()
    job_id = q.push(JOB, {"tag": "a"}, queue="mail", tries=3)
    q.push("qf_testjobs:data_only", {"tag": "b"}, queue="mail")
    cli.run("work", "--queue", "mail", "--stop-when-empty")
    [ctx] = contexts(r)
    assert ctx["id"] == job_id and ctx["queue"] == "mail" and ctx["job"] == JOB
    assert ctx["attempt"] == 1 and ctx["max_tries"] == 3 and ctx["last_try"] is False
    assert before - 1 <= ctx["pushed_at"] <= time.time()
    assert executed(r) == ["a", "b:default"]  # a defaulted second parameter is not a context


def test_release_runs_the_job_again_after_its_delay_as_a_counted_attempt(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    q.push(JOB, {"tag": "later", "action": "release_once", "delay": 1.5}, tries=3)
    worker = cli.spawn("--sleep", "0.1")
    wait_for(lambda: len(contexts(r)) == 1, what="the first attempt")
    wait_for(lambda: q.sizes(["default"])["default"]["delayed"] == 1, what="the released job in the delayed set")
    wait_for(lambda: executed(r) == ["later"], timeout=10, what="the second attempt")
    first, second = contexts(r)
    assert second["at"] - first["at"] >= 1.4
    assert [first["attempt"], second["attempt"]] == [1, 2]
    assert r.lrange("swallowed", 0, -1) == []  # `except Exception` in the handler did not catch the release
    assert "RELEASED" in worker.output().upper() and "by its handler" in worker.output()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert failed(sqlite_url) == [] and callbacks(r) == []


def test_a_release_on_the_last_try_fails_the_job_and_calls_back_once(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    job_id = q.push(JOB, {"tag": "r", "action": "release"}, tries=2)
    cli.run("work", "--stop-when-empty", "--sleep", "0.1")
    assert [c["attempt"] for c in contexts(r)] == [1, 2]
    [row] = failed(sqlite_url)
    assert row.uuid == job_id and "released itself" in row.exception and "last try (2 of 2)" in row.exception
    assert callbacks(r) == [f"r|{row.exception}"]


def test_fail_sends_the_job_to_failed_jobs_at_once_with_its_reason(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    job_id = q.push(JOB, {"tag": "f", "action": "fail", "reason": "no recipient"}, tries=5)
    q.push(JOB, {"tag": "next"})
    cli.run("work", "--stop-when-empty", "--on-failure", "qf_testjobs:hook")
    assert len(contexts(r)) == 2  # one attempt of five, then the next job
    [row] = failed(sqlite_url)
    assert row.uuid == job_id and row.exception == "FailJob: no recipient"
    assert callbacks(r) == ["f|FailJob: no recipient"]
    [hook] = hooked(r)
    assert hook == {"id": job_id, "job": JOB, "queue": "default", "error": "FailJob: no recipient", "attempts": 1,
                    "data": {"tag": "f", "action": "fail", "reason": "no recipient"}}
    assert executed(r) == ["next"]


def test_callbacks_are_called_once_when_the_tries_are_used_up(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    job_id = q.push(JOB, {"tag": "t", "action": "raise"}, tries=3)
    cli.run("work", "--stop-when-empty", "--on-failure", "qf_testjobs:hook")  # retried at once (no backoff)
    assert failed(sqlite_url)[0].uuid == job_id
    assert [c["attempt"] for c in contexts(r)] == [1, 2, 3]
    assert callbacks(r) == ["t|RuntimeError: raised on purpose (attempt 3)"]
    assert [(h["id"], h["attempts"], h["error"]) for h in hooked(r)] == [(job_id, 3, "RuntimeError: raised on purpose (attempt 3)")]


def test_a_callback_or_hook_that_raises_never_loses_the_failed_row(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    job_id = q.push(JOB, {"tag": "c", "action": "fail", "callback": "raise"})
    q.push(JOB, {"tag": "after"})
    result = cli.run("work", "--stop-when-empty", "--on-failure", "qf_testjobs:broken_hook")
    [row] = failed(sqlite_url)
    assert row.uuid == job_id
    assert callbacks(r) == ["c|FailJob: no reason"]
    assert executed(r) == ["after"]
    assert "its on_failure callback failed (RuntimeError" in result.stdout
    assert "the --on-failure hook failed (RuntimeError" in result.stdout
    assert "the callback itself fails" in result.stderr and "the hook fails" in result.stderr


def test_a_worker_killed_in_its_failure_callback_does_not_call_it_again(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    job_id = q.push(JOB, {"tag": "k", "action": "fail", "callback": "kill"})
    victim = cli.spawn("--sleep", "0.1")
    assert victim.wait() == -signal.SIGKILL
    assert callbacks(r) == ["k|FailJob: no reason"]
    # The next worker finds the dead one's job marked as failed with its callbacks called: it stores it only.
    cli.run("work", "--stop-when-empty", "--sleep", "0.1")
    [row] = failed(sqlite_url)
    assert row.uuid == job_id and row.exception == "FailJob: no reason"
    assert callbacks(r) == ["k|FailJob: no reason"]
    assert len(contexts(r)) == 1  # and the job did not run again


def test_a_job_whose_worker_dies_on_its_last_try_is_called_back_once(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    job_id = q.push(JOB, {"tag": "x", "action": "exit"}, tries=1)
    for _ in range(2):
        assert cli.spawn("--sleep", "0.1", "--max-lost", "2").wait() == 3
    cli.run("work", "--stop-when-empty", "--sleep", "0.1", "--max-lost", "2", "--on-failure", "qf_testjobs:hook")
    [row] = failed(sqlite_url)
    assert row.uuid == job_id and "was lost 2 times" in row.exception
    assert len(callbacks(r)) == 1 and "was lost 2 times" in callbacks(r)[0]
    assert [h["id"] for h in hooked(r)] == [job_id]


@pytest.mark.parametrize(
    ("hook", "needle"),
    [("os:system", "outside the allowed job modules"), ("qf_testjobs:nothing_here", "has no callable"),
     ("not a name", "package.module:function")],
)
def test_a_bad_failure_hook_is_refused_before_the_worker_starts(cli, hook, needle):
    result = cli.run("work", "--stop-when-empty", "--on-failure", hook, check=False)
    assert result.returncode == 2
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_a_stuck_last_try_leaves_its_callbacks_to_the_next_worker(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    job_id = q.push("qf_testjobs:stuck", {"tag": "stuck", "seconds": 60}, timeout=1, tries=1)
    worker = cli.spawn("--sleep", "0.2", "--on-failure", "qf_testjobs:hook")
    assert worker.wait(20) == 1  # the watchdog ended it
    assert failed(sqlite_url) == [] and hooked(r) == []  # the watchdog thread calls no app code ...
    cli.run("work", "--stop-when-empty", "--on-failure", "qf_testjobs:hook")  # ... the next worker does
    [row] = failed(sqlite_url)
    assert row.uuid == job_id and "did not stop" in row.exception
    assert [h["id"] for h in hooked(r)] == [job_id]
    assert r.lrange("started", 0, -1) == [b"stuck"]  # and the job did not run again


def test_a_timeout_on_the_last_try_calls_the_hook_once(cli, r, redis_url, sqlite_url):
    q = Queue.from_url(redis_url)
    job_id = q.push("qf_testjobs:slow", {"tag": "late", "seconds": 5}, timeout=0.5, tries=2)
    cli.run("work", "--stop-when-empty", "--on-failure", "qf_testjobs:hook")
    [row] = failed(sqlite_url)
    assert row.uuid == job_id and "JobTimeout" in row.exception
    [hook] = hooked(r)
    assert hook["id"] == job_id and hook["attempts"] == 2 and hook["error"].startswith("JobTimeout: qf_testjobs:slow ran longer")


def test_a_stuck_failure_callback_is_not_called_again_by_the_next_worker(cli, r, redis_url, sqlite_url):
    """The watchdog ends a callback stuck past the job's timeout; the job was already marked as
    failed with its callbacks called, so it is stored as it was marked, never called back
    again (issue 25, item 3: it was rebuilt from the payload as fetched and looped for ever)."""
    q = Queue.from_url(redis_url)
    job_id = q.push("qf_testjobs:fails_with_a_stuck_callback", {"tag": "s"}, timeout=1, tries=1)
    worker = cli.spawn("--sleep", "0.2")
    assert worker.wait(30) == 1  # the watchdog ended it
    assert "did not stop" in worker.output()
    cli.run("work", "--stop-when-empty", "--sleep", "0.2", timeout=30)
    [row] = failed(sqlite_url)
    assert row.uuid == job_id and "failing on purpose: s" in row.exception
    assert callbacks(r) == ["s|RuntimeError: failing on purpose: s"]
    assert json.loads(row.payload)["errors"][-1]["error"] == "RuntimeError: failing on purpose: s"
