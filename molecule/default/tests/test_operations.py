"""Config snapshots, restore, post-deploy checks and auto rollback (issue 5), in order.

Runs deploy.yml / restore_config.yml / check.yml against the converged host with
its own ansible-playbook invocations (the scenario's inventory gets an
environment group through -e, which deploy.yml's guard needs), and only reads
the host otherwise:

1. the checks pass on the converged host;
2. a deploy that changes nothing reports changed=0 and makes no snapshot;
3. a deploy that changes a pool makes exactly one snapshot, holding the previous bytes;
4. restoring it brings back those bytes and the pool's processes;
5. retention keeps the newest config_backup_keep snapshots;
6. a pool whose canary job cannot run fails the deploy with that pool named;
7. with queue_worker_auto_rollback a failed check puts the fleet back on the previous release,
   and the release hooks run at their points (before_switch, after_switch, after_restart,
   after_rollback), and never without a release change;
9. Redis takes a maxmemory change live (CONFIG SET, same PID) and restarts for a save rule;
10. MariaDB takes a wait_timeout change live (SET GLOBAL, same PID);
11. a supervisord log-level change waits for its next restart (same PIDs, a warning until then),
    and a pool with its own user gets that user, in the worker group;
12. the role's default failed-jobs database (SQLite) works on one host;
13. a re-deploy skips the roles whose last full run still holds, and a hand-made change in any
    of them makes that role run in full and repair it (queuefleet.fleet.converged, issue 10);
and the converged state is restored at the end (the check-mode run that follows
must see nothing to change).

Also runs against the demo container:
  MOLECULE_INVENTORY_FILE=$PWD/inventories/demo/hosts.yml QF_TEST_LIMIT=demo \
    .venv/bin/python -m pytest molecule/default/tests/test_operations.py --hosts=docker://queuefleet-demo
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from helpers import BASE_POOLS, INVENTORY, LIMIT, PROJECT, SCENARIO, changed, flat, play, running

BACKUPS = "/var/backups/queuefleet"
QUEUE = "/opt/queuefleet/current/bin/queue --env-file /opt/queuefleet/shared/queuefleet.env"

pytestmark = pytest.mark.skipif(not INVENTORY, reason="runs inside molecule verify")


def snapshots(host) -> list[str]:
    out = host.run(f"ls {BACKUPS} 2>/dev/null").stdout.split()
    return sorted(n for n in out if n.endswith(".tar.gz"))


def sha(host, path: str) -> str:
    return host.check_output(f"sha256sum {path}").split()[0]


def current_release(host) -> str:
    return host.check_output("readlink /opt/queuefleet/current").rsplit("/", 1)[-1]


def with_numprocs(pool: str, numprocs: int) -> list[dict]:
    return [{**p, "numprocs": numprocs} if p["name"] == pool else p for p in BASE_POOLS]


SLOW = BASE_POOLS[-1]["name"]
SLOW_CONF = f"/etc/supervisor/conf.d/queuefleet-{SLOW}.conf"
STATE: dict = {}


def test_1_checks_pass_on_the_converged_host(host):
    out = play("playbooks/check.yml")
    assert "post-deploy checks passed" in out
    assert re.search(r"all \d+ workers on 1 host run release", out), out[-3000:]


def test_2_noop_deploy_changes_nothing_and_makes_no_snapshot(host):
    play("deploy.yml")  # the first deploy.yml of the scenario may create the snapshot directory
    before = snapshots(host)
    out = play("deploy.yml")
    assert changed(out) == 0, out[-4000:]
    assert snapshots(host) == before
    assert host.run(f"test -e {BACKUPS}/.staging").rc != 0, "the staged snapshot of a no-op run must be deleted"
    STATE["snapshots"] = before
    STATE["slow_conf"] = sha(host, SLOW_CONF)
    STATE["env"] = sha(host, "/opt/queuefleet/shared/queuefleet.env")


def test_3_changing_a_pool_makes_one_snapshot_with_the_previous_bytes(host):
    out = play("deploy.yml", queue_worker_pools=with_numprocs(SLOW, BASE_POOLS[-1]["numprocs"] + 1))
    new = sorted(set(snapshots(host)) - set(STATE["snapshots"]))
    assert len(new) == 1, (new, out[-3000:])
    assert running(host, SLOW) == BASE_POOLS[-1]["numprocs"] + 1
    d = host.file(BACKUPS)
    assert d.mode == 0o700 and d.user == "root"
    snap = host.file(f"{BACKUPS}/{new[0]}")
    assert snap.mode == 0o600 and snap.user == "root"
    held = host.check_output(f"tar -xzOf {BACKUPS}/{new[0]} {SLOW_CONF.lstrip('/')} | sha256sum").split()[0]
    assert held == STATE["slow_conf"], "the snapshot must hold the config as it was before the change"
    assert re.match(r"^\d{8}T\d{6}Z-[A-Za-z0-9_.-]+\.tar\.gz$", new[0])
    STATE["snapshot"] = new[0]


def test_4_restore_brings_back_the_bytes_and_the_pool(host):
    out = play("playbooks/restore_config.yml", backup=STATE["snapshot"].removesuffix(".tar.gz"))
    assert sha(host, SLOW_CONF) == STATE["slow_conf"]
    assert sha(host, "/opt/queuefleet/shared/queuefleet.env") == STATE["env"]
    assert running(host, SLOW) == BASE_POOLS[-1]["numprocs"]
    assert "post-deploy checks passed" in out
    # The restore snapshotted the state it replaced, and the inventory now matches the host again.
    assert len(snapshots(host)) == len(STATE["snapshots"]) + 2
    assert changed(play("deploy.yml")) == 0


def test_5_retention_keeps_the_newest(host):
    # Two deploys, not more (each is a full deploy): tests 3 and 4 left at least two snapshots.
    before = set(snapshots(host))
    assert len(before) >= 2
    play("deploy.yml", queue_worker_pools=with_numprocs(SLOW, BASE_POOLS[-1]["numprocs"] + 1), config_backup_keep=1)
    kept = snapshots(host)
    assert len(kept) == 1 and kept[0] not in before, (sorted(before), kept)  # the new one kept, every older one pruned
    play("deploy.yml", config_backup_keep=1)  # back to the converged pools
    assert len(snapshots(host)) == 1 and snapshots(host) != kept
    assert running(host, SLOW) == BASE_POOLS[-1]["numprocs"]


def test_6_a_broken_pool_fails_the_deploy_naming_it(host):
    out = play("deploy.yml", expect_rc=2, postdeploy_check_canary_jobs={SLOW: "queuefleet_demo.missing:run"})
    assert "post-deploy checks FAILED" in out
    assert f"pool {SLOW}: canary queuefleet_demo.missing:run" in out
    assert "No module named 'queuefleet_demo.missing'" in out


@pytest.fixture(scope="module")
def release2_src(tmp_path_factory):
    src = tmp_path_factory.mktemp("ops-app") / "demo-app"
    shutil.copytree(PROJECT / "examples" / "demo-app", src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    init = src / "src" / "queuefleet_demo" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "1.0.0"', '__version__ = "3.0.0-ops"'))
    return src


def releases(host) -> set[str]:
    return set(host.check_output("ls /opt/queuefleet/releases").split())


HOOKS = {point: str(SCENARIO / "hooks" / "record.yml") for point in ("before_switch", "after_switch", "after_restart", "after_rollback")}
HOOK_LOG = "/var/log/queuefleet-hooks.log"


def hook_lines(host) -> list[str]:
    return host.run(f"cat {HOOK_LOG} 2>/dev/null").stdout.splitlines()


def test_7_auto_rollback_puts_the_fleet_back_on_the_previous_release(host, release2_src):
    """Also the release hooks (queue_worker_hooks): each point runs once, in order, where it should."""
    release1 = STATE["release1"] = current_release(host)
    STATE["releases"] = releases(host)
    hooks_before = hook_lines(host)
    out = play("deploy.yml", expect_rc=2, queue_worker_auto_rollback=True, queue_worker_hooks=HOOKS,
               queue_worker_app_packages=[{"name": "queuefleet-demo", "src": str(release2_src)}],
               postdeploy_check_canary_jobs={SLOW: "queuefleet_demo.missing:run"})
    assert "post-deploy checks of release" in out and f"rolled back to release {release1}" in out, out[-5000:]
    assert current_release(host) == release1
    workers = json.loads(host.check_output(f"{QUEUE} status --json"))["workers"]
    assert workers and all(w["release"] == release1 for w in workers), workers

    (release2,) = releases(host) - STATE["releases"]
    assert hook_lines(host)[len(hooks_before):] == [
        f"before_switch {release2} {release1} installed",   # installed, current not moved yet
        f"after_switch {release2} {release2} installed",
        f"after_restart {release2} {release2} installed",
        f"after_rollback {release1} {release1} installed",
    ], out[-3000:]


def test_8_converged_state_is_back(host):
    # Remove the release test 7 installed, so later "previous release" rollbacks
    # (tests/test_workers.py) do not pick it.
    for extra in sorted(releases(host) - STATE["releases"]):
        assert extra != current_release(host)
        subprocess.run(["ansible", "-i", INVENTORY, LIMIT, "-b", "-m", "ansible.builtin.file",
                        "-a", f"path=/opt/queuefleet/releases/{extra} state=absent"], check=True, capture_output=True, cwd=PROJECT)
        subprocess.run(["ansible", "-i", INVENTORY, LIMIT, "-b", "-m", "ansible.builtin.file",
                        "-a", f"path=/opt/queuefleet/wheelhouse/{extra} state=absent"], check=True, capture_output=True, cwd=PROJECT)
    play("deploy.yml")
    assert current_release(host) == STATE["release1"]
    hooks_before = hook_lines(host)
    out = play("deploy.yml", queue_worker_hooks=HOOKS)
    assert changed(out) == 0, out[-3000:]
    assert hook_lines(host) == hooks_before, "no release change, no hook"


def redis_pid(host) -> str:
    return host.check_output("systemctl show -p MainPID --value redis-server")


def redis_config(host, key: str) -> str:
    password = (Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "secrets" / "redis").read_text().split()[0]
    return host.check_output(f"REDISCLI_AUTH={password} redis-cli -h 127.0.0.1 --raw config get {key}").splitlines()[1]


def test_9_redis_takes_live_settings_without_a_restart(host):
    """Settings Redis takes live, a save rule among them, change with CONFIG SET: same PID. (The
    restart path, for a setting it cannot take live, is in test_converge.py, tests 2 and 3.)"""
    pid = redis_pid(host)
    out = flat(play("playbooks/redis.yml", redis_maxmemory="96mb", redis_save=["900 1"]))
    assert f"set live: maxmemory 96mb (running: {64 * 1024 * 1024}), save 900 1 (running: 3600 1 300 100 60 10000)" in out, out[-3000:]
    assert "redis-server restarts" not in out
    assert redis_pid(host) == pid, "redis-server restarted for a setting it takes live"
    assert redis_config(host, "maxmemory") == str(96 * 1024 * 1024) and redis_config(host, "save") == "900 1"
    assert "maxmemory 96mb" in host.check_output("grep ^maxmemory /etc/redis/redis.conf")

    play("playbooks/redis.yml")  # back to the converged settings, live again
    assert redis_config(host, "save") == "3600 1 300 100 60 10000" and redis_pid(host) == pid


def test_10_mariadb_takes_live_options_without_a_restart(host):
    def pid() -> str:
        return host.check_output("systemctl show -p MainPID --value mariadb")

    def wait_timeout() -> str:
        return host.check_output("mysql -NBe 'SELECT @@global.wait_timeout'")

    before, converged = pid(), wait_timeout()
    out = flat(play("playbooks/mysql.yml", mysql_wait_timeout=int(converged) // 2))
    assert f"set live: wait_timeout {int(converged) // 2} (running: {converged})" in out, out[-3000:]
    assert "the server restarts" not in out
    assert pid() == before, "the server restarted for an option it takes live"
    assert wait_timeout() == str(int(converged) // 2)
    play("playbooks/mysql.yml")  # back to the converged settings, live again
    assert wait_timeout() == converged and pid() == before


def supervisord_pid(host) -> str:
    return host.check_output("supervisorctl pid")


def test_11_loglevel_waits_for_supervisord_and_a_pool_user_is_created(host):
    """A supervisord log-level change leaves supervisord and every worker running (a restart
    would stop them all at once); the checks say it is pending until supervisord restarts. A
    pool with its own user: the user is created in the worker group and its processes run."""
    before = supervisord_pid(host)
    workers_before = host.check_output("pgrep -u queuefleet -f 'queue .*work' | sort")
    pools = BASE_POOLS + [{"name": "owned", "queues": ["owned"], "numprocs": 1, "user": "qfowned"}]
    out = play("playbooks/workers.yml", supervisor_loglevel="debug", queue_worker_pools=pools)
    assert "supervisord.loglevel changed; supervisord keeps running" in flat(out), out[-3000:]
    assert "supervisord restarts:" not in out
    assert supervisord_pid(host) == before, "supervisord restarted for its log level"
    assert host.check_output("pgrep -u queuefleet -f 'queue .*work' | sort") == workers_before
    assert "loglevel=debug" in host.check_output("grep ^loglevel /etc/supervisor/supervisord.conf")

    assert "queuefleet" in host.check_output("id -nG qfowned").split()
    assert host.check_output("getent passwd qfowned").endswith(":/usr/sbin/nologin")
    status = host.check_output("supervisorctl status | grep '^queuefleet-owned-'")
    assert "RUNNING" in status, status
    pid = re.search(r"pid (\d+)", status).group(1)
    assert host.check_output(f"ps -o user= -p {pid}") == "qfowned"

    out = play("playbooks/check.yml")
    assert "changed after supervisord started: the change waits for its next restart" in flat(out), out[-3000:]

    play("playbooks/workers.yml")  # back to the inventory: the owned pool drains, loglevel info
    assert "loglevel=info" in host.check_output("grep ^loglevel /etc/supervisor/supervisord.conf")
    host.run_expect([0], "systemctl restart supervisor")  # the quiet-time restart an operator would do
    out = play("playbooks/check.yml")
    assert "post-deploy checks passed" in out and "changed after supervisord started" not in flat(out), out[-3000:]


def test_12_the_default_failed_jobs_database_works_on_one_host(host):
    """The role's default queue_worker_database_url (SQLite in shared/data) as a user who sets no
    database gets it: the table is created, and a failed job lands in it, written by the worker."""
    default = yaml.safe_load((PROJECT / "roles/queue_worker/defaults/main.yml").read_text())["queue_worker_database_url"]
    assert default.startswith("sqlite:///"), default
    db = "/opt/queuefleet/shared/data/failed_jobs.sqlite3"
    # The same deploy also renders the pools from a site copy of the role's program template
    # (queue_worker_program_template), as an operator who needs one more supervisor setting would.
    site_template = Path(tempfile.mkdtemp()) / "pool.conf.j2"
    role_template = (PROJECT / "roles/queue_worker/templates/program.conf.j2").read_text()
    site_template.write_text(role_template.replace("autorestart=true\n", "autorestart=true\n; site: molecule pool template\n"))
    assert site_template.read_text() != role_template
    try:
        out = play("playbooks/workers.yml", queue_worker_database_url=default, queue_worker_program_template=str(site_template))
        programs = host.check_output(f"cat /etc/supervisor/conf.d/queuefleet-{SLOW}.conf")
        assert "; site: molecule pool template" in programs, programs
        status = host.check_output("supervisorctl status")
        for program in re.findall(r"^\[program:(\S+)\]", programs, re.M):
            assert re.search(rf"^{re.escape(program)}\s+RUNNING", status, re.M), (program, status)
        assert "Create the failed_jobs table" in out
        assert host.file(db).exists and host.file(db).user == "queuefleet", "migrate creates it as the worker user"
        assert (host.file(db).group, host.file(db).mode) == ("queuefleet", 0o660), "every pool user may write it"
        job = host.check_output(f"{QUEUE} push queuefleet_demo.jobs:fail --queue default --tries 1 --data '{{\"id\": \"sqlite-default\"}}'")
        found = host.run(f"for i in $(seq 60); do {QUEUE} failed --json | grep -q sqlite-default && break; sleep 0.5; done;"
                         f" {QUEUE} failed --json")
        failed = json.loads(found.stdout)
        assert any("sqlite-default" in json.dumps(row) for row in failed), (job, failed)
    finally:
        play("playbooks/workers.yml")  # back to the inventory's MariaDB


SKIPPING_ROLES = ("redis", "mysql", "supervisor", "queue_worker", "logrotate")


def skipped_roles(out: str) -> set[str]:
    return {role for role in SKIPPING_ROLES if re.search(rf"{role}: inputs and host state \(\d+ items\) unchanged", out)}


def test_13_unchanged_roles_are_skipped_and_drift_in_each_is_repaired(host):
    """A re-deploy skips every role whose last full run still holds (issue 10's no-op deploy);
    a change made by hand behind the deploy's back, in any of them, makes that role run in full
    and repair it."""
    play("deploy.yml")
    out = flat(play("deploy.yml", verbose=True))
    assert changed(out) == 0 and skipped_roles(out) == set(SKIPPING_ROLES), out[-4000:]

    conf = "/etc/redis/redis.conf"
    exporter = "/etc/supervisor/conf.d/queuefleet_exporter.conf"
    # A program of supervisor_programs where the inventory has one (molecule), else supervisord.conf.
    program = "/etc/supervisor/conf.d/heartbeat.conf"
    supervisor_file = program if host.file(program).exists else "/etc/supervisor/supervisord.conf"
    host.run_expect([0], f"sed -i 's/^appendfsync .*/appendfsync always/' {conf}")
    host.run_expect([0], "mysql -e 'DROP USER queuefleet@127.0.0.1'")
    host.run_expect([0], f"rm {SLOW_CONF} {exporter} && supervisorctl update")
    host.run_expect([0], "systemctl stop logrotate.timer")
    host.run_expect([0], f"rm {program} && supervisorctl update" if supervisor_file == program else f"chmod 0644 {supervisor_file}")
    out = flat(play("deploy.yml", verbose=True))
    assert "redis: host state differs from the full run of" in out and f"path {conf}" in out, out[-4000:]
    assert "mysql: host state differs" in out and "(command accounts)" in out
    differs = re.search(r"queue_worker: host state differs from the full run of \S+ \(([^)]*)\)", out)
    assert differs and {f"path {exporter}", f"path {SLOW_CONF}", "program queuefleet_exporter"} <= set(differs.group(1).split(", ")), out[-4000:]
    assert "logrotate: host state differs" in out and "(service logrotate.timer)" in out
    assert "supervisor: host state differs" in out and f"path {supervisor_file}" in out
    assert skipped_roles(out) == set(), "every role that drifted ran in full"
    assert host.check_output(f"grep ^appendfsync {conf}") == "appendfsync everysec"
    assert host.check_output("mysql -NBe \"SELECT COUNT(*) FROM mysql.user WHERE user = 'queuefleet'\"") == "1"
    assert running(host, SLOW) == BASE_POOLS[-1]["numprocs"]
    assert "RUNNING" in host.check_output("supervisorctl status queuefleet_exporter")
    assert host.check_output("systemctl is-active logrotate.timer") == "active"
    assert host.file(supervisor_file).exists and host.file(supervisor_file).mode in (0o600, 0o644)
    if supervisor_file == program:
        assert "RUNNING" in host.check_output("supervisorctl status heartbeat")
    else:
        assert host.file(supervisor_file).mode == 0o600
    assert "post-deploy checks passed" in out
    for role in SKIPPING_ROLES:  # every path a probe reads is a real one (a Jinja escape once made them literal "\\1")
        items = json.loads(host.file(f"/var/lib/queuefleet/converged/{role}.json").content_string)["items"]
        assert not [key for key in items if "\\" in key], items

    out = flat(play("deploy.yml", verbose=True))
    assert changed(out) == 0 and skipped_roles(out) == set(SKIPPING_ROLES), out[-4000:]
    out = flat(play("deploy.yml", verbose=True, queuefleet_converged_skip=False))
    assert changed(out) == 0 and skipped_roles(out) == set(), "queuefleet_converged_skip=false runs every task"
