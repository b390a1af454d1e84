"""The supervisor role's handler module (queuefleet.fleet.supervisor_apply) against a real supervisord.

Pool processes are programs named <pool>-<generation>_<NN> (roles/queue_worker). The
module must start only what was added when a pool grows, start a new generation before
the old one stops, stop the old one in the background (the play does not wait for a
job to finish), and leave the old processes running when the new ones cannot start.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"

# A worker stand-in: runs until TERM, then takes `drain` seconds to finish its "job".
WORKER = "/bin/sh -c 'trap \"sleep {drain}; exit 0\" TERM; while :; do sleep 0.1; done'"


class Supervisord:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.confd = tmp / "conf.d"
        self.confd.mkdir()
        self.conf = tmp / "supervisord.conf"
        self.conf.write_text(f"""[unix_http_server]
file={tmp}/supervisor.sock
chmod=0700

[supervisord]
logfile={tmp}/supervisord.log
pidfile={tmp}/supervisord.pid
childlogdir={tmp}
nodaemon=true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{tmp}/supervisor.sock

[include]
files = {self.confd}/*.conf
""")
        self.proc = subprocess.Popen([str(VENV_BIN / "supervisord"), "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while self.ctl("pid").returncode != 0:
            assert time.monotonic() < deadline, "supervisord did not start"
            time.sleep(0.2)

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "supervisorctl"), "-c", str(self.conf), *args],
                              capture_output=True, text=True, check=False)

    def status(self) -> dict[str, tuple[str, int | None]]:
        out = {}
        for line in self.ctl("status").stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                pid = int(parts[3].rstrip(",")) if parts[1] == "RUNNING" else None
                out[parts[0]] = (parts[1], pid)
        return out

    def write_pool(self, pool: str, generation: str, count: int, command: str, **options: str) -> None:
        sections = []
        for slot in range(count):
            lines = [f"[program:{pool}-{generation}_{slot:02d}]", f"command={command}", "startsecs=1",
                     "startretries=1", "stopwaitsecs=30", "autorestart=true"]
            lines += [f"{key}={value}" for key, value in options.items()]
            sections.append("\n".join(lines))
        (self.confd / f"{pool}.conf").write_text("\n\n".join(sections) + "\n")

    def apply(self, expect_rc: int = 0, programs: list[str] | None = None, check: bool = False) -> dict:
        env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
               "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
        result = subprocess.run(
            [str(VENV_BIN / "ansible"), "localhost", "-c", "local", "-m", "queuefleet.fleet.supervisor_apply",
             "-a", json.dumps({"config": str(self.conf), "start_timeout": 15, "drain_log": f"{self.tmp}/drain.log",
                               "programs": programs or []})] + (["--check"] if check else []),
            capture_output=True, text=True, env=env, check=False, timeout=120)
        assert result.returncode == expect_rc, result.stdout[-3000:] + result.stderr[-2000:]
        return json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(40)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def supervisord(tmp_path):
    server = Supervisord(tmp_path)
    yield server
    server.stop()


def running(server: Supervisord, prefix: str) -> dict[str, int]:
    return {name: pid for name, (state, pid) in server.status().items() if name.startswith(prefix) and state == "RUNNING"}


def test_scaling_up_starts_only_the_new_processes(supervisord):
    supervisord.write_pool("qf-mail", "aaaaaa", 2, WORKER.format(drain=0))
    first = supervisord.apply()
    assert first["added"] == ["qf-mail-aaaaaa_00", "qf-mail-aaaaaa_01"] and first["changed"]
    before = running(supervisord, "qf-mail")
    assert len(before) == 2

    supervisord.write_pool("qf-mail", "aaaaaa", 4, WORKER.format(drain=0))
    grown = supervisord.apply()
    assert grown["added"] == ["qf-mail-aaaaaa_02", "qf-mail-aaaaaa_03"] and grown["draining"] == []
    after = running(supervisord, "qf-mail")
    assert len(after) == 4 and {n: after[n] for n in before} == before, "a running process was restarted"

    assert supervisord.apply()["changed"] is False  # nothing left to apply


def test_a_new_generation_runs_before_the_old_one_drains_in_the_background(supervisord):
    supervisord.write_pool("qf-mail", "aaaaaa", 2, WORKER.format(drain=6))
    supervisord.apply()
    supervisord.write_pool("qf-mail", "bbbbbb", 2, WORKER.format(drain=0))
    started = time.monotonic()
    result = supervisord.apply()
    took = time.monotonic() - started
    assert result["added"] == ["qf-mail-bbbbbb_00", "qf-mail-bbbbbb_01"]
    assert result["draining"] == ["qf-mail-aaaaaa_00", "qf-mail-aaaaaa_01"]
    status = supervisord.status()
    # The module returned while the old processes still finish their 6 s "jobs"...
    assert took < 6 and all(status[f"qf-mail-aaaaaa_0{i}"][0] in ("RUNNING", "STOPPING") for i in (0, 1)), (took, status)
    # ...and the new ones already run.
    assert all(status[f"qf-mail-bbbbbb_0{i}"][0] == "RUNNING" for i in (0, 1)), status
    deadline = time.monotonic() + 30
    while any(name.startswith("qf-mail-aaaaaa") for name in supervisord.status()):
        assert time.monotonic() < deadline, supervisord.status()
        time.sleep(0.3)
    assert "qf-mail-aaaaaa" not in supervisord.ctl("avail").stdout
    # The background drain logs its end just after the last `remove`: wait for that line too.
    drain_log = supervisord.tmp / "drain.log"
    while not re.search(r"drained: qf-mail-aaaaaa_00 qf-mail-aaaaaa_01", drain_log.read_text()):
        assert time.monotonic() < deadline, drain_log.read_text()
        time.sleep(0.3)


def test_a_generation_that_cannot_start_leaves_the_old_one_running(supervisord):
    supervisord.write_pool("qf-mail", "aaaaaa", 2, WORKER.format(drain=0))
    supervisord.apply()
    before = running(supervisord, "qf-mail-aaaaaa")
    supervisord.write_pool("qf-mail", "cccccc", 2, "/bin/false")
    failed = supervisord.apply(expect_rc=2)
    assert "did not start" in failed["msg"] and "qf-mail-cccccc_00 is FATAL" in failed["msg"], failed["msg"]
    assert "keep running: qf-mail-aaaaaa_00, qf-mail-aaaaaa_01" in failed["msg"]
    assert running(supervisord, "qf-mail-aaaaaa") == before

    # A re-run does not take them away either while the pool has a failed process.
    again = supervisord.apply()
    assert again["held"] == ["qf-mail-aaaaaa_00", "qf-mail-aaaaaa_01"] and again["draining"] == []
    assert running(supervisord, "qf-mail-aaaaaa") == before


def test_a_stopped_or_fatal_program_is_started_and_named_with_its_stderr(supervisord):
    flag = supervisord.tmp / "broken"
    # Fails at start (exit 1 with a message on stderr) while the flag file exists.
    command = f"/bin/sh -c 'if [ -e {flag} ]; then echo cannot open the database >&2; exit 1; fi; exec sleep 1000'"
    supervisord.write_pool("qf-mail", "aaaaaa", 2, command)
    names = ["qf-mail-aaaaaa_00", "qf-mail-aaaaaa_01"]
    supervisord.apply(programs=names)
    supervisord.ctl("stop", "qf-mail-aaaaaa_00")
    flag.touch()
    supervisord.ctl("restart", "qf-mail-aaaaaa_01")  # crash loop until supervisor gives up: FATAL
    deadline = time.monotonic() + 30
    while supervisord.status()["qf-mail-aaaaaa_01"][0] != "FATAL":
        assert time.monotonic() < deadline, supervisord.status()
        time.sleep(0.3)
    flag.unlink()

    check = supervisord.apply(programs=names, check=True)  # check mode says what it would start, starts nothing
    assert sorted(p["name"] for p in check["started"]) == names and check["changed"]
    assert supervisord.status()["qf-mail-aaaaaa_00"][0] == "STOPPED"

    result = supervisord.apply(programs=names)
    was = {p["name"]: p["was"] for p in result["started"]}
    assert was == {"qf-mail-aaaaaa_00": "STOPPED", "qf-mail-aaaaaa_01": "FATAL"}, result
    fatal = next(p for p in result["started"] if p["name"] == "qf-mail-aaaaaa_01")
    assert "cannot open the database" in fatal["stderr"][-1], fatal
    assert set(running(supervisord, "qf-mail")) == set(names)
    assert supervisord.apply(programs=names)["changed"] is False


def test_a_program_that_cannot_be_brought_up_fails_within_seconds_naming_it(supervisord):
    flag = supervisord.tmp / "broken"
    command = f"/bin/sh -c 'if [ -e {flag} ]; then echo missing module myapp.jobs >&2; exit 1; fi; exec sleep 1000'"
    supervisord.write_pool("qf-mail", "aaaaaa", 1, command)
    supervisord.apply(programs=["qf-mail-aaaaaa_00"])
    supervisord.ctl("stop", "qf-mail-aaaaaa_00")
    flag.touch()
    started = time.monotonic()
    failed = supervisord.apply(expect_rc=2, programs=["qf-mail-aaaaaa_00"])
    took = time.monotonic() - started
    assert "qf-mail-aaaaaa_00 is FATAL" in failed["msg"] and "missing module myapp.jobs" in failed["msg"], failed["msg"]
    assert took < 15, f"took {took:.1f}s: it must not wait out a timeout for a process that cannot start"
