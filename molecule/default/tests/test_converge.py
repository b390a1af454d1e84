"""The deploy converges to the inventory, and its fast path can be trusted (issue 23).

On the converged host, each case in order, the converged-role skip on (as users run it):

1. a stopped pool process, a FATAL one, a hand-made `CONFIG SET maxmemory-policy allkeys-lru` and a
   hand-made `SET GLOBAL wait_timeout`: ONE plain re-deploy repairs all four and says so;
2. a run killed right after it wrote redis.conf: the next run still does the restart it owed,
   although it writes nothing itself;
3. the host state module refuses to certify a host that still owes a restart;
4. two managed paths in a directory whose name has a space are two items;
5. a second checkout of the project at another path gets the skip: every role ends after its probe;
6. `restart.yml -e pools=...` with an inventory edit that is not deployed restarts the programs that run.

Each case restores the converged state, so the check-mode run that follows sees nothing to change.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import BASE_POOLS, INVENTORY, LIMIT, PROJECT, ansible, changed, flat, play, pool_programs, running, secret

pytestmark = pytest.mark.skipif(not INVENTORY, reason="runs inside molecule verify")

SKIPPING_ROLES = ("redis", "mysql", "supervisor", "queue_worker", "logrotate")
DEFAULT, SLOW = BASE_POOLS[0]["name"], BASE_POOLS[-1]["name"]


def skipped_roles(out: str) -> set[str]:
    return {role for role in SKIPPING_ROLES if re.search(rf"{role}: inputs and host state \(\d+ items\) unchanged", out)}


def redis_cli(host, *args: str) -> str:
    return host.check_output(f"REDISCLI_AUTH={secret('redis')} redis-cli --no-auth-warning -h 127.0.0.1 --raw "
                             + " ".join(args))


def redis_pid(host) -> str:
    return host.check_output("systemctl show -p MainPID --value redis-server")


def wait_for_state(host, program: str, state: str, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while host.run(f"supervisorctl status {program}").stdout.split()[1:2] != [state]:
        assert time.monotonic() < deadline, host.run("supervisorctl status").stdout
        time.sleep(0.5)


def test_1_one_redeploy_repairs_a_stopped_and_a_fatal_process_and_runtime_drift(host):
    default_00 = sorted(pool_programs(host, DEFAULT))[0]
    slow_00 = sorted(pool_programs(host, SLOW))[0]
    host.run_expect([0], f"supervisorctl stop {default_00}")
    # FATAL: the program exits at once with an error (its command is a stand-in for a while) until
    # supervisor gives up on it.
    queue = "/opt/queuefleet/current/bin/queue"
    host.run_expect([0], f"mv {queue} {queue}.real && printf '#!/bin/sh\\necho cannot reach the database >&2\\nexit 1\\n' > {queue}"
                         f" && chmod 0755 {queue}")
    try:
        host.run(f"supervisorctl restart {slow_00}")
        wait_for_state(host, slow_00, "FATAL")
    finally:
        host.run_expect([0], f"mv {queue}.real {queue}")
    assert redis_cli(host, "CONFIG SET maxmemory-policy allkeys-lru") == "OK"
    wait_timeout = host.check_output("mysql -NBe 'SELECT @@global.wait_timeout'")
    host.run_expect([0], "mysql -e 'SET GLOBAL wait_timeout = 5'")
    redis_before = redis_pid(host)

    started = time.monotonic()
    out = flat(play("deploy.yml", verbose=True))
    took = time.monotonic() - started
    assert f"{default_00} was STOPPED" in out and f"{slow_00} was FATAL" in out, out[-5000:]
    assert "cannot reach the database" in out, "the last lines of its stderr say why"
    assert "maxmemory-policy noeviction (running: allkeys-lru)" in out, out[-5000:]
    assert f"wait_timeout {wait_timeout} (running: 5)" in out, out[-5000:]
    assert "post-deploy checks passed" in out
    assert pool_programs(host, DEFAULT)[default_00] == "RUNNING" and pool_programs(host, SLOW)[slow_00] == "RUNNING"
    assert running(host, DEFAULT) == BASE_POOLS[0]["numprocs"] and running(host, SLOW) == BASE_POOLS[-1]["numprocs"]
    assert redis_cli(host, "CONFIG GET maxmemory-policy").splitlines()[1] == "noeviction"
    assert host.check_output("mysql -NBe 'SELECT @@global.wait_timeout'") == wait_timeout
    assert redis_pid(host) == redis_before, "drift in a live setting is repaired live, not by a restart"
    print(f"repair deploy: {took:.1f}s")

    out = flat(play("deploy.yml", verbose=True))
    assert changed(out) == 0 and skipped_roles(out) == set(SKIPPING_ROLES), out[-4000:]


def kill_after(marker: str, playbook: str, **extra) -> str:
    """Run a playbook and SIGKILL it (with its workers) as soon as `marker` appears in its output."""
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "PYTHONUNBUFFERED": "1"}
    args = ["ansible-playbook", "-i", INVENTORY, str(PROJECT / playbook), "-l", LIMIT,
            "-e", json.dumps({"queuefleet_environments": [LIMIT], **extra})]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=PROJECT,
                            start_new_session=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            os.killpg(proc.pid, 9)
            break
    proc.wait(60)
    return "".join(seen)


def test_2_a_restart_owed_by_an_interrupted_run_is_done_by_the_next_run(host):
    before = redis_pid(host)
    out = kill_after("Compare the running redis-server with redis.conf", "playbooks/redis.yml",
                     redis_extra_config={"hz": "15"})
    assert "Write redis.conf" in out and "PLAY RECAP" not in out, out[-3000:]
    assert host.check_output("grep ^hz /etc/redis/redis.conf") == "hz 15", "the killed run wrote the file"
    assert redis_pid(host) == before and redis_cli(host, "CONFIG GET hz").splitlines()[1] == "10", "...and never restarted"

    # The next run writes nothing (the file is already as wanted) and restarts all the same.
    out = flat(play("playbooks/redis.yml", verbose=True, redis_extra_config={"hz": "15"}))
    assert "needs a restart for: hz" in out, out[-4000:]
    assert re.search(r"TASK \[queuefleet\.fleet\.redis : Write redis\.conf\] \*+ ok:", out), "this run wrote nothing"
    assert redis_pid(host) != before and redis_cli(host, "CONFIG GET hz").splitlines()[1] == "15"


def test_3_a_host_that_owes_a_restart_is_never_recorded_as_converged(host):
    # Here the file is back to the inventory's (no hz) while the server still runs the copy with hz 15.
    host.run_expect([0], "sed -i '/^hz /d' /etc/redis/redis.conf")
    refused = ansible("queuefleet.fleet.host_state", {
        "name": "redis", "state": "record", "inputs": "x", "paths": ["/etc/redis/redis.conf"],
        "owed": [{"service": "redis-server", "kind": "redis", "config": "/etc/redis/redis.conf",
                  "passwords": [secret("redis")]}]}, expect_rc=2)
    assert "services still owe their config" in refused["msg"] and "restart:hz" in refused["msg"], refused
    assert secret("redis") not in str(refused)
    assert not host.file("/var/lib/queuefleet/converged/redis.json").exists, "the old marker is gone too"
    out = flat(play("playbooks/redis.yml", verbose=True))  # a full run: the restart, then the record
    assert "needs a restart for: hz" in out and redis_cli(host, "CONFIG GET hz").splitlines()[1] == "10"
    assert host.file("/var/lib/queuefleet/converged/redis.json").exists


def test_4_paths_in_a_directory_with_a_space_are_each_their_own_item(host):
    base = "/tmp/queuefleet my app"
    host.run_expect([0], f"mkdir -p '{base}' && echo a > '{base}/a.conf' && echo b > '{base}/b.conf'")
    spec = {"name": "spaced", "paths": [f"{base}/a.conf", f"{base}/b.conf"]}
    ansible("queuefleet.fleet.converged", {**spec, "state": "record"})
    assert ansible("queuefleet.fleet.converged", spec)["converged"] is True
    host.run_expect([0], f"echo edited > '{base}/a.conf'")
    found = ansible("queuefleet.fleet.converged", spec)
    assert found["converged"] is False and found["differs"] == [f"path {base}/a.conf"], found
    host.run_expect([0], f"rm -rf '{base}' /var/lib/queuefleet/converged/spaced.json")


@pytest.fixture(scope="module")
def second_checkout(tmp_path_factory) -> Path:
    """The project as another operator (or a CI runner) has it: same files, another path."""
    copy = tmp_path_factory.mktemp("another operator") / "queuefleet"
    shutil.copytree(PROJECT, copy, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".state", ".ansible", ".cache", "__pycache__", "build", "dist", "*.egg-info", ".pytest_cache"))
    return copy


def test_5_a_second_checkout_at_another_path_gets_the_skip(host, second_checkout):
    scenario_vars = {
        "queue_worker_package_src": str(second_checkout / "worker"),
        "queue_worker_app_packages": [{"name": "queuefleet-demo", "src": str(second_checkout / "examples/demo-app")}],
    }
    out = flat(play("deploy.yml", verbose=True, project=second_checkout, **scenario_vars))
    assert str(second_checkout) in out, "the playbooks and roles of the copy ran"
    assert changed(out) == 0 and skipped_roles(out) == set(SKIPPING_ROLES), out[-5000:]


def test_6_restart_of_a_pool_acts_on_what_is_deployed_not_on_an_undeployed_edit(host):
    deployed = pool_programs(host, SLOW)
    pids = {name: host.check_output(f"supervisorctl pid {name}") for name in deployed}
    default_pids = host.check_output(f"supervisorctl status | grep ^queuefleet-{DEFAULT}- | awk '{{print $4}}'")
    # The inventory now gives the pool another timeout (so other program names), not deployed yet.
    edited = [{**pool, "timeout": int(pool.get("timeout", 60)) + 5} if pool["name"] == SLOW else pool for pool in BASE_POOLS]
    out = play("playbooks/restart.yml", pools=SLOW, queue_worker_pools=edited)
    assert pool_programs(host, SLOW).keys() == deployed.keys(), "the deployed programs were restarted, none renamed"
    assert all(host.check_output(f"supervisorctl pid {name}") != pid for name, pid in pids.items()), out[-3000:]
    assert host.check_output(f"supervisorctl status | grep ^queuefleet-{DEFAULT}- | awk '{{print $4}}'") == default_pids
    # A pool that is not deployed at all is refused by name.
    refused = play("playbooks/restart.yml", expect_rc=2, pools="nosuchpool")
    assert "nosuchpool are not deployed" in flat(refused), refused[-2000:]
