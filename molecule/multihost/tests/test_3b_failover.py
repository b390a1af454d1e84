"""The failover drill (issue 24): Redis that survives its host, under a producer that never stops.

Two Redis servers (qfmh-redis, qfmh-db: one master, one replica; earlier tests may have failed it
over already, so the drill starts from whichever is master) and three sentinels (qfmh-redis, qfmh-db,
qfmh-worker2);
every client follows them (a redis+sentinel:// URL). Under a steady producer with its own job ids
and durable push on (each push confirmed by the replica, retried under the same id when it is not):

1. the master's redis-server hangs (SIGSTOP): the sentinels promote the replica and the workers run
   jobs on it (durable pushes land there, but no replica can confirm them while the only other
   server hangs); it is then killed, comes back as the new master's replica, and durable pushes are
   confirmed again;
   a re-deploy keeps the promoted master (it never undoes a failover) and restarts no Redis;
2. the new master's whole container stops: the sentinels promote the first master again, and the
   stopped one comes back as a replica when it starts.

Then every job pushed has run exactly once and none failed; the sentinels promoted within
down-after-milliseconds + 5 s each time, and the workers ran jobs on the new master within it. The drill ends with the master it started from.
"""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from mh import DB, INVENTORY, PRIVATE, REDIS, W1, W2, agent, app_py, install_agent, playbook, secret, sh, wait_for

pytestmark = pytest.mark.skipif(not INVENTORY, reason="runs inside molecule verify")

DOWN_AFTER = 2.0  # sentinel_down_after_ms in the scenario


def sentinel_master(container: str = W2) -> str:
    out = sh(container, f"REDISCLI_AUTH='{secret('redis')}' redis-cli --no-auth-warning -p 26379 "
                        "SENTINEL get-master-addr-by-name queuefleet", check=False).stdout.split()
    return out[0] if out else ""


def replication(container: str) -> dict[str, str]:
    out = sh(container, f"REDISCLI_AUTH='{secret('redis')}' redis-cli --no-auth-warning INFO replication", check=False).stdout
    return dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)


def rejoined_as_replica(container: str, master: str) -> bool:
    info = replication(container)
    return info.get("role") == "slave" and info.get("master_host") == master and info.get("master_link_status") == "up"


def redis_pid(container: str) -> str:
    return sh(container, "systemctl show -p MainPID --value redis-server").stdout.strip()


def test_the_fleet_fails_over_twice_under_load_and_loses_nothing():
    install_agent(W1)
    agent("reset")
    first, second = (REDIS, DB) if sentinel_master() == PRIVATE[REDIS] else (DB, REDIS)
    assert sentinel_master() == PRIVATE[first], "the sentinels name one of the two servers"
    assert rejoined_as_replica(second, PRIVATE[first])
    result: dict = {}
    producer = threading.Thread(target=lambda: result.update(
        agent("produce", "drill", "100000", "20", "0", timeout=900, env="QUEUEFLEET_DURABLE_PUSH=1")), daemon=True)
    producer.start()
    wait_for(lambda: agent("tally", "drill")["pushed"] > 20, 30, "the producer to push")

    # 1. The master hangs, then dies: the replica is promoted, the old master comes back as its replica.
    pid = redis_pid(first)
    ran = set(agent("tally", "drill")["executed"])
    sh(first, f"kill -STOP {pid}")
    started = time.monotonic()
    wait_for(lambda: sentinel_master() == PRIVATE[second], 30, f"the sentinels to promote {second}")
    promoted = time.monotonic() - started
    # The workers carry on against the new master while the old one hangs: the push the producer
    # keeps retrying lands there (durable push cannot confirm it: the only other server hangs) and runs.
    wait_for(lambda: set(agent("tally", "drill")["executed"]) - ran, 30, f"the workers to run jobs on {second}")
    served = time.monotonic() - started
    sh(first, f"kill -9 {pid}")  # systemd starts it again; the sentinels make it a replica
    killed = time.monotonic()
    wait_for(lambda: rejoined_as_replica(first, PRIVATE[second]), 60, f"{first} to come back as a replica")
    before = agent("tally", "drill")["pushed"]
    wait_for(lambda: agent("tally", "drill")["pushed"] > before + 10, 30, "durable pushes to be confirmed again")
    resumed = time.monotonic() - killed
    assert promoted <= DOWN_AFTER + 5, f"the sentinels promoted {second} {promoted:.1f}s after the master hung"
    assert served <= DOWN_AFTER + 5, f"the workers ran jobs on {second} only {served:.1f}s after the master hung"

    # A re-deploy keeps the promoted master and restarts no Redis.
    pids = {REDIS: redis_pid(REDIS), DB: redis_pid(DB)}
    playbook("molecule/multihost/converge.yml", "-l", "redis:sentinels")
    assert sentinel_master() == PRIVATE[second] and rejoined_as_replica(first, PRIVATE[second]), "the deploy undid the failover"
    assert {c: redis_pid(c) for c in pids} == pids, "the deploy restarted a Redis server"

    # 2. The new master's whole container stops: the first master is promoted back. With durable
    # push a push needs a replica to confirm it, so pushes wait for the stopped host to come back.
    subprocess.run(["docker", "stop", "-t", "5", second], check=True, capture_output=True, timeout=60)
    started = time.monotonic()
    try:
        wait_for(lambda: sentinel_master() == PRIVATE[first], 30, f"the sentinels to promote {first}")
        again = time.monotonic() - started
    finally:
        subprocess.run(["docker", "start", second], check=True, capture_output=True, timeout=60)
    wait_for(lambda: rejoined_as_replica(second, PRIVATE[first]), 120, f"{second} to come back as a replica")
    before = agent("tally", "drill")["pushed"]
    wait_for(lambda: agent("tally", "drill")["pushed"] > before + 10, 60, "the producer to push again")
    assert again <= DOWN_AFTER + 5, f"the sentinels promoted {first} {again:.1f}s after its peer stopped"

    app_py(W1, "from queuefleet import Queue\nQueue.from_url(os.environ['QUEUEFLEET_REDIS_URL']).redis.set('mh:stop:drill', 1)")
    producer.join(120)
    assert not producer.is_alive(), "the producer did not stop"
    ids = [job for job, _ in result["jobs"]]

    def drained():
        t = agent("tally", "drill")
        return t if set(ids) <= set(t["executed"]) and not any(any(q.values()) for q in t["queues"].values()) else None

    tally = wait_for(drained, 120, "every drill job to run")
    executed = tally["executed"]
    print(f"drill: {len(ids)} pushed, {len(executed)} executed; SIGSTOP: promoted after {promoted:.1f}s, jobs ran on the "
          f"new master after {served:.1f}s, durable pushes confirmed {resumed:.1f}s after the old master was killed; "
          f"container stop: promoted after {again:.1f}s; push retries {result['push_retries']}")
    assert len(executed) == len(set(executed)) == len(ids), "a job was lost or ran twice"
    assert tally["failed"] == [], tally["failed"]
