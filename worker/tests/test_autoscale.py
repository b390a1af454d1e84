"""`queue autoscale`: the decisions (autoscale_policy), and the loop under a real supervisord
with real workers and Redis: a burst scales a pool from min to max, the backlog drains with
every job run once, the pool returns to min after the cooldown; hosts share one backlog; the
loop holds every size while Redis is down."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import redis

from conftest import QUEUE_BIN, TESTS, QueueCli, executed
from servers import SUPERVISOR_HEAD, Supervisord, free_port, wait_for
from queuefleet import Queue
from queuefleet.autoscale_policy import Damper, Demand, HostSlot, ScaleRule, fleet_wanted, host_share
from queuefleet.autoscaler import AutoscaleConfigError, Autoscaler, AutoscaleSettings, ScaledPool, load_settings, read_events
from queuefleet.logs import JobLog
from queuefleet.supervisor_rpc import ProcessInfo, Supervisor, SupervisorError

# -- the decisions ------------------------------------------------------------------------------

RULE = ScaleRule(min=1, max=8, step=2, cooldown=30, target_wait=10)


def test_one_waiting_job_asks_for_one_process_not_max():
    wanted, why = fleet_wanted(Demand(ready=1, busy=0, oldest_wait=0.1, runtime=0.2), running=1, rule=RULE)
    assert wanted == 1, why  # laravel/horizon#1552: one job sent a queue to max


def test_busy_processes_with_long_jobs_still_grow_the_pool():
    # Every process busy with a 120 s job, 3 jobs waiting: 4 busy + 3 (each takes 120 s > target_wait).
    wanted, _ = fleet_wanted(Demand(ready=3, busy=4, oldest_wait=5, runtime=120), running=4, rule=RULE)
    assert wanted == 7  # laravel/horizon#1539: no reaction while long jobs ran


def test_a_job_waiting_a_moment_behind_a_busy_process_of_fast_jobs_asks_for_none():
    # A steady 80 % load on one process: a probe often finds one 0.2 s job waiting while the other
    # runs. Both start within the target wait with the one process: no second one (no flapping).
    wanted, why = fleet_wanted(Demand(ready=1, busy=1, oldest_wait=0.1, runtime=0.2), running=1, rule=RULE)
    assert wanted == 1, why
    # A spike of 24 one-second jobs behind one busy process, target 1 s: as many processes as jobs fit.
    wanted, why = fleet_wanted(Demand(ready=24, busy=1, oldest_wait=0.1, runtime=1.0), running=1, rule=ScaleRule(1, 8, target_wait=1))
    assert wanted == 25, why


def test_a_job_waiting_past_the_target_grows_the_pool_by_a_step_at_least():
    wanted, why = fleet_wanted(Demand(ready=2, busy=2, oldest_wait=25, runtime=0.01), running=2, rule=RULE)
    assert wanted == 4 and "waited 25.0s" in why


def test_hosts_split_one_backlog_instead_of_each_adding_a_step():
    slots = [HostSlot("w2", 1, 4, 1), HostSlot("w1", 1, 4, 1), HostSlot("w3", 0, 2, 0)]
    shares = {h: host_share(7, slots, h) for h in ("w1", "w2", "w3")}
    assert shares == {"w1": 3, "w2": 2, "w3": 2} and sum(shares.values()) == 7
    assert {h: host_share(1, slots, h) for h in ("w1", "w2", "w3")} == {"w1": 1, "w2": 1, "w3": 0}  # never below min
    assert {h: host_share(50, slots, h) for h in ("w1", "w2", "w3")} == {"w1": 4, "w2": 4, "w3": 2}  # never above max


def test_damper_steps_up_at_once_and_down_only_after_the_cooldown():
    d = Damper(ScaleRule(min=1, max=8, step=2, cooldown=30, target_wait=10))
    assert d.next_size(1, 8, now=0)[0] == 3  # step 2
    assert d.next_size(3, 8, now=1)[0] == 6  # doubles once that is more than a step
    assert d.next_size(6, 7, now=1)[0] == 7  # never past the target
    assert d.next_size(5, 1, now=2) == (5, "cooling down (0s of 30s)")
    assert d.next_size(5, 1, now=31)[0] == 5  # 29 s below: still cooling down
    assert d.next_size(5, 1, now=33) == (3, "scale down (wanted fewer for 31s)")
    assert d.next_size(3, 1, now=38)[0] == 1  # still below: a step per decision, no new cooldown
    assert d.next_size(1, 1, now=40) == (1, "steady")
    assert d.next_size(1, 5, now=41)[0] == 3  # demand back: up at once
    assert d.next_size(3, 2, now=42)[0] == 3  # and a new cooldown before the next step down
    assert d.next_size(3, 2, now=73)[0] == 2
    assert d.next_size(0, 0, now=74) == (1, "below min 1")  # laravel/horizon#622: never below min


@pytest.mark.parametrize("rule, message", [
    (dict(min=3, max=2), "0 <= min <= max"), (dict(min=0, max=0), "max >= 1"), (dict(min=1, max=2, step=0), "step"),
    (dict(min=1, max=2, target_wait=0), "target_wait"), (dict(min=1, max=2, cooldown=float("nan")), "cooldown"),
])
def test_bad_rules_are_refused(rule, message):
    with pytest.raises(ValueError, match=message):
        ScaleRule(**rule)


def test_bad_config_files_get_one_line_errors(tmp_path, cli):
    path = tmp_path / "autoscale.json"
    cases = {
        "not json": "Expecting value",
        '{"pools": []}': "non-empty list `pools`",
        '{"pools": [{"name": "p", "queues": ["q"], "min": 1, "max": 2}]}': "missing 'programs'",
        '{"pools": [{"name": "p", "queues": ["q"], "programs": ["a", "b"], "min": 3, "max": 2}]}': "0 <= min <= max",
        '{"pools": [{"name": "p", "queues": ["q"], "programs": ["a"], "min": 1, "max": 2}]}': "programs must name max=2",
        '{"pools": [{"name": "p", "queues": ["bad queue"], "programs": ["a", "b"], "min": 1, "max": 2}]}': "queue name",
        '{"pools": [{"name": "p", "queues": ["q"], "programs": ["a", "b"], "min": 1, "max": 2}], "interval": 0}': "interval",
        '{"pools": [{"name": "p", "queues": ["q"], "programs": ["a", "b"], "min": 1, "max": 2}], "interval": 45}':
            "interval must be > 0 and <= 30 seconds",
        '{"pools": [{"name": "p", "queues": ["q"], "programs": ["a", "b"], "min": 1, "max": 2}], "supervisor": "/run/s.sock"}':
            "supervisor URL must be unix:///path or http://host:port, got '/run/s.sock'",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(AutoscaleConfigError, match=re.escape(message)):
            load_settings(path)
        out = cli.run("autoscale", "--config", str(path), check=False)
        assert out.returncode == 2 and message in out.stderr, out.stderr


# -- under a real supervisord -----------------------------------------------------------------


def scaled_supervisord(workdir: Path, redis_url: str, db_url: str, *, size: int, queue: str,
                       autoscale: Path | None = None) -> Supervisord:
    """An autoscaled pool as the role renders it: one program per process, `auto_00` to
    `auto_<size-1>`, none started by supervisord itself; plus the autoscaler when `autoscale` is given."""
    env = {"QUEUEFLEET_REDIS_URL": redis_url, "QUEUEFLEET_DATABASE_URL": db_url, "QUEUEFLEET_JOBS": "qf_testjobs",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])), "TEST_REDIS_URL": redis_url}
    environment = ",".join(f'{k}="{v}"' for k, v in env.items())
    conf = SUPERVISOR_HEAD.format(dir=workdir)
    for slot in range(size):
        conf += f"""
[program:auto_{slot:02d}]
command={QUEUE_BIN} work --name auto --queue {queue} --sleep 0.5
autostart=false
autorestart=true
startsecs=1
stopwaitsecs=20
stdout_logfile={workdir}/%(program_name)s.log
stderr_logfile={workdir}/%(program_name)s.err
environment={environment}
"""
    if autoscale is not None:
        conf += f"""
[program:autoscale]
command={QUEUE_BIN} autoscale --config {autoscale} --host testhost
autorestart=true
startsecs=1
stdout_logfile={workdir}/autoscale.out
stderr_logfile={workdir}/autoscale.err
environment={environment}
"""
    return Supervisord(workdir, conf)


def running(sup: Supervisord) -> int:
    """The pool's processes RUNNING."""
    return sum(1 for name, (state, _) in sup.status().items() if name.startswith("auto_") and state == "RUNNING")


def programs(size: int) -> list[str]:
    return [f"auto_{slot:02d}" for slot in range(size)]


def answers(sup: Supervisor) -> bool:
    try:
        return bool(sup.processes())
    except SupervisorError:
        return False


def test_a_burst_scales_the_pool_to_max_drains_and_returns_to_min(redis_url, r, sqlite_url, tmp_path):
    QueueCli(redis_url, sqlite_url, tmp_path).run("migrate")
    queue = f"auto{os.getpid()}"
    config = tmp_path / "autoscale.json"
    config.write_text(json.dumps({"interval": 0.5, "supervisor": f"unix://{tmp_path / 'sup' / 'supervisor.sock'}",
                                  "pools": [{"name": "auto", "queues": [queue], "programs": programs(4),
                                             "min": 1, "max": 4, "step": 2,
                                             "cooldown": 3, "target_wait": 1}]}))
    sup = scaled_supervisord(tmp_path / "sup", redis_url, sqlite_url, size=4, queue=queue, autoscale=config)
    log = tmp_path / "sup" / "autoscale.out"
    try:
        # supervisord starts no pool process itself: the autoscaler brings the pool up at min, never at
        # max (laravel/horizon#1295), and keeps it there while nothing waits.
        wait_for(lambda: running(sup) == 1, timeout=20, what=f"the pool at min\n{log}")
        time.sleep(2)
        assert running(sup) == 1 and sup.status()["auto_00"][0] == "RUNNING", log.read_text()
        assert "pool auto: started auto_00 (below min 1: auto_00 was STOPPED)" in log.read_text()

        tags = [f"j{i}" for i in range(24)]
        Queue.from_url(redis_url).push_many([("qf_testjobs:slow", {"tag": t, "seconds": 1.0}) for t in tags], queue=queue)
        pushed = time.monotonic()
        wait_for(lambda: running(sup) == 4, timeout=15, interval=0.1, what=f"the pool at max\n{log.read_text()}")
        to_max = time.monotonic() - pushed
        assert to_max < 8, f"{to_max:.1f}s to reach max"  # 2 decisions of step 2, 0.5 s apart, + supervisor's startsecs

        wait_for(lambda: len(executed(r)) >= 24, timeout=40, interval=0.2, what=f"the backlog to drain\n{log.read_text()}")
        drained = time.monotonic() - pushed
        assert drained < 20, f"{drained:.1f}s to drain 24 s of work with 4 processes"
        wait_for(lambda: running(sup) == 1, timeout=20, interval=0.2, what=f"the pool back at min\n{log.read_text()}")
        time.sleep(1)
        assert sorted(executed(r)) == sorted(tags)  # each once: nothing lost or run twice by the scale-down
        assert json.loads(QueueCli(redis_url, sqlite_url, tmp_path).run("failed", "--json").stdout or "[]") == []
        lines = log.read_text()
        assert re.search(r"pool auto: 1 -> 3 \(scale up\): fleet wants \d+ \(", lines), lines
        assert re.search(r"pool auto: 3 -> 4 \(scale up\)", lines), lines  # max 4 caps the doubling
        assert re.search(r"pool auto: [34] -> [12] \(scale down \(wanted fewer for \d+s\)\)", lines), lines
        events = read_events(r, "queuefleet")
        assert {(e["from"], e["to"]) for e in events if e["pool"] == "auto"} >= {(1, 3), (3, 4)}
        counts = {k.decode(): int(v) for k, v in r.hgetall("queuefleet:autoscale:counts").items()}
        assert counts["auto|testhost|up"] == 2 and counts["auto|testhost|down"] >= 2
        assert "lost" not in sup.logs() and "Traceback" not in sup.logs(".err")

        subprocess.run([*sup.ctl, "stop", "auto_00"], check=True, capture_output=True)  # by hand: below min
        wait_for(lambda: sup.status()["auto_00"][0] == "RUNNING", timeout=10, what=f"the floor back\n{log.read_text()}")
        assert log.read_text().count("pool auto: started auto_00 (below min 1") == 2

        # A deploy's `queue restart`: the autoscaler exits and supervisor starts it again (on the new
        # release); the pool keeps its size through it.
        QueueCli(redis_url, sqlite_url, tmp_path).run("restart")
        wait_for(lambda: log.read_text().count("STARTING") == 2, timeout=15, what=f"the autoscaler restarted\n{log.read_text()}")
        assert "autoscaler exits for supervisor to restart it: restart signal" in log.read_text()
        time.sleep(1)
        assert running(sup) == 1
    finally:
        sup.close()
        r.delete("queuefleet:autoscale:auto", "queuefleet:autoscale:events", "queuefleet:autoscale:counts")


def test_hosts_share_one_backlog_and_the_loop_holds_while_redis_is_down(own_redis, sqlite_url, tmp_path):
    """Two hosts of one pool (min 0, max 2 each) for a backlog that wants 3 processes start 3 in
    all, not 4; with Redis gone, neither stops a process, even past the cooldown."""
    QueueCli(own_redis.url, sqlite_url, tmp_path).run("migrate")
    client = own_redis.client()
    sups, scalers = [], []
    try:
        for host in ("h1", "h2"):
            sup = scaled_supervisord(tmp_path / host, own_redis.url, sqlite_url, size=2, queue="elsewhere")
            sups.append(sup)
            settings = AutoscaleSettings(
                (ScaledPool("auto", ("shared",), tuple(programs(2)), ScaleRule(min=0, max=2, step=2, cooldown=0, target_wait=1)),),
                supervisor_url=f"unix://{tmp_path / host / 'supervisor.sock'}", interval=0.5, host=host)
            scalers.append(Autoscaler(client, settings, prefix="queuefleet", log=JobLog(open(tmp_path / f"{host}.log", "w"))))
        for sup in sups:
            wait_for(lambda: answers(Supervisor(f"unix://{sup.dir / 'supervisor.sock'}")), timeout=20, what="supervisord")
        Queue.from_url(own_redis.url).push_many([("qf_testjobs:record", {"tag": f"t{i}"}) for i in range(3)], queue="shared")
        scalers[0].tick()
        scalers[1].tick()
        scalers[0].tick()
        wait_for(lambda: running(sups[0]) + running(sups[1]) == 3, timeout=15, what="3 processes in all")
        time.sleep(1.5)
        assert (running(sups[0]), running(sups[1])) == (2, 1)

        Queue.from_url(own_redis.url).clear("shared")  # no demand left: a loop that read Redis would scale down
        own_redis.stop()
        for scaler in scalers:
            assert scaler.tick() == [] and scaler.tick() == []
        time.sleep(1.5)
        assert (running(sups[0]), running(sups[1])) == (2, 1)
        assert "Redis unreachable" in (tmp_path / "h1.log").read_text()
        own_redis.start()  # back, and the queue is empty: now h1 stops its two processes (cooldown 0)
        assert "pool auto: 2 -> 0 (scale down (wanted fewer for 0s))" in scalers[0].tick()[0]
        assert "resumed" in (tmp_path / "h1.log").read_text()
        wait_for(lambda: running(sups[0]) == 0, timeout=15, what="h1's processes to stop")
    finally:
        for sup in sups:
            sup.close()


def test_the_run_time_estimate_is_recent_and_leaves_the_canaries_out():
    from queuefleet.autoscaler import RuntimeEstimate
    from queuefleet.stats import Durations, FleetStats

    def stats(**durations: tuple[int, float]) -> FleetStats:
        found = {}
        for key, (runs, seconds) in durations.items():
            d = Durations(sum_seconds=seconds)
            d.buckets[0] = runs
            found[("q", key.replace("_", ":").replace("-", "."))] = d
        return FleetStats(0.0, {}, {}, {}, found, [], [])

    estimate = RuntimeEstimate()
    # 50 canaries of ~0 s on the pool's queue (one per deploy) must not make 2 s jobs look instant.
    assert estimate.update(stats(**{"queuefleet-canary_ping": (50, 0.05), "app-jobs_slow": (2, 4.0)}), ["q"]) == 2.0
    # Then recent jobs move the recent average: two of 5 s each, by 1 - 0.75^2 of the way from 2 s to
    # 5 s (3.31 s); the lifetime average (3.5 s) is the larger.
    assert estimate.update(stats(**{"queuefleet-canary_ping": (51, 0.05), "app-jobs_slow": (4, 14.0)}), ["q"]) == 3.5
    assert estimate.recent == 2 + 3 * 0.4375
    assert estimate.update(stats(**{"queuefleet-canary_ping": (60, 0.06), "app-jobs_slow": (4, 14.0)}), ["q"]) == 3.5
    # Many 5 s jobs bring it to 5 s; then one 0.2 s job between two ticks moves the recent average a
    # quarter of the way (3.8 s), and the lifetime average (514.2 s / 105) is the estimate.
    assert abs(estimate.update(stats(**{"app-jobs_slow": (104, 514.0)}), ["q"]) - 5.0) < 1e-6
    assert estimate.update(stats(**{"app-jobs_slow": (105, 514.2)}), ["q"]) == 514.2 / 105
    assert abs(estimate.recent - (5.0 - 4.8 / 4)) < 1e-6
    # A long lull of 0.1 s jobs: the recent average forgets the slow jobs, the lifetime average
    # (1014.2 s over 5,105 jobs) does not, so a burst of slow jobs after the lull asks for enough processes.
    lull = stats(**{"app-jobs_slow": (105, 514.2), "app-jobs_fast": (5000, 500.0)})
    assert abs(estimate.update(lull, ["q"]) - 1014.2 / 5105) < 1e-9 and estimate.recent < 0.11


def test_a_backlog_is_met_between_decisions_and_only_decisions_stop(redis_url, r):
    """interval 30 s: jobs pushed after the first decision still start processes within a second
    (the ready counts are read every REACT seconds); with the queue emptied and cooldown 0, the
    processes stay until the next decision, which alone may stop them."""
    import threading

    from scaling import MemorySupervisor

    queue = f"react{os.getpid()}"
    programs4 = tuple(f"react_{slot:02d}" for slot in range(4))
    supervisor = MemorySupervisor(programs4)
    settings = AutoscaleSettings((ScaledPool("react", (queue,), programs4, ScaleRule(min=1, max=4, step=1, cooldown=0, target_wait=1)),),
                                 "unix:///nowhere", 30.0, "testhost")
    scaler = Autoscaler(r, settings, prefix="queuefleet", log=JobLog(open(os.devnull, "w")), supervisor=supervisor)  # type: ignore[arg-type]
    loop = threading.Thread(target=scaler.run)
    loop.start()
    try:
        wait_for(lambda: supervisor.running() == 1, timeout=5, interval=0.05, what="the floor")
        Queue.from_url(redis_url).push_many([("qf_testjobs:record", {"tag": f"t{i}"}) for i in range(3)], queue=queue)
        pushed = time.monotonic()
        wait_for(lambda: supervisor.running() == 4, timeout=5, interval=0.05, what="the pool grown before the next decision")
        assert time.monotonic() - pushed < 2
        Queue.from_url(redis_url).clear(queue)
        time.sleep(1.5)
        assert supervisor.running() == 4  # only a decision stops, 30 s after the last one
        scaler.stop.set()
        loop.join(5)
        assert [line for line in scaler.tick() if "4 -> 3 (scale down" in line]  # step 1
        assert supervisor.running() == 3
    finally:
        scaler.stop.set()
        loop.join(5)
        Queue.from_url(redis_url).clear(queue)
        r.delete("queuefleet:autoscale:react", "queuefleet:autoscale:events", "queuefleet:autoscale:counts")


def test_a_program_supervisord_cannot_start_is_logged_and_the_others_start(redis_url, r):
    """A floor program whose command is gone (supervisord answers SPAWN_ERROR) does not end the
    autoscaler: the decision says so, starts the other programs, and the next one tries again."""
    import io

    from scaling import MemorySupervisor

    class Refusing(MemorySupervisor):
        def start(self, process: ProcessInfo) -> None:
            if process.group == "spawn_00":
                raise SupervisorError("SPAWN_ERROR: spawn_00")
            super().start(process)

    queue = f"spawn{os.getpid()}"
    programs = tuple(f"spawn_{slot:02d}" for slot in range(3))
    supervisor = Refusing(programs)
    out = io.StringIO()
    settings = AutoscaleSettings((ScaledPool("spawn", (queue,), programs, ScaleRule(min=2, max=3, step=1, cooldown=0, target_wait=1)),),
                                 "unix:///nowhere", 1.0, "testhost")
    scaler = Autoscaler(r, settings, prefix="queuefleet", log=JobLog(out), supervisor=supervisor)  # type: ignore[arg-type]
    try:
        assert scaler.tick() == ["pool spawn: started spawn_01 (below min 2: spawn_01 was STOPPED)"]
        assert "pool spawn: cannot start spawn_00 (SPAWN_ERROR: spawn_00); trying again next decision" in out.getvalue()
        Queue.from_url(redis_url).push_many([("qf_testjobs:record", {"tag": f"t{i}"}) for i in range(20)], queue=queue)
        scaler.tick()
        assert supervisor.states == {"spawn_00": "STOPPED", "spawn_01": "RUNNING", "spawn_02": "RUNNING"}
        assert out.getvalue().count("cannot start spawn_00") == 2
    finally:
        Queue.from_url(redis_url).clear(queue)
        r.delete("queuefleet:autoscale:spawn", "queuefleet:autoscale:events", "queuefleet:autoscale:counts")
