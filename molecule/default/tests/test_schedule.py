"""The scheduler program the queue_worker role runs from queue_worker_schedule (issue 14):
it runs under supervisor, its schedule file holds what the inventory says, and a tick
pushes a job that a worker runs."""

from __future__ import annotations

import calendar
import json
import time

from test_workers import in_app  # Python in the container, with the release and a Redis client `r`

QUEUE = "/opt/queuefleet/current/bin/queue --env-file /opt/queuefleet/shared/queuefleet.env"
SCHEDULE = "/opt/queuefleet/shared/schedule.json"


def test_the_scheduler_runs_under_supervisor_with_the_inventorys_schedule(host):
    assert "RUNNING" in host.check_output("supervisorctl status queuefleet_scheduler")
    f = host.file(SCHEDULE)
    assert (f.user, f.group, f.mode) == ("root", "queuefleet", 0o640)
    [entry] = json.loads(f.content_string)["schedule"]
    assert entry["name"] == "new-year" and entry["cron"] == "0 0 1 1 *" and entry["catch_up"] is True
    listed = host.check_output(f"{QUEUE} schedule --file {SCHEDULE} --list")
    assert listed.startswith("new-year: 0 0 1 1 * -> queuefleet_demo.jobs:fast on default (catch up); next: ")


def test_a_missed_tick_is_pushed_once_and_run_by_a_worker(host):
    # As if no scheduler had run since two New Years ago: the entry catches up with one job.
    year = time.gmtime().tm_year
    watermark = calendar.timegm((year - 2, 1, 1, 0, 0, 0)) * 1000
    in_app(host, f"r.delete('demo:executed'); r.hset('queuefleet:schedule:last', 'new-year', {watermark})")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        executed = json.loads(in_app(host, "print(json.dumps([e.decode() for e in r.lrange('demo:executed', 0, -1)]))"))
        if executed:
            break
        time.sleep(0.5)
    time.sleep(2)  # a second push would have run by now
    executed = json.loads(in_app(host, "print(json.dumps([e.decode() for e in r.lrange('demo:executed', 0, -1)]))"))
    assert [e.split("@")[0] for e in executed] == ["scheduled-new-year"]
    log = host.file("/var/log/queuefleet/queuefleet_scheduler.log").content_string
    assert "pushed one job for the tick of" in log and "earlier tick(s) were missed" in log
    status = json.loads(host.check_output(f"{QUEUE} status --json"))["schedule"]["new-year"]
    assert status["cron"] == "0 0 1 1 *" and status["next"] > time.time()
