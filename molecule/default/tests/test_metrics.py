"""The exporter the queue_worker role runs (issue 13): under supervisor, on loopback only,
and its numbers are the fleet's: live workers per pool, the release, known work counted."""

from __future__ import annotations

import json
import time

from test_workers import in_app  # Python in the container, with the release and a Redis client `r`

SCRAPE = r"""
import urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen("http://127.0.0.1:9818/metrics", timeout=10).read().decode()
print(json.dumps([[s.name, s.labels, s.value] for f in text_string_to_metric_families(text) for s in f.samples]))
"""


def scrape(host) -> list[tuple[str, dict, float]]:
    return [tuple(s) for s in json.loads(in_app(host, SCRAPE))]


def total(samples, name: str, **labels: str) -> float:
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == x for k, x in labels.items()))


def test_the_exporter_runs_under_supervisor(host):  # on loopback only: test_default.py
    assert "RUNNING" in host.check_output("supervisorctl status queuefleet_exporter")
    conf = host.file("/etc/supervisor/conf.d/queuefleet_exporter.conf")
    assert (conf.user, conf.mode) == ("root", 0o644)
    assert "--pool default=2 --pool slow=1" in conf.content_string


def test_the_exporter_reports_this_hosts_pools_and_release(host):
    hostname = host.check_output("hostname")
    release = host.file("/opt/queuefleet/current/RELEASE").content_string.strip()
    samples = scrape(host)
    assert total(samples, "queuefleet_redis_up") == 1 and total(samples, "queuefleet_database_up") == 1
    for pool, numprocs in (("default", 2), ("slow", 1)):
        assert total(samples, "queuefleet_pool_expected_workers", host=hostname, pool=pool) == numprocs
        assert total(samples, "queuefleet_workers", host=hostname, pool=pool) == numprocs
        assert total(samples, "queuefleet_worker_info", host=hostname, pool=pool, release=release) == numprocs
    assert total(samples, "queuefleet_release_info", host=hostname, release=release) == 1
    assert total(samples, "queuefleet_backlog_threshold", queue="default") == 1000
    assert total(samples, "queuefleet_oldest_job_age_threshold_seconds", queue="default") == 300


def settled(host) -> list:
    """A scrape taken once nothing is queued or running and the done counters stand still
    (jobs of earlier tests may still be settling: their acks ride the workers' next call)."""
    previous = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        samples = scrape(host)
        busy = sum(v for n, ls, v in samples if n == "queuefleet_jobs" and ls["state"] in ("ready", "reserved"))
        done = total(samples, "queuefleet_jobs_total")
        if busy == 0 and done == previous:
            return samples
        previous = done
        time.sleep(1)
    raise AssertionError("the queues never settled")


def test_known_work_is_counted(host):
    before = settled(host)
    done = total(before, "queuefleet_jobs_total", queue="default", job="queuefleet_demo.jobs:fast", outcome="done")
    failed = total(before, "queuefleet_jobs_total", queue="default", job="queuefleet_demo.jobs:fail", outcome="failed")
    rows = total(before, "queuefleet_failed_jobs")
    failing = in_app(host, "from queuefleet import Queue\n"
                           "q = Queue.from_url(os.environ['QUEUEFLEET_REDIS_URL'])\n"
                           "q.push_many([('queuefleet_demo.jobs:fast', {'id': f'metrics-{i}'}) for i in range(20)])\n"
                           "print(q.push('queuefleet_demo.jobs:fail', {'id': 'metrics-fail'}, tries=1))")
    after = settled(host)
    assert total(after, "queuefleet_jobs_total", queue="default", job="queuefleet_demo.jobs:fast", outcome="done") == done + 20
    assert total(after, "queuefleet_jobs_total", queue="default", job="queuefleet_demo.jobs:fail", outcome="failed") == failed + 1
    assert total(after, "queuefleet_failed_jobs") == rows + 1
    assert total(after, "queuefleet_job_duration_seconds_count", queue="default", job="queuefleet_demo.jobs:fast") >= 20
    # Leave the failed-jobs table as the other tests expect it.
    host.check_output(f"/opt/queuefleet/current/bin/queue --env-file /opt/queuefleet/shared/queuefleet.env forget {failing}")


DASHBOARD = r"""
import http.cookiejar, urllib.parse, urllib.request
token = [l.split("=", 1)[1].strip() for l in open("/opt/queuefleet/shared/queuefleet.env") if l.startswith("QUEUEFLEET_DASHBOARD_TOKEN=")][0]
base = "http://127.0.0.1:9819"
get = lambda path: urllib.request.urlopen(base + path, timeout=10).read().decode()
# A browser's session: POST the token to /login once, then the cookie (never the token) unlocks retry.
session = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
login = session.open(urllib.request.Request(base + "/login", data=urllib.parse.urlencode({"token": token}).encode(),
                                            headers={"Origin": base}), timeout=10)
print(json.dumps({"health": get("/healthz"), "overview": json.loads(get("/api/overview")),
                  "page": login.read().decode(), "landed_on": login.geturl(), "anonymous": get("/")}))
"""


def test_the_dashboard_serves_the_fleet_with_retry_behind_the_token(host):  # loopback only: test_default.py
    assert "RUNNING" in host.check_output("supervisorctl status queuefleet_dashboard")
    env = host.file("/opt/queuefleet/shared/queuefleet.env")
    assert (env.user, env.group, env.mode) == ("root", "queuefleet", 0o640)  # the token lives only here
    token = host.check_output("sed -n 's/^QUEUEFLEET_DASHBOARD_TOKEN=//p' /opt/queuefleet/shared/queuefleet.env")
    assert len(token) >= 20
    assert token not in host.file("/etc/supervisor/conf.d/queuefleet_dashboard.conf").content_string
    seen = json.loads(in_app(host, DASHBOARD))
    assert seen["health"].strip() == "ok"
    assert not seen["overview"]["errors"]
    assert len(seen["overview"]["workers"]) == 3
    assert {p["pool"] for p in seen["overview"]["pools"]} == {"default", "slow"}
    assert "retry and forget allowed" in seen["page"] and "read-only" in seen["anonymous"]
    assert token not in seen["landed_on"] and token not in seen["page"], "the token is never in a URL or the page"
