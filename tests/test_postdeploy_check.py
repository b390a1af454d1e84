"""The post-deploy checks' findings (plugins/filter/postdeploy_check.py) and the settle wait
(plugins/modules/supervisor_settle.py): unit tests of each, then the role's supervisor checks
(roles/postdeploy_check/tasks/supervisor.yml) run by ansible-playbook against a real supervisord."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
sys.path.insert(0, str(ROOT / "collections"))


def load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checks = load("postdeploy_check_filters", "plugins/filter/postdeploy_check.py")
settle_module = load("supervisor_settle_module", "plugins/modules/supervisor_settle.py")


def program(name, state="RUNNING", info="pid 1, uptime 0:01:00", stderr=()):
    return {"name": name, "state": state, "info": info, "stderr": list(stderr)}


def status(*programs, running=True, error=""):
    return {"running": running, "error": error, "programs": list(programs)}


POOLS = [{"name": "default", "numprocs": 2}, {"name": "slow", "numprocs": "1"}]


# --- supervisor findings ----------------------------------------------------------------------------

def test_a_healthy_host_has_no_findings():
    found = checks.postdeploy_supervisor_findings(
        status(program("queuefleet-default-aaaaaa_00"), program("queuefleet-default-aaaaaa_01"),
               program("queuefleet-slow-bbbbbb_00"), program("queuefleet_exporter")), pools=POOLS)
    assert found == {"failures": [], "warnings": []}


def test_a_failed_program_is_named_with_the_last_lines_of_its_stderr():
    stderr = [f"line {n}" for n in range(20)] + [""]
    found = checks.postdeploy_supervisor_findings(
        status(program("queuefleet-default-aaaaaa_00"), program("queuefleet-default-aaaaaa_01", "FATAL", "Exited too quickly", stderr),
               program("queuefleet-slow-bbbbbb_00", "BACKOFF", "", [])), pools=POOLS, stderr_lines=3)
    assert found["failures"] == [
        ["program queuefleet-default-aaaaaa_01 is FATAL (Exited too quickly)", "last lines of its stderr:",
         "  line 17", "  line 18", "  line 19"],
        ["program queuefleet-slow-bbbbbb_00 is BACKOFF", "(its stderr is empty)"],
        "pool default: 1 of 2 processes RUNNING",
        "pool slow: 0 of 1 processes RUNNING",
    ]


def test_pool_counts_follow_the_program_name_rule_and_ignore_draining_processes():
    found = checks.postdeploy_supervisor_findings(
        status(program("queuefleet-default-aaaaaa_00"),
               program("queuefleet-default-cccccc_00", "STOPPING"),          # an old generation draining
               program("queuefleet-default-extra"),                          # not a pool process name
               program("queuefleet-defaultish-aaaaaa_00"),                    # another pool's family
               program("queuefleet-slow-bbbbbb_00"), program("queuefleet-slow-bbbbbb_01")),
        pools=POOLS)
    assert found["failures"] == [
        "pool default: 1 of 2 processes RUNNING (supervisor knows 1 processes of pool default)",
        "pool slow: 2 of 1 processes RUNNING (supervisor knows 2 processes of pool slow)",
    ]
    assert found["warnings"] == ["programs of pool queuefleet-defaultish run but it is not a pool in the inventory"]


def test_another_prefix_is_read_with_that_prefix():
    found = checks.postdeploy_supervisor_findings(
        status(program("acme-default-aaaaaa_00"), program("acme-default-aaaaaa_01"), program("queuefleet-old-aaaaaa_00")),
        pools=[{"name": "default", "numprocs": 2}], prefix="acme-")
    assert found == {"failures": [], "warnings": []}


def test_supervisord_not_answering_is_a_failure():
    found = checks.postdeploy_supervisor_findings(status(running=False, error="unix:///run/supervisor.sock refused connection"),
                                                  pools=[{"name": "default", "numprocs": 1}])
    assert found["failures"] == ["supervisord does not answer: unix:///run/supervisor.sock refused connection",
                                 "pool default: 0 of 1 processes RUNNING (supervisor knows 0 processes of pool default)"]


def test_a_config_that_could_not_be_compared_is_a_warning_unless_supervisord_is_down():
    config = {"deferred": [], "restart": [], "note": "/run/x.conf is missing"}
    assert checks.postdeploy_supervisor_findings(status(), pools=[], config=config, config_path="/c")["warnings"] == ["/c: /run/x.conf is missing"]
    assert checks.postdeploy_supervisor_findings(status(running=False), pools=[], config=config)["warnings"] == []


def test_settings_supervisord_has_not_loaded_are_named():
    found = checks.postdeploy_supervisor_findings(
        status(), pools=[], config={"deferred": ["supervisord.loglevel"], "restart": ["unix_http_server.chmod"], "note": ""},
        config_path="/etc/supervisor/supervisord.conf")
    assert found["warnings"] == [
        "/etc/supervisor/supervisord.conf changed after supervisord started: the change waits for its next restart: "
        "supervisord.loglevel (a restart stops every worker: systemctl restart supervisor at a quiet time)",
        "/etc/supervisor/supervisord.conf differs from what supervisord runs in unix_http_server.chmod, which need its "
        "restart (it stops every worker: systemctl restart supervisor at a quiet time)",
    ]


@pytest.mark.parametrize("given, kwargs, message", [
    ("RUNNING", {"pools": []}, "expected the result of queuefleet.fleet.supervisor_status"),
    (status(), {"pools": "default"}, "pools must be a list of pools, each with a name"),
    (status(), {"pools": [{"numprocs": 1}]}, "pools must be a list of pools, each with a name"),
    (status(), {"pools": [{"name": "p", "numprocs": "two"}]}, 'numprocs of pool p must be a whole number \\(got "two"\\)'),
    (status(), {"pools": [], "prefix": ""}, "prefix must be the pools' program prefix"),
])
def test_supervisor_findings_refuse_bad_input(given, kwargs, message):
    with pytest.raises(AnsibleFilterError, match=message):
        checks.postdeploy_supervisor_findings(given, **kwargs)


# --- fleet findings -----------------------------------------------------------------------------------

CANARY = {"stdout": json.dumps({"results": [
    {"pool": "default", "job": "queuefleet.canary:ping", "queue": "high", "result": "done", "seconds": 0.4},
    {"pool": "slow", "job": "app.jobs:noop", "queue": "slow", "result": "timeout", "error": "not processed in 30s"},
    {"pool": "mail", "job": "queuefleet.canary:ping", "queue": "mail", "result": "skipped", "error": "unknown job"},
]}), "rc": 0}


def test_fleet_findings_sort_heartbeats_canaries_and_backlog():
    found = checks.postdeploy_fleet_findings(
        ["w1", "w2"], ["r1", "r1"], heartbeats={"rc": 0, "stdout": "4 workers on release r1\n", "stderr_lines": []},
        canary=CANARY, backlog={"rc": 0, "stdout_lines": ["ok   default 3 <= 100", "OVER slow 500 > 100"]})
    assert found == {
        "failures": ["pool slow: canary app.jobs:noop on queue slow timeout: not processed in 30s"],
        "warnings": ["pool mail: canary skipped: unknown job (set postdeploy_check_canary_job(s) to a harmless job of your app)",
                     ["backlog over threshold:", "  OVER slow 500 > 100"]],
        "passed": ["4 workers on release r1", "pool default: canary queuefleet.canary:ping on queue high processed in 0.4s"],
    }
    fatal = checks.postdeploy_fleet_findings(["w1"], ["r1"], backlog={"stdout_lines": ["OVER slow 500 > 100"]}, backlog_fatal=True)
    assert fatal["failures"] == [["backlog over threshold:", "  OVER slow 500 > 100"]] and fatal["warnings"] == []


def test_hosts_on_different_releases_are_named_each_with_its_own():
    found = checks.postdeploy_fleet_findings(["w1", "w2", "w3"], ["r2", "r1", ""], heartbeats={"skipped": True})
    assert found["failures"] == ["worker hosts do not run one release: w1=r2, w2=r1, w3=(none)"]


def test_missing_heartbeats_keep_the_last_20_useful_lines():
    stderr = ["queue: workers not on r1 yet", ""] + [f"  web1: pid {n} on r0" for n in range(25)]
    found = checks.postdeploy_fleet_findings(["w1"], ["r1"], heartbeats={"rc": 1, "stdout": "", "stderr_lines": stderr},
                                             heartbeat_timeout=30)
    failure = found["failures"][0]
    assert failure[0] == "heartbeats: not every worker reports release r1 within 30s:"
    assert failure[1:] == [f"  web1: pid {n} on r0" for n in range(5, 25)]


def test_a_canary_that_could_not_run_says_why():
    found = checks.postdeploy_fleet_findings(["w1"], ["r1"], canary={"rc": 2, "stdout": "", "stderr": "Traceback: " + "x " * 300})
    assert found["failures"][0].startswith("canary: could not run: Traceback: x x")
    assert found["failures"][0].endswith("...") and len(found["failures"][0]) < 440
    skipped = checks.postdeploy_fleet_findings(["w1"], ["r1"], canary={"skipped": True, "skip_reason": "check mode"})
    assert skipped == {"failures": [], "warnings": [], "passed": []}


@pytest.mark.parametrize("args, kwargs, message", [
    ((["w1", "w2"], ["r1"]), {}, "expected the worker hosts and, in the same order, the release each runs"),
    (("w1", ["r1"]), {}, "expected the worker hosts"),
    ((["w1"], ["r1"]), {"canary": "done"}, "canary must be the registered result of its task"),
])
def test_fleet_findings_refuse_bad_input(args, kwargs, message):
    with pytest.raises(AnsibleFilterError, match=message):
        checks.postdeploy_fleet_findings(*args, **kwargs)


# --- summary -----------------------------------------------------------------------------------------

def test_a_passing_summary_counts_hosts_and_warnings_and_lists_the_fleet():
    result = checks.postdeploy_summary(["db", "w1"], failures=[[], []], warnings=[[], ["programs of pool x run"]],
                                       fleet={"failures": [], "warnings": [], "passed": ["2 workers on release r1"]})
    assert result["ok"] is True and result["hosts"] == ["db", "w1"]
    assert result["warnings"] == [["w1: programs of pool x run"]]
    assert result["summary"].splitlines() == [
        "post-deploy checks passed on 2 host(s): db, w1 (1 warning(s))",
        "warnings:",
        "  - w1: programs of pool x run",
        "fleet:",
        "  - 2 workers on release r1",
    ]


def test_a_failing_summary_tags_each_finding_with_its_host_or_the_fleet():
    result = checks.postdeploy_summary(
        ["w1", "w2"], failures=[[["program p is FATAL", "last lines of its stderr:", "  boom"]], ["pool a: 0 of 1 processes RUNNING"]],
        warnings=[[], []], fleet={"failures": ["canary: could not run: x"], "warnings": [], "passed": []})
    assert result["ok"] is False
    assert result["summary"].splitlines() == [
        "post-deploy checks FAILED: 3 problem(s) on w1, w2",
        "  - w1: program p is FATAL",
        "      last lines of its stderr:",
        "        boom",
        "  - w2: pool a: 0 of 1 processes RUNNING",
        "  - fleet: canary: could not run: x",
    ]


def test_a_run_without_worker_hosts_has_no_fleet():
    result = checks.postdeploy_summary(["db"], failures=[[]], warnings=[[]], fleet=None)
    assert result == {"ok": True, "hosts": ["db"], "failures": [], "warnings": [], "passed": [],
                      "summary": "post-deploy checks passed on 1 host(s): db"}


@pytest.mark.parametrize("kwargs, message", [
    ({"failures": [[]]}, "failures must hold one list of findings per host, in the hosts' order \\(2 hosts"),
    ({"failures": [[], "x"]}, "failures must hold one list of findings per host"),
    ({"failures": [[], []], "warnings": [[], [[]]]}, "a finding is a line or a non-empty list of lines"),
    ({"failures": [[], []], "fleet": ["x"]}, "fleet must be postdeploy_fleet_findings' result"),
])
def test_the_summary_refuses_bad_input(kwargs, message):
    with pytest.raises(AnsibleFilterError, match=message):
        checks.postdeploy_summary(["a", "b"], **kwargs)


# --- the settle wait -----------------------------------------------------------------------------------

class FakeSupervisor:
    """supervisorctl status answers in turn, on a clock that each sleep moves by a second."""

    def __init__(self, answers):
        self.answers, self.now, self.asked = list(answers), 0.0, 0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds

    def status(self, config):
        self.asked += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def states(**programs):
    return {name: {"state": state, "info": ""} for name, state in programs.items()}, ""


def test_settle_waits_until_nothing_is_starting_or_backing_off():
    fake = FakeSupervisor([states(a="STARTING", b="RUNNING"), states(a="BACKOFF", b="STOPPING"), states(a="FATAL", b="STOPPING")])
    assert settle_module.settle("/c", 60, fake.clock, fake.sleep, fake.status) == (True, "", [], 2.0)
    assert fake.asked == 3


def test_settle_gives_up_at_the_timeout_naming_what_has_not_settled():
    fake = FakeSupervisor([states(a="BACKOFF", b="RUNNING")])
    assert settle_module.settle("/c", 5, fake.clock, fake.sleep, fake.status) == (True, "", ["a"], 5.0)
    fake = FakeSupervisor([states(a="STARTING")])
    assert settle_module.settle("/c", 0, fake.clock, fake.sleep, fake.status) == (True, "", ["a"], 0.0)


def test_settle_does_not_wait_for_a_supervisord_that_does_not_answer():
    fake = FakeSupervisor([(None, "unix:///run/supervisor.sock no such file")])
    assert settle_module.settle("/c", 60, fake.clock, fake.sleep, fake.status) == (False, "unix:///run/supervisor.sock no such file", [], 0.0)


CONF = "[supervisord]\nloglevel={level}\nlogfile=/var/log/supervisor/supervisord.log\n\n[unix_http_server]\nchmod={mode}\n"


def test_the_config_comparison_names_deferred_and_restart_settings(tmp_path):
    conf, copy = tmp_path / "supervisord.conf", tmp_path / "running.conf"
    copy.write_text(CONF.format(level="info", mode="0700"))
    conf.write_text(CONF.format(level="debug", mode="0700"))
    deferred = ["supervisord.loglevel", "supervisord.logfile_maxbytes"]
    assert settle_module.config_pending(str(conf), str(copy), deferred, time.time()) == \
        {"deferred": ["supervisord.loglevel"], "restart": [], "note": ""}
    conf.write_text(CONF.format(level="debug", mode="0770"))
    assert settle_module.config_pending(str(conf), str(copy), deferred, time.time()) == \
        {"deferred": ["supervisord.loglevel"], "restart": ["unix_http_server.chmod"], "note": ""}
    conf.write_text(CONF.format(level="info", mode="0700"))
    assert settle_module.config_pending(str(conf), str(copy), deferred, time.time()) == {"deferred": [], "restart": [], "note": ""}


def test_without_a_running_copy_the_file_counts_only_if_written_before_supervisord_started(tmp_path):
    conf = tmp_path / "supervisord.conf"
    conf.write_text(CONF.format(level="debug", mode="0700"))
    missing = str(tmp_path / "none.conf")
    written = conf.stat().st_mtime
    assert settle_module.config_pending(str(conf), missing, [], written + 10) == {"deferred": [], "restart": [], "note": ""}
    later = settle_module.config_pending(str(conf), missing, [], written - 10)
    assert later == {"deferred": [], "restart": [], "note": f"{missing} is missing and {conf} was written after supervisord started: "
                                                            "which of its settings supervisord has not loaded is unknown"}
    assert settle_module.config_pending(str(tmp_path / "absent.conf"), missing, [], None)["note"].endswith("absent.conf cannot be read")


# --- the role's supervisor checks against a real supervisord ------------------------------------------------

PLAYBOOK = """
- name: The post-deploy supervisor checks
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Run roles/postdeploy_check/tasks/supervisor.yml
      ansible.builtin.include_role:
        name: queuefleet.fleet.postdeploy_check
        tasks_from: supervisor
      vars:
        __postdeploy_check_failures: []
        __postdeploy_check_warnings: []
    - name: Show the findings
      ansible.builtin.debug:
        msg: {"failures": "{{ __postdeploy_check_failures }}", "warnings": "{{ __postdeploy_check_warnings }}",
              "waited": "{{ __postdeploy_check_settle.waited }}"}
"""


def test_the_role_waits_for_a_crashing_program_to_end_fatal_and_names_it_with_its_stderr(tmp_path):
    if not (VENV_BIN / "supervisord").exists():
        pytest.skip("supervisor is not installed in .venv")
    conf = tmp_path / "supervisord.conf"
    conf.write_text(f"""[unix_http_server]
file={tmp_path}/s.sock
[supervisord]
logfile={tmp_path}/supervisord.log
pidfile={tmp_path}/supervisord.pid
childlogdir={tmp_path}
nodaemon=true
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{tmp_path}/s.sock
[program:qf-mail-abcdef_00]
command=/bin/sh -c 'while :; do sleep 1; done'
startsecs=0
[program:qf-mail-abcdef_01]
command=/bin/sh -c 'echo cannot import app.jobs >&2; sleep 1.5; exit 3'
startsecs=2
startretries=1
stderr_logfile={tmp_path}/crash.err
[program:qf-gone-012345_00]
command=/bin/sh -c 'while :; do sleep 1; done'
startsecs=0
""")
    time.sleep(1.1)  # the file is older than supervisord, as on a host (its start time is read to 1/100 s, boot time to 1 s)
    server = subprocess.Popen([str(VENV_BIN / "supervisord"), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ctl = [str(VENV_BIN / "supervisorctl"), "-c", str(conf)]
        deadline = time.monotonic() + 15
        while subprocess.run(ctl + ["pid"], capture_output=True, check=False).returncode != 0:
            assert time.monotonic() < deadline, "supervisord did not start"
            time.sleep(0.2)
        book = tmp_path / "check.yml"
        book.write_text(PLAYBOOK)
        env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
               "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
        extra = {"ansible_python_interpreter": sys.executable, "postdeploy_check_supervisord_conf": str(conf),
                 "postdeploy_check_program_prefix": "qf-",
                 "postdeploy_check_settle_timeout": 30, "postdeploy_check_stderr_lines": 5,
                 "postdeploy_check_pools": [{"name": "mail", "queues": ["mail"], "numprocs": 2}]}
        done = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(book), "-e", json.dumps(extra)],
                              capture_output=True, text=True, env=env, check=False, timeout=180)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        tasks = json.loads(done.stdout)["plays"][0]["tasks"]
        shown = tasks[-1]["hosts"]["localhost"]["msg"]
    finally:
        server.terminate()
        server.wait(30)
    assert shown["failures"] == [
        ["program qf-mail-abcdef_01 is FATAL (Exited too quickly (process log may have details))",
         "last lines of its stderr:", "  cannot import app.jobs", "  cannot import app.jobs"],  # startretries=1: two tries
        "pool mail: 1 of 2 processes RUNNING",
    ]
    assert shown["warnings"] == ["programs of pool qf-gone run but it is not a pool in the inventory"]
    assert float(shown["waited"]) >= 2, "judged before the crashing program had settled"
