"""`queue schedule` (issue 14): cron entries pushed once per tick fleet-wide, missed ticks
caught up or skipped as each entry says, against a real Redis and real processes."""

from __future__ import annotations

import json
import signal
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis

from conftest import QUEUE_BIN, QueueCli, executed
from servers import wait_for

LAST = "queuefleet:schedule:last"


class SchedulerProcess:
    def __init__(self, cli: QueueCli, path: Path, n: int) -> None:
        self.log = cli.workdir / f"schedule-{n}.log"
        self.proc = subprocess.Popen([QUEUE_BIN, "schedule", "--file", str(path)], env=cli.env, cwd=cli.workdir,
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)

    def output(self) -> str:
        return self.log.read_text()


def schedule_file(tmp_path: Path, entries: list[dict], name: str = "schedule.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"schedule": entries}))
    return path


def queued_ids(r: redis.Redis, queue: str) -> list[str]:
    return sorted(v.decode() for v in r.lrange(f"queuefleet:queue:{queue}", 0, -1))


def new_year(year: int) -> int:
    return int(datetime(year, 1, 1, tzinfo=timezone.utc).timestamp())


def test_two_schedulers_at_once_push_each_tick_once(cli, r, tmp_path):
    path = schedule_file(tmp_path, [{"name": "every2", "cron": "*/2 * * * * *", "job": "qf_testjobs:record",
                                     "data": {"tag": "tick"}, "queue": "sched"}])
    a, b = SchedulerProcess(cli, path, 1), SchedulerProcess(cli, path, 2)
    try:
        wait_for(lambda: len(queued_ids(r, "sched")) >= 4, timeout=15, interval=0.1, what="four ticks")
    finally:
        assert a.stop() == 0 and b.stop() == 0
    ids = queued_ids(r, "sched")
    ticks = sorted(int(i.rsplit(".", 1)[1]) for i in ids)
    assert all(i.startswith("schedule.every2.") for i in ids)
    assert all(t % 2 == 0 for t in ticks) and ticks == list(range(ticks[0], ticks[-1] + 2, 2))  # no tick twice, none skipped
    lines = (a.output() + b.output()).count("SCHEDULED")
    assert lines == len(ids)
    assert "UTC on the Redis server's clock" in a.output()
    # The pushed jobs are ordinary jobs: a worker runs them with their data.
    cli.run("work", "--queue", "sched", "--stop-when-empty")
    assert executed(r) == ["tick"] * len(ids)


def test_a_missed_tick_is_caught_up_once_or_skipped_as_the_entry_says(cli, r, tmp_path):
    year = datetime.now(timezone.utc).year
    yearly = {"cron": "0 0 0 1 1 *", "job": "qf_testjobs:record", "data": {"tag": "yearly"}, "queue": "sched"}
    path = schedule_file(tmp_path, [{"name": "catchup", "catch_up": True, **yearly}, {"name": "skip", **yearly}])
    # As if the last scheduler ran two years ago: the ticks of the last two New Years were missed.
    r.hset(LAST, mapping={"catchup": new_year(year - 2) * 1000, "skip": new_year(year - 2) * 1000})
    s = SchedulerProcess(cli, path, 1)
    try:
        wait_for(lambda: int(r.hget(LAST, "skip") or 0) == new_year(year) * 1000, what="the missed ticks handled")
        wait_for(lambda: queued_ids(r, "sched"), what="the catch-up job")
    finally:
        assert s.stop() == 0
    assert queued_ids(r, "sched") == [f"schedule.catchup.{new_year(year)}"]  # one job, for the latest tick
    assert int(r.hget(LAST, "catchup")) == new_year(year) * 1000
    out = s.output()
    assert "catchup: pushed one job for the tick of" in out and "1 earlier tick(s) were missed" in out
    assert "skip: the tick of" in out and "is skipped (catch_up: false), with 1 earlier one(s)" in out


def test_a_new_entry_never_fires_for_ticks_before_it_was_seen(cli, r, tmp_path):
    path = schedule_file(tmp_path, [{"name": "yearly", "cron": "0 0 0 1 1 *", "job": "qf_testjobs:record",
                                     "catch_up": True, "queue": "sched"}])
    s = SchedulerProcess(cli, path, 1)
    try:
        wait_for(lambda: r.hget(LAST, "yearly"), what="the entry's watermark")
    finally:
        assert s.stop() == 0
    assert queued_ids(r, "sched") == []
    status = json.loads(cli.run("status", "--json").stdout)["schedule"]["yearly"]
    assert status["cron"] == "0 0 0 1 1 *" and status["next"] == new_year(datetime.now(timezone.utc).year + 1)
    assert "Schedule (UTC" in cli.run("status").stdout


def test_schedule_list_prints_the_next_runs(cli, tmp_path):
    path = tmp_path / "schedule.toml"
    path.write_text('[[schedule]]\nname = "nightly"\ncron = "30 2 * * *"\njob = "myapp.jobs:report"\ndata = {day = "yesterday"}\n')
    out = cli.run("schedule", "--file", str(path), "--list").stdout
    assert out.startswith("nightly: 30 2 * * * -> myapp.jobs:report on default (skip missed); next: ")
    assert out.count("02:30:00 UTC") == 3


@pytest.mark.parametrize(
    ("content", "name", "needle"),
    [
        ([{"name": "a", "cron": "61 * * * *", "job": "m:f"}], "s.json", "entry 1 ('a'): cron '61 * * * *'"),
        ([{"name": "a", "cron": "* * * * *", "job": "m:f"}, {"name": "a", "cron": "* * * * *", "job": "m:f"}], "s.json",
         "entry names must be unique, repeated: a"),
        ([{"name": "a", "cron": "* * * * *", "job": "m:f", "every": 5}], "s.json", "unknown field(s) every"),
        ([{"name": "a", "cron": "* * * * *", "job": "not a job"}], "s.json", "job must look like"),
        ([{"name": "a b", "cron": "* * * * *", "job": "m:f"}], "s.json", "name must be"),
        ([{"name": "a", "cron": "* * * * *", "job": "m:f", "tries": -1}], "s.json", "tries must be"),
        ([{"name": "a", "cron": "* * * * *", "job": "m:f", "catch_up": "yes"}], "s.json", "catch_up must be true or false"),
        ('[{"name": "a", "cron": "* * * * *", "job": "m:f", "data": NaN}]', "s.json", "NaN is not a number JSON allows"),
        ('[[schedule]]\nname = "a"\ncron = "* * * * *"\njob = "m:f"\ndata = nan\n', "s.toml", "JSON"),
        (None, "missing.json", "cannot read schedule file"),
    ],
    ids=["cron", "duplicate", "unknown-field", "job", "name", "tries", "catch-up", "nan", "toml-nan", "missing"],
)
def test_a_bad_schedule_file_is_a_usage_error(cli, r, tmp_path, content, name, needle):
    path = tmp_path / name
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    result = cli.run("schedule", "--file", str(path), check=False)
    assert result.returncode == 2
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert r.keys("queuefleet:*") == []


def test_the_scheduler_follows_restart_signals_like_a_worker(cli, r, tmp_path):
    path = schedule_file(tmp_path, [{"name": "yearly", "cron": "0 0 0 1 1 *", "job": "qf_testjobs:record"}])
    s = SchedulerProcess(cli, path, 1)
    wait_for(lambda: r.hget(LAST, "yearly"), what="the scheduler to run")
    cli.run("restart")
    assert s.proc.wait(10) == 0  # supervisor starts it again, on the release `current` points at
    assert "scheduler exits for supervisor to restart it: restart signal for all workers" in s.output()


def test_a_scheduler_started_while_redis_is_down_waits_for_it(own_redis, sqlite_url, tmp_path):
    cli = QueueCli(own_redis.url, sqlite_url, tmp_path)
    path = schedule_file(tmp_path, [{"name": "every", "cron": "* * * * * *", "job": "qf_testjobs:record", "queue": "s"}])
    own_redis.stop()
    s = SchedulerProcess(cli, path, 1)
    try:
        wait_for(lambda: "lost Redis" in s.output(), what="the outage to be logged")
        assert s.proc.poll() is None  # waits, does not exit for supervisor to give up on it
        own_redis.start()
        r = redis.Redis.from_url(own_redis.url)
        wait_for(lambda: r.llen("queuefleet:queue:s") > 0, what="a tick pushed once Redis is back")
    finally:
        assert s.stop() == 0
    assert s.output().count("lost Redis") == 1 and "Redis is back" in s.output()


def test_entries_no_scheduler_announces_any_more_are_forgotten_after_a_day(cli, r, tmp_path):
    import time

    entries = "queuefleet:schedule:entries"
    r.hset(entries, mapping={"removed-last-week": json.dumps({"cron": "* * * * *", "seen": time.time() - 7 * 86400}),
                             "removed-an-hour-ago": json.dumps({"cron": "* * * * *", "seen": time.time() - 3600}),
                             "garbage": "not json"})
    path = schedule_file(tmp_path, [{"name": "yearly", "cron": "0 0 0 1 1 *", "job": "qf_testjobs:record"}])
    s = SchedulerProcess(cli, path, 1)
    try:
        wait_for(lambda: r.hexists(entries, "yearly"), what="the scheduler's announcement")
    finally:
        assert s.stop() == 0
    assert sorted(k.decode() for k in r.hkeys(entries)) == ["removed-an-hour-ago", "yearly"]
