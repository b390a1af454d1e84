"""The operator's everyday cycle on the converged host, in order (issue 4):

1. release 1 runs every pool with numprocs processes;
2. scaling a pool up starts only the new processes: the running ones keep their PIDs;
3. scaling it down stops only the surplus process, after it finished its running job;
4. a new release together with a change of the pool's settings, under a continuous
   producer: every job runs once, none fails, every worker reports release 2, and the
   pool is never without a consumer for more than a few seconds;
5. rollback: every worker reports release 1; playbooks/restart.yml returns only once
   every worker has been replaced;
6. removing a pool stops its processes and removes its config;
and finally the converged state is restored, so the check-mode run that
follows (scripts/molecule-test.sh) still sees nothing to change.

The steps share state on purpose (each builds on the previous one), so they
run as one test module in file order.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from helpers import wait_for

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
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0"}
    result = subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, str(PROJECT / playbook), "-l", "molecule", "-e", f"@{f.name}"],
        capture_output=True, text=True, env=env, cwd=PROJECT, timeout=900,
    )
    os.unlink(f.name)
    assert result.returncode == 0, f"{playbook} failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def app_packages(src: Path) -> list[dict]:
    return [{"name": "queuefleet-demo", "src": str(src)}]


PROGRAM = re.compile(r"^queuefleet-(?P<pool>.+)-(?P<generation>[0-9a-f]{6})_(?P<slot>[0-9]{2,})$")


def pool_pids(host) -> dict[str, dict[str, int]]:
    """{pool: {program: pid}} of the RUNNING pool processes (one supervisor program per process).

    A replaced or surplus process finishing its job is STOPPING and not listed; no pool
    process may be in any other state once supervisord's startsecs have passed: a restarted
    worker is ready (its heartbeat on the new release) in about 0.3 s, while supervisord shows it
    STARTING for its first second, so STARTING is waited out (10 s at most) before the check."""
    deadline = time.monotonic() + 10
    while True:
        out = host.run("supervisorctl status").stdout
        starting = [line for line in out.splitlines()
                    if len(line.split()) > 1 and PROGRAM.match(line.split()[0]) and line.split()[1] == "STARTING"]
        if not starting or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    pools: dict[str, dict[str, int]] = {}
    for line in out.splitlines():
        parts = line.split()
        match = PROGRAM.match(parts[0]) if parts else None
        if not match:
            continue
        assert parts[1] in ("RUNNING", "STOPPING"), line
        if parts[1] == "RUNNING":
            pools.setdefault(match["pool"], {})[parts[0]] = int(parts[3].rstrip(","))
    return pools


def with_pool(pools: list[dict], name: str, **changes) -> list[dict]:
    return [dict(p, **changes) if p["name"] == name else p for p in pools]


def status(host) -> dict:
    return json.loads(host.check_output(f"{QUEUE} status --json"))


def current_release(host) -> str:
    return host.check_output("readlink /opt/queuefleet/current").rsplit("/", 1)[-1]


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


def test_2_scaling_up_starts_only_the_new_processes(host):
    before = pool_pids(host)
    pools = with_pool(BASE_POOLS, "default", numprocs=4)
    deploy(queue_worker_app_packages=app_packages(BASE_APP), queue_worker_pools=pools)
    after = pool_pids(host)
    assert len(after["default"]) == 4
    kept = {name: pid for name, pid in after["default"].items() if name in before["default"]}
    assert kept == before["default"], f"a running process of the scaled pool was restarted: {before} -> {after}"
    assert after["slow"] == before["slow"], "the unchanged pool was restarted"
    STATE["pools"] = pools


PUSH_SLOW_ON_CHANGE = r"""
import time
from queuefleet import Queue
# Started before the deploy. The role writes the pool's program file, then the
# exporter's (its expected worker counts change with numprocs), then runs the
# handler that applies them. Once the exporter's file changed, give each of the 4
# processes a 15 s job (the pool's timeout is 20 s), so the surplus one is busy
# when it is told to stop.
conf = "/etc/supervisor/conf.d/queuefleet_exporter.conf"
before = open(conf).read()
deadline = time.monotonic() + 600
while open(conf).read() == before and time.monotonic() < deadline:
    time.sleep(0.1)
q = Queue.from_url(os.environ["QUEUEFLEET_REDIS_URL"])
for i in range(4):
    q.push("queuefleet_demo.jobs:slow", {"id": f"s{i}", "seconds": 15}, queue="default")
    time.sleep(0.3)  # each job to another idle process
r.set("push_slow:done", "1")
"""


def log_time(line: str) -> str:
    return line.split()[0]


def test_3_scaling_down_stops_only_the_surplus_after_its_job(host):
    before = pool_pids(host)["default"]
    surplus = max(before)
    failed_before = len(json.loads(host.check_output(f"{QUEUE} failed --json")))
    in_app(host, "r.delete('demo:executed', 'push_slow:done')")
    host.run(f"cat > /tmp/push_slow.py <<'EOF'\n{APP_PYTHON}\n{PUSH_SLOW_ON_CHANGE}\nEOF")
    host.run("setsid nohup /opt/queuefleet/current/bin/python /tmp/push_slow.py >/tmp/push_slow.log 2>&1 &")
    pools = with_pool(BASE_POOLS, "default", numprocs=3)
    deploy(queue_worker_app_packages=app_packages(BASE_APP), queue_worker_pools=pools)
    STATE["pools"] = pools
    assert in_app(host, "print((r.get('push_slow:done') or b'').decode())") == "1", host.run("cat /tmp/push_slow.log").stdout
    after = pool_pids(host)["default"]
    assert after == {name: pid for name, pid in before.items() if name != surplus}, (before, after)
    wait_for(lambda: not host.file(f"/proc/{before[surplus]}").exists, 40, "the surplus process to exit")

    # The surplus was stopped while it ran a job, and finished that job first.
    drain = host.check_output(f"grep -m1 'draining: .*{surplus}' /var/log/supervisor/queuefleet-drain.log")
    stopped_at = drain.split()[0]  # UTC, second resolution
    log = host.file("/var/log/queuefleet/default_03.log").content_string.splitlines()
    started = {line.split()[2]: log_time(line) for line in log if " START " in line and "jobs:slow" in line}
    finished = {line.split()[2]: log_time(line) for line in log if " DONE " in line and "jobs:slow" in line}
    spanning = [job for job, start in started.items()
                if start[:19] < stopped_at[:19] and finished.get(job, "")[:19] > stopped_at[:19]]
    assert spanning, f"no job of {surplus} ran across its stop at {stopped_at}:\n" + "\n".join(log[-10:])

    wait_for(lambda: len(in_app(host, "print(r.llen('demo:executed'))")) and
             int(in_app(host, "print(r.llen('demo:executed'))")) >= 4, 30, "the 4 slow jobs to finish")
    executed = json.loads(in_app(host, "print(json.dumps([e.decode() for e in r.lrange('demo:executed', 0, -1)]))"))
    assert sorted(e.split("@")[0] for e in executed) == ["s0", "s1", "s2", "s3"], "a job was cut short, lost or run twice"
    assert len(json.loads(host.check_output(f"{QUEUE} failed --json"))) == failed_before
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


GAPS = r'''
import time
# The longest stretch without a finished job (demo:executed grows by one per job)
# while the producer pushes one every 20 ms.
last, since, longest = r.llen("demo:executed"), time.monotonic(), 0.0
while not os.path.exists("/tmp/gaps.stop"):
    time.sleep(0.05)
    count, now = r.llen("demo:executed"), time.monotonic()
    if count != last:
        longest, last, since = max(longest, now - since), count, now
r.set("gaps:longest", f"{max(longest, time.monotonic() - since):.3f}")
'''


def test_4_new_release_and_new_settings_under_load_lose_no_job_and_no_consumer(host, release2_src):
    # The pool's settings change too (memory), so its processes are replaced: the new
    # ones start before the old ones drain.
    pools = with_pool(STATE.get("pools", BASE_POOLS), "default", memory=192)
    total = sum(p["numprocs"] for p in pools)
    old_default = pool_pids(host)["default"]
    host.run("rm -f /tmp/producer.stop /tmp/gaps.stop")
    host.run(f"cat > /tmp/producer.py <<'EOF'\n{PRODUCER}\nEOF")
    host.run(f"cat > /tmp/gaps.py <<'EOF'\n{APP_PYTHON}\n{GAPS}\nEOF")
    failed_before = len(json.loads(host.check_output(f"{QUEUE} failed --json")))
    host.run("setsid nohup /opt/queuefleet/current/bin/python /tmp/producer.py >/tmp/producer.log 2>&1 &")
    wait_for(lambda: int(in_app(host, "print(int(r.get('producer:count') or 0))") or 0) > 20, 30, "the producer to start")
    host.run("setsid nohup /opt/queuefleet/current/bin/python /tmp/gaps.py >/tmp/gaps.log 2>&1 &")

    deploy(queue_worker_app_packages=app_packages(release2_src), queue_worker_pools=pools)
    release2 = current_release(host)
    assert release2 != STATE["release1"]
    STATE["release2"] = release2
    STATE["pools"] = pools
    time.sleep(2)  # keep producing onto the new release for a moment
    host.run("touch /tmp/gaps.stop")
    gap = float(wait_for(lambda: in_app(host, "print((r.get('gaps:longest') or b'').decode())"), 10, "the gap monitor"))
    host.run("touch /tmp/producer.stop")
    numprocs = next(p["numprocs"] for p in pools if p["name"] == "default")
    new_default = wait_for(lambda: (lambda now: now if len(now) == numprocs else None)(pool_pids(host)["default"]),
                           30, "the pool's replaced processes to drain")
    assert not set(new_default) & set(old_default), f"a process kept its old settings: {old_default} -> {new_default}"
    print(f"longest time without a finished job while the producer ran: {gap:.2f} s")
    assert gap < 5, f"the pool went {gap:.2f} s without running a job during the deploy"

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


def test_5_rollback_puts_every_worker_back_on_release_1(host):
    pools = STATE.get("pools", BASE_POOLS)
    total = sum(p["numprocs"] for p in pools)
    deploy("playbooks/rollback.yml", queue_worker_pools=pools)
    assert current_release(host) == STATE["release1"]
    wait_for(lambda: all_workers_on(host, STATE["release1"], total), 30, "workers on release 1")


def test_5b_restart_playbook_returns_once_every_worker_restarted(host):
    """playbooks/restart.yml onto the same release: the wait is for the old workers to be gone."""
    pools = STATE.get("pools", BASE_POOLS)
    before = {w["id"] for w in status(host)["workers"]}
    out = deploy("playbooks/restart.yml", queue_worker_pools=pools)
    assert "replaced ones left" in out, out[-3000:]
    after = {w["id"] for w in status(host)["workers"]}
    assert not before & after, f"restart.yml returned while {len(before & after)} old workers still ran"
    assert len(after) >= sum(p["numprocs"] for p in pools)


def test_6_removed_pool_is_stopped_and_its_config_removed(host):
    pools = [p for p in STATE.get("pools", BASE_POOLS) if p["name"] != "slow"]
    slow_pids = pool_pids(host)["slow"].values()
    deploy(queue_worker_app_packages=app_packages(BASE_APP), queue_worker_pools=pools)
    assert not host.file("/etc/supervisor/conf.d/queuefleet-slow.conf").exists
    assert "queuefleet-slow" not in host.run("supervisorctl avail").stdout
    # The removed pool's processes stop in the background, each after its job.
    wait_for(lambda: "slow" not in pool_pids(host) and not any(host.file(f"/proc/{pid}").exists for pid in slow_pids),
             30, "the slow pool's processes to exit")
    total = sum(p["numprocs"] for p in pools)
    wait_for(lambda: all_workers_on(host, STATE["release1"], total), 30, "only the default pool's workers")


def test_7_restore_the_converged_state(host):
    deploy(queue_worker_app_packages=app_packages(BASE_APP), queue_worker_pools=BASE_POOLS)
    wanted = {p["name"]: p["numprocs"] for p in BASE_POOLS}
    wait_for(lambda: {pool: len(procs) for pool, procs in pool_pids(host).items()} == wanted, 30, f"pools {wanted}")
    assert current_release(host) == STATE["release1"]
