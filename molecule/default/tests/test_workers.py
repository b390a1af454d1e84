"""The operator's everyday cycle on the converged host, in order (issue 4):

1. release 1 runs every pool with numprocs processes;
2. changing one pool's numprocs restarts that pool only;
3. a new release under a continuous producer: every job runs, none fails,
   every worker reports release 2;
4. rollback: every worker reports release 1;
5. removing a pool stops its processes and removes its config;
and finally the converged state is restored, so the check-mode run that
follows (scripts/molecule-test.sh) still sees nothing to change.

The steps share state on purpose (each builds on the previous one), so they
run as one test module in file order.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", "")
SCENARIO = Path(__file__).resolve().parents[1]
QUEUE = "/opt/queuefleet/current/bin/queue --env-file /opt/queuefleet/shared/queuefleet.env"

pytestmark = pytest.mark.skipif(not INVENTORY, reason="runs inside molecule verify")


def scenario_vars() -> dict:
    config = yaml.safe_load((SCENARIO / "molecule.yml").read_text())
    return config["provisioner"]["inventory"]["group_vars"]["molecule"]


BASE_POOLS = scenario_vars()["queue_worker_pools"]
BASE_APP = PROJECT / "examples" / "demo-app"


def deploy(playbook: str = "playbooks/workers.yml", **extra) -> str:
    """Run a playbook against the molecule instance with extra vars; returns its output."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(extra, f)
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(PROJECT / "roles"), "ANSIBLE_FORCE_COLOR": "0"}
    result = subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, str(PROJECT / playbook), "-l", "molecule", "-e", f"@{f.name}"],
        capture_output=True, text=True, env=env, cwd=PROJECT, timeout=900,
    )
    os.unlink(f.name)
    assert result.returncode == 0, f"{playbook} failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def app_packages(src: Path) -> list[dict]:
    return [{"name": "queuefleet-demo", "src": str(src)}]


def pool_pids(host) -> dict[str, dict[str, int]]:
    """{pool: {process name: pid}} of the RUNNING queuefleet programs."""
    out = host.run("supervisorctl status").stdout
    pools: dict[str, dict[str, int]] = {}
    for line in out.splitlines():
        parts = line.split()
        if not parts or not parts[0].startswith("queuefleet-"):
            continue
        group, _, process = parts[0].partition(":")
        assert parts[1] == "RUNNING", line
        pools.setdefault(group.removeprefix("queuefleet-"), {})[process] = int(parts[3].rstrip(","))
    return pools


def status(host) -> dict:
    return json.loads(host.check_output(f"{QUEUE} status --json"))


def current_release(host) -> str:
    return host.check_output("readlink /opt/queuefleet/current").rsplit("/", 1)[-1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


APP_PYTHON = r"""
import json, os
for line in open("/opt/queuefleet/shared/queuefleet.env"):
    if "=" in line and not line.startswith("#"):
        k, _, v = line.strip().partition("=")
        os.environ.setdefault(k, v)
import redis
r = redis.Redis.from_url(os.environ["QUEUEFLEET_REDIS_URL"])
"""


def in_app(host, code: str) -> str:
    """Run Python in the container with the deployed release and a Redis client `r`."""
    host.run(f"cat > /tmp/in_app.py <<'EOF'\n{APP_PYTHON}\n{code}\nEOF")
    out = host.run("/opt/queuefleet/current/bin/python /tmp/in_app.py")
    assert out.rc == 0, out.stderr
    return out.stdout.strip()


def all_workers_on(host, release: str, count: int) -> bool:
    workers = status(host)["workers"]
    return len(workers) == count and all(w["release"] == release for w in workers)


@pytest.fixture(scope="module")
def release2_src(tmp_path_factory):
    """The demo app with a code change: what a developer ships as the next release."""
    src = tmp_path_factory.mktemp("app") / "demo-app"
    shutil.copytree(BASE_APP, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    init = src / "src" / "queuefleet_demo" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "1.0.0"', '__version__ = "2.0.0"'))
    return src


STATE: dict = {}


def test_1_release_1_runs_every_pool_with_numprocs(host):
    deploy(queue_worker_app_packages=app_packages(BASE_APP), queue_worker_pools=BASE_POOLS)
    STATE["release1"] = release1 = current_release(host)
    pids = pool_pids(host)
    assert {pool: len(procs) for pool, procs in pids.items()} == {p["name"]: p["numprocs"] for p in BASE_POOLS}
    total = sum(p["numprocs"] for p in BASE_POOLS)
    wait_for(lambda: all_workers_on(host, release1, total), 30, f"{total} workers on {release1}")
    # (Idempotence of the plain deploy is molecule's own idempotence step.)


def test_2_numprocs_change_restarts_only_that_pool(host):
    before = pool_pids(host)
    pools = [dict(p, numprocs=2) if p["name"] == "slow" else p for p in BASE_POOLS]
    deploy(queue_worker_app_packages=app_packages(BASE_APP), queue_worker_pools=pools)
    after = pool_pids(host)
    assert after["default"] == before["default"], "the unchanged pool was restarted"
    assert len(after["slow"]) == 2
    assert not set(after["slow"].values()) & set(before["slow"].values()), "the changed pool kept an old process"
    STATE["pools"] = pools


PRODUCER = r'''
import os, sys, time
for line in open("/opt/queuefleet/shared/queuefleet.env"):
    if "=" in line and not line.startswith("#"):
        k, _, v = line.strip().partition("=")
        os.environ.setdefault(k, v)
from queuefleet import Queue
q = Queue.from_url(os.environ["QUEUEFLEET_REDIS_URL"])
q.redis.delete("demo:executed", "producer:count", "producer:done")
i = 0
while not os.path.exists("/tmp/producer.stop"):
    q.push("queuefleet_demo.jobs:fast", {"id": f"p{i}"}, queue="default")
    i += 1
    q.redis.set("producer:count", i)
    time.sleep(0.02)
q.redis.set("producer:done", i)
'''


def test_3_new_release_under_load_loses_no_job(host, release2_src):
    pools = STATE.get("pools", BASE_POOLS)
    total = sum(p["numprocs"] for p in pools)
    host.run("rm -f /tmp/producer.stop")
    host.run(f"cat > /tmp/producer.py <<'EOF'\n{PRODUCER}\nEOF")
    failed_before = len(json.loads(host.check_output(f"{QUEUE} failed --json")))
    host.run("setsid nohup /opt/queuefleet/current/bin/python /tmp/producer.py >/tmp/producer.log 2>&1 &")
    wait_for(lambda: int(in_app(host, "print(int(r.get('producer:count') or 0))") or 0) > 20, 30, "the producer to start")

    deploy(queue_worker_app_packages=app_packages(release2_src), queue_worker_pools=pools)
    release2 = current_release(host)
    assert release2 != STATE["release1"]
    STATE["release2"] = release2
    time.sleep(2)  # keep producing onto the new release for a moment
    host.run("touch /tmp/producer.stop")

    def counts():
        return json.loads(in_app(host, "print(json.dumps({'done': int(r.get('producer:done') or -1), "
                                       "'executed': [e.decode() for e in r.lrange('demo:executed', 0, -1)]}))"))

    def drained():
        c = counts()
        if c["done"] < 0:
            return None
        ran = {e.split("@")[0] for e in c["executed"]}
        return c if all(f"p{i}" in ran for i in range(c["done"])) else None

    result = wait_for(drained, 60, "every pushed job to run")
    pushed = result["done"]
    executions = result["executed"]
    ran = [e.split("@")[0] for e in executions]
    print(f"producer pushed {pushed} jobs during the deploy; {len(executions)} executions, "
          f"{len(ran) - len(set(ran))} duplicates; versions: "
          f"{sorted({e.split('@')[1] for e in executions})}")
    assert set(ran) == {f"p{i}" for i in range(pushed)}  # none lost
    assert len(ran) == len(set(ran)), "a job ran twice while its worker was alive"
    assert any(e.endswith("@2.0.0") for e in executions), "release 2 never ran a job"
    assert len(json.loads(host.check_output(f"{QUEUE} failed --json"))) == failed_before
    wait_for(lambda: all_workers_on(host, release2, total), 30, f"{total} workers on {release2}")


def test_4_rollback_puts_every_worker_back_on_release_1(host):
    pools = STATE.get("pools", BASE_POOLS)
    total = sum(p["numprocs"] for p in pools)
    deploy("playbooks/rollback.yml", queue_worker_pools=pools)
    assert current_release(host) == STATE["release1"]
    wait_for(lambda: all_workers_on(host, STATE["release1"], total), 30, "workers on release 1")


def test_5_removed_pool_is_stopped_and_its_config_removed(host):
    pools = [p for p in STATE.get("pools", BASE_POOLS) if p["name"] != "slow"]
    slow_pids = pool_pids(host)["slow"].values()
    deploy(queue_worker_app_packages=app_packages(BASE_APP), queue_worker_pools=pools)
    assert not host.file("/etc/supervisor/conf.d/queuefleet-slow.conf").exists
    assert "slow" not in pool_pids(host)
    assert "queuefleet-slow" not in host.run("supervisorctl avail").stdout
    for pid in slow_pids:
        assert not host.file(f"/proc/{pid}").exists, f"slow worker {pid} still runs"
    wait_for(lambda: all_workers_on(host, STATE["release1"], 2), 30, "only the default pool's workers")


def test_6_restore_the_converged_state(host):
    deploy(queue_worker_app_packages=app_packages(BASE_APP), queue_worker_pools=BASE_POOLS)
    assert {pool: len(procs) for pool, procs in pool_pids(host).items()} == {p["name"]: p["numprocs"] for p in BASE_POOLS}
    assert current_release(host) == STATE["release1"]
