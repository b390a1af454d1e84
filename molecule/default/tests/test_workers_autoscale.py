"""An autoscaled pool on a real host (issue 26): deployed at min with its autoscaler, a burst of
slow jobs scales it to max within a stated bound, a deploy in the middle changes nothing and
restarts no process, raising min takes effect without restarting the processes that run, the
backlog drains with every job run once and none failed, the pool returns to min after the
cooldown, and restart.yml restarts what runs and keeps the scale. The inventory's pools are
deployed again at the end."""

from __future__ import annotations

import json
import re
import time

from helpers import BASE_POOLS, QUEUE, changed, play, pool_programs, wait_for

POOL = "burst"
SCALED = {"name": POOL, "queues": [POOL], "priority": 960, "timeout": 30, "sleep": 1,
          "autoscale": {"min": 1, "max": 4, "step": 2, "cooldown": 6, "target_wait": 2}}
EXTRA = {"queue_worker_pools": BASE_POOLS + [SCALED], "queue_worker_autoscale_interval": 1}
JOBS = 48  # x 2 s: 96 process-seconds, 24 s at max
TO_MAX = 15  # seconds from the push to 4 RUNNING: two decisions (1 s apart, step 2) and startsecs


def states(host) -> dict[str, str]:
    return pool_programs(host, POOL)


def running_pids(host) -> dict[str, int]:
    out = host.run("supervisorctl status").stdout
    return {m.group(1): int(m.group(2)) for m in
            re.finditer(rf"^(queuefleet-{POOL}-[0-9a-f]{{6}}_[0-9]{{2,}})\s+RUNNING\s+pid (\d+)", out, re.M)}


def autoscaler_pid(host) -> int:
    match = re.search(r"RUNNING\s+pid (\d+)", host.run("supervisorctl status queuefleet_autoscaler").stdout)
    return int(match.group(1)) if match else 0


def scaler_lines(host) -> int:
    return len(host.file("/var/log/queuefleet/queuefleet_autoscaler.log").content_string.splitlines())


def assert_kept(host, before: dict[str, int], lines: int) -> None:
    """Every process RUNNING before is RUNNING now with the same pid, unless the autoscaler stopped it
    since line `lines` of its log (a scale-down as the backlog drains)."""
    log = host.file("/var/log/queuefleet/queuefleet_autoscaler.log").content_string.splitlines()[lines:]
    stopped = {name for line in log for name in re.findall(rf"queuefleet-{POOL}-[0-9a-f]{{6}}_[0-9]+", line.split("; stopping ")[-1])
               if "; stopping " in line}
    after = running_pids(host)
    kept = {name: pid for name, pid in before.items() if name not in stopped}
    assert {name: after.get(name) for name in kept} == kept, (before, after, stopped)


def count(host, state: str = "RUNNING") -> int:
    return sum(1 for s in states(host).values() if s == state)


def app(host, code: str) -> str:
    """Python in the container with the deployed release, its env file and a Redis client `r`."""
    script = ("import os\nfor line in open('/opt/queuefleet/shared/queuefleet.env'):\n"
              "    k, s, v = line.strip().partition('=')\n    if s and not k.startswith('#'): os.environ.setdefault(k, v)\n"
              "from queuefleet import Queue, client_from_url\nr = client_from_url(os.environ['QUEUEFLEET_REDIS_URL'])\n" + code)
    host.run(f"cat > /tmp/qf_autoscale.py <<'EOF'\n{script}\nEOF")
    out = host.run("/opt/queuefleet/current/bin/python /tmp/qf_autoscale.py")
    assert out.rc == 0, out.stderr
    return out.stdout.strip()


def test_a_burst_scales_the_pool_to_max_and_back_to_min_without_losing_a_job(host):
    out = play("deploy.yml", **EXTRA)
    assert "post-deploy checks passed" in out, out[-3000:]
    wait_for(lambda: count(host) == 1 and count(host, "STOPPED") == 3, 20, f"the pool at min 1: {states(host)}")
    assert host.run("supervisorctl status queuefleet_autoscaler").stdout.split()[1] == "RUNNING"
    config = json.loads(host.file("/opt/queuefleet/shared/autoscale.json").content_string)
    assert [(p["name"], p["min"], p["max"], len(p["programs"])) for p in config["pools"]] == [(POOL, 1, 4, 4)]
    failed_before = len(json.loads(host.check_output(f"{QUEUE} failed --json")))

    run = f"as{int(time.time())}-"  # ids of their own: a producer's ids are pushed once
    app(host, f"r.delete('demo:executed')\nq = Queue.from_url(os.environ['QUEUEFLEET_REDIS_URL'])\n"
              f"q.push_many([('queuefleet_demo.jobs:slow', {{'id': f'{run}{{i}}', 'seconds': 2}}) for i in range({JOBS})], queue='{POOL}')")
    pushed = time.monotonic()
    wait_for(lambda: count(host) == 4, TO_MAX, f"the pool at max 4 within {TO_MAX}s: {states(host)}")
    print(f"scaled from min 1 to max 4 in {time.monotonic() - pushed:.1f}s")
    log = host.file("/var/log/queuefleet/queuefleet_autoscaler.log").content_string
    assert re.search(rf"pool {POOL}: 1 -> [234] \(scale up\): fleet wants \d+ \(\d+ busy \+ \d+ ready at [\d.]+s a job", log), log

    # A deploy while the autoscaler has the pool at max: nothing changed, no process restarted (a
    # process the autoscaler stopped meanwhile, as the backlog drains, may have been started again).
    before, lines = running_pids(host), scaler_lines(host)
    out = play("deploy.yml", **EXTRA)
    assert changed(out) == 0, out[-3000:]
    assert_kept(host, before, lines)

    # Raising min: the floor grows, and the processes that run keep running.
    raised = {**SCALED, "autoscale": {**SCALED["autoscale"], "min": 2}}
    before, lines, scaler = running_pids(host), scaler_lines(host), autoscaler_pid(host)
    play("deploy.yml", **{**EXTRA, "queue_worker_pools": BASE_POOLS + [raised]})
    assert_kept(host, before, lines)
    assert len(running_pids(host)) >= 2
    assert autoscaler_pid(host) not in (0, scaler)  # restarted onto its new file
    assert '"min": 2' in host.file("/opt/queuefleet/shared/autoscale.json").content_string

    wait_for(lambda: app(host, "print(r.llen('demo:executed'))") == str(JOBS), 90, "the backlog to drain")
    executed = app(host, "print(' '.join(sorted(x.decode().split('@')[0] for x in r.lrange('demo:executed', 0, -1))))").split()
    assert sorted(executed) == sorted(f"{run}{i}" for i in range(JOBS)), "a job was lost or ran twice"
    assert len(json.loads(host.check_output(f"{QUEUE} failed --json"))) == failed_before
    drained = time.monotonic()
    wait_for(lambda: count(host) == 2, 40, f"the pool back at its new min 2 after the cooldown: {states(host)}")
    print(f"back at min 2 {time.monotonic() - drained:.1f}s after the backlog drained (cooldown 6 s, step 2)")
    log = host.file("/var/log/queuefleet/queuefleet_autoscaler.log").content_string
    assert re.search(rf"pool {POOL}: [34] -> 2 \(scale down \(wanted fewer for \d+s\)\)", log), log
    assert "lost" not in host.run(f"cat /var/log/queuefleet/{POOL}_0*.log").stdout

    # restart.yml keeps the scale: the processes that run are restarted onto new pids, and the ones
    # the autoscaler stopped stay stopped (supervisor_status: not `live`).
    before = running_pids(host)
    play("playbooks/restart.yml", pools=POOL, **EXTRA)
    after = running_pids(host)
    assert len(after) == 2 and count(host, "STOPPED") == 2, states(host)
    assert not set(before.values()) & set(after.values()), (before, after)

    out = play("deploy.yml")  # the inventory's pools again: the autoscaled pool and its autoscaler go
    assert not states(host) or all(s == "STOPPING" for s in states(host).values())
    assert not host.file("/opt/queuefleet/shared/autoscale.json").exists
    wait_for(lambda: "queuefleet_autoscaler" not in host.run("supervisorctl avail").stdout, 30, "the autoscaler removed")
