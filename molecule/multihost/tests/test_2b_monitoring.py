"""Prometheus on the monitoring host (issue 13): it scrapes every worker host's exporter,
loads the fleet's alert rules, a backlog made on purpose fires its alert, every query of
the Grafana dashboard evaluates; the exporters answer the monitoring host only."""

from __future__ import annotations

import json
import urllib.parse

import pytest
import yaml

from mh import INVENTORY, PRIVATE, PROCS_PER_HOST, PROJECT, QUEUE, REDIS, W1, W2, WORKERS, app_py, put, sh, wait_for

pytestmark = pytest.mark.skipif(not INVENTORY, reason="runs inside molecule verify")

MONITOR = REDIS  # the monitoring group's host in this scenario
DASHBOARD = PROJECT / "roles/monitoring/files/grafana/queuefleet.json"
QUERY = r"""
import json, sys, urllib.parse, urllib.request
url = "http://127.0.0.1:9090/api/v1/" + sys.argv[1]
with urllib.request.urlopen(url, timeout=10) as reply:
    print(reply.read().decode())
"""


def prometheus(path: str) -> dict:
    put(MONITOR, "/tmp/prom_query.py", QUERY)
    reply = json.loads(sh(MONITOR, f"python3 /tmp/prom_query.py '{path}'").stdout)
    assert reply["status"] == "success", reply
    return reply["data"]


def query(promql: str) -> list[dict]:
    return prometheus("query?" + urllib.parse.urlencode({"query": promql}))["result"]


def http_status(container: str, url: str) -> int:
    code = ("import urllib.request, urllib.error\n"
            f"try:\n    print(urllib.request.urlopen({url!r}, timeout=5).status)\n"
            "except urllib.error.HTTPError as e:\n    print(e.code)\n")
    put(container, "/tmp/http_status.py", code)
    return int(sh(container, "python3 /tmp/http_status.py").stdout.strip())


def test_prometheus_runs_on_loopback_with_the_fleets_rules():
    assert sh(MONITOR, "systemctl is-active prometheus").stdout.strip() == "active"
    assert "127.0.0.1:9090" in sh(MONITOR, "cat /etc/default/prometheus").stdout
    [group] = [g for g in prometheus("rules")["groups"] if g["name"] == "queuefleet"]
    names = {r["name"] for r in group["rules"]}
    shipped = {rule["alert"] for g in yaml.safe_load((PROJECT / "roles/monitoring/files/queuefleet.rules.yml").read_text())["groups"]
               for rule in g["rules"] if "alert" in rule}
    assert {"QueuefleetBacklogHigh", "QueuefleetPoolUnderstaffed", "QueuefleetSentinelQuorumLost"} <= names == shipped
    # The fleet is healthy: a replica connected, the sentinels agree, so none of the replication alerts fires.
    firing = {a["labels"]["alertname"] for a in prometheus("alerts")["alerts"] if a["state"] == "firing"}
    assert not firing & {"QueuefleetRedisNoReplica", "QueuefleetSentinelQuorumLost", "QueuefleetSentinelMasterUnknown"}, firing


def test_prometheus_sees_every_worker_hosts_metrics():
    def scraped() -> list[dict]:
        up = query('up{job="queuefleet"} == 1')
        return up if len(up) == len(WORKERS) else []

    up = wait_for(scraped, timeout=60, what="both exporters up in Prometheus")
    assert sorted(s["metric"]["instance"] for s in up) == sorted(f"{PRIVATE[w]}:9818" for w in WORKERS)
    for worker in WORKERS:
        host = sh(worker, "hostname").stdout.strip()
        live = wait_for(lambda: query(f'sum(queuefleet_workers{{host="{host}"}})'), timeout=30, what=f"{host}'s workers")
        assert float(live[0]["value"][1]) == PROCS_PER_HOST
        [expected] = query(f'queuefleet_pool_expected_workers{{host="{host}"}}')
        assert float(expected["value"][1]) == PROCS_PER_HOST


def test_an_exporter_answers_the_monitoring_host_only():
    """Its own allow-list, beside the firewall (test_1_security: other hosts are refused before it):
    the worker host itself comes in over loopback, which the firewall lets through, and gets a 403."""
    assert http_status(MONITOR, f"http://{PRIVATE[W2]}:9818/metrics") == 200
    assert http_status(W2, f"http://{PRIVATE[W2]}:9818/metrics") == 403


def test_a_backlog_made_on_purpose_fires_its_alert():
    # No pool serves mh-backlog; its threshold in the inventory is 5 ready jobs.
    app_py(W1, "from queuefleet import Queue\n"
               "q = Queue.from_url(os.environ['QUEUEFLEET_REDIS_URL'])\n"
               "q.push_many([('queuefleet_demo.jobs:fast', {'id': f'backlog-{i}'}) for i in range(8)], queue='mh-backlog')")
    try:
        firing = wait_for(lambda: query('ALERTS{alertname="QueuefleetBacklogHigh",alertstate="firing",queue="mh-backlog"}'),
                          timeout=60, what="QueuefleetBacklogHigh firing for mh-backlog")
        assert firing[0]["metric"]["severity"] == "warning"
        [alert] = [a for a in prometheus("alerts")["alerts"]
                   if a["labels"]["alertname"] == "QueuefleetBacklogHigh" and a["labels"]["queue"] == "mh-backlog"]
        assert alert["annotations"]["summary"] == "Queue mh-backlog: 8 ready jobs, over its backlog threshold"
    finally:
        sh(W1, f"{QUEUE} clear mh-backlog --force")
    wait_for(lambda: not query('ALERTS{alertname="QueuefleetBacklogHigh",queue="mh-backlog"}'), timeout=60,
             what="the alert to resolve once the backlog is gone")


def test_every_grafana_dashboard_query_evaluates_against_the_real_prometheus():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    answered = 0
    # This fleet has no autoscaled pool: those panels' queries must run, but have no data to return.
    expected = [expr for expr in exprs if "queuefleet_autoscale_" not in expr]
    for expr in exprs:
        result = query(expr)  # asserts status success: the query parses and runs
        answered += bool(result) and expr in expected
    # The fleet is running: all but the rate-based panels (which need two scrapes of a change) have data.
    assert answered >= len(expected) - 4, f"only {answered} of {len(expected)} dashboard queries returned data"
