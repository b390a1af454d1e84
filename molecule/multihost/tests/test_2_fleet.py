"""The fleet on two worker hosts (issue 6): `queue status` on either host
shows the workers of both, both drain one shared queue, and a rolling code
update (one host at a time) restarts every worker exactly once per release,
under load, with no secret in the -vvv output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
import yaml

from mh import (INVENTORY, PROCS_PER_HOST, PROJECT, PY, QUEUE, SCENARIO, STATE, W1, WORKERS, agent, install_agent,
                playbook, secret, sh, starting_counts, supervisor_pids, wait_for)

pytestmark = pytest.mark.skipif(not INVENTORY, reason="runs inside molecule verify")

TOTAL = PROCS_PER_HOST * len(WORKERS)
BASE_APP = PROJECT / "examples" / "demo-app"


def status(container: str) -> dict:
    return json.loads(sh(container, f"{QUEUE} status --json").stdout)


def release_of(container: str) -> str:
    return sh(container, "readlink /opt/queuefleet/current").stdout.strip().rsplit("/", 1)[-1]


@pytest.fixture(scope="module", autouse=True)
def _agent():
    install_agent(W1)


@pytest.mark.parametrize("worker", WORKERS)
def test_status_on_either_host_shows_the_workers_of_both(worker):
    workers = wait_for(lambda: (w := status(worker)["workers"]) and len(w) == TOTAL and w, 30, f"{TOTAL} workers")
    hosts = sorted(w["host"] for w in workers)
    assert hosts == sorted(h for h in WORKERS for _ in range(PROCS_PER_HOST)), hosts


def test_a_mixed_fleet_runs_one_release_on_two_pythons():
    """worker1 is Debian 12 (Python 3.11), worker2 Debian 13 (3.13): each installed the release from
    the wheelhouse of its own interpreter, and both run, and report, the same release."""
    w1, w2 = WORKERS
    assert sh(w1, "cat /etc/debian_version").stdout.startswith("12."), "worker1 should be Debian 12"
    assert sh(w2, "cat /etc/debian_version").stdout.startswith("13."), "worker2 should be Debian 13"
    version = "/opt/queuefleet/current/bin/python -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'"
    assert sh(w1, version).stdout.strip() == "3.11"
    assert sh(w2, version).stdout.strip() == "3.13"
    sqlalchemy = "ls /opt/queuefleet/current/lib/python3.*/site-packages/sqlalchemy/cyextension/ | grep -c cpython-3"
    assert int(sh(w1, sqlalchemy).stdout) > 0 and int(sh(w2, sqlalchemy).stdout) > 0, "compiled wheels for each ABI"
    assert release_of(w1) == release_of(w2)
    reported = {w["release"] for w in status(w1)["workers"]}
    assert reported == {release_of(w1)}, reported


def processed_by_host() -> dict[str, int]:
    totals = dict.fromkeys(WORKERS, 0)
    for w in status(W1)["workers"]:
        totals[w["host"]] += int(w["processed"])
    return totals


def drained(tag: str, ids: list[str]):
    t = agent("tally", tag)
    queues_empty = all(not any(v.values()) for v in t["queues"].values())
    return t if queues_empty and set(ids) <= set(t["executed"]) else None


def test_both_hosts_drain_one_shared_queue():
    agent("reset")
    before = processed_by_host()
    out = agent("produce", "shared", "400", "400", "0")
    ids = [i for i, _ in out["jobs"]]
    t = wait_for(lambda: drained("shared", ids), 60, "the shared queue to drain")
    time.sleep(2.5)  # one heartbeat period, so `processed` is current
    after = processed_by_host()
    delta = {h: after[h] - before[h] for h in WORKERS}
    assert all(d > 0 for d in delta.values()), f"not every host took jobs from the shared queue: {delta}"
    assert sum(delta.values()) >= len(ids)
    assert len(t["executed"]) == len(ids), "a job ran twice without any fault"
    (STATE / "multihost-shared.json").write_text(json.dumps({"jobs": len(ids), "per_host": delta}))


def new_release_src(tmp_path, version: str):
    src = tmp_path / "demo-app"
    shutil.copytree(BASE_APP, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    init = src / "src" / "queuefleet_demo" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "1.0.0"', f'__version__ = "{version}"'))
    return src


def scenario_app_packages() -> list:
    config = yaml.safe_load((SCENARIO / "molecule.yml").read_text())
    packages = config["provisioner"]["inventory"]["group_vars"]["multihost"]["queue_worker_app_packages"]
    return [dict(p, src=os.path.expandvars(p["src"])) for p in packages]


def rolling_deploy(tag: str, app_packages: list, *args: str) -> dict:
    """Deploy the workers under a steady producer; returns the figures."""
    before = {w: starting_counts(w) for w in WORKERS}
    pids_before = {w: supervisor_pids(w) for w in WORKERS}
    release_before = release_of(W1)
    agent("reset")
    producer = subprocess.Popen(["docker", "exec", W1, PY, "/tmp/mh_agent.py", "produce", tag, "1200", "20", "0"],
                                stdout=subprocess.PIPE, text=True)
    started = time.monotonic()
    # The scenario's converge: the Redis, MariaDB and worker plays (all of them handle secrets).
    # queue_worker_serial as an extra var: `serial` is templated before any host is
    # known, so inventory variables (group_vars) do not reach it.
    out = playbook("molecule/multihost/converge.yml", *args,
                   extra={"queue_worker_app_packages": app_packages, "queue_worker_serial": 1})
    deploy_seconds = round(time.monotonic() - started, 1)
    release = release_of(W1)
    assert release != release_before and release_of(WORKERS[1]) == release
    wait_for(lambda: (w := status(W1)["workers"]) and len(w) == TOTAL and all(x["release"] == release for x in w),
             60, f"every worker on {release}")
    producer.terminate()
    producer.wait(30)
    after = {w: starting_counts(w) for w in WORKERS}
    restarts = {w: {p: after[w].get(p, 0) - before[w].get(p, 0) for p in after[w]} for w in WORKERS}
    pids_after = {w: supervisor_pids(w) for w in WORKERS}
    # Every job pushed so far ran exactly once, none failed.
    n = agent("tally", tag)["pushed"]
    assert n > 100, f"the producer pushed only {n} jobs during the deploy"
    wait_for(lambda: set(f"{tag}-{i}" for i in range(n)) <= set(agent("tally", tag)["executed"]), 60, "the jobs to drain")
    t = agent("tally", tag)
    execs = [e for e in t["executed"] if int(e.rsplit("-", 1)[1]) < n]
    return {"output": out, "restarts": restarts, "pids_before": pids_before, "pids_after": pids_after,
            "release": release, "jobs": n, "duplicates": len(execs) - len(set(execs)), "failed": len(t["failed"]),
            "deploy_seconds": deploy_seconds}


def check_rolling(r: dict) -> None:
    for worker in WORKERS:
        counts = r["restarts"][worker]
        assert len(counts) == PROCS_PER_HOST, counts
        assert all(n == 1 for n in counts.values()), f"{worker}: restarts per process {counts} (expected exactly 1)"
        assert not set(r["pids_before"][worker].values()) & set(r["pids_after"][worker].values())
    assert r["failed"] == 0 and r["duplicates"] == 0, r
    # The worker play's batches, up to the play that follows it in converge.yml.
    workers_play = r["output"].split("PLAY [Worker hosts]", 1)[1].split("PLAY [Monitoring]", 1)[0]
    serial = "serial" in (PROJECT / "playbooks" / "workers.yml").read_text()
    if serial:
        # Two batches of one host each: the play's first task runs twice, one host each time.
        first_task = "TASK [Gather facts unless an earlier play of this run did]"
        assert workers_play.count(first_task) == len(WORKERS), "the worker play did not run host by host"


def test_rolling_release_restarts_each_worker_once_and_leaks_no_secret(tmp_path):
    app = [dict(scenario_app_packages()[0], src=str(new_release_src(tmp_path, "2.0.0")))]
    r = rolling_deploy("roll2", app, "-vvv")
    check_rolling(r)
    leaks = {name: r["output"].count(secret(name)) for name in ("redis", "mysql_queuefleet")}
    assert not any(leaks.values()), f"secrets in the -vvv deploy output (occurrences): {leaks}"
    (STATE / "multihost-deploy-vvv.log").write_text(r["output"])
    (STATE / "multihost-rolling.json").write_text(json.dumps({k: v for k, v in r.items() if k != "output"}))


def test_back_to_release_1_restarts_each_worker_once_again():
    """Also restores the converged state, so the check-mode run that follows changes nothing."""
    r = rolling_deploy("roll1", scenario_app_packages())
    check_rolling(r)
