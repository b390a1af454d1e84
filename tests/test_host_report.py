"""The report (playbooks/report.yml): the queuefleet.fleet.host_report module's readers, the Redis
password kept out of the unauthenticated PING and out of the output, and the text of the
queuefleet.fleet.host_report_text filter, which must stay the report README.md shows."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"


def load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = load("host_report_module", "plugins/modules/host_report.py")
text = load("host_report_text_filter", "plugins/filter/host_report_text.py").host_report_text

SYSTEMCTL = """LoadState=loaded
SubState=running
UnitFileState=enabled

LoadState=not-found
SubState=dead
UnitFileState=

LoadState=loaded
SubState=exited
UnitFileState=disabled
"""


def test_units_are_read_in_the_order_asked():
    assert report.parse_units(["redis-server", "mariadb", "supervisor"], SYSTEMCTL) == {
        "redis-server": {"installed": True, "state": "running", "enabled": "enabled"},
        "mariadb": {"installed": False, "state": "", "enabled": ""},
        "supervisor": {"installed": True, "state": "exited", "enabled": "disabled"},
    }
    assert report.parse_units(["redis-server"], "")["redis-server"]["installed"] is False  # systemctl failed


def test_listening_sockets_are_unique_and_sorted():
    ss = ("LISTEN 0 511 127.0.0.1:6379 0.0.0.0:*\nLISTEN 0 80 127.0.0.1:3306 0.0.0.0:*\n"
          "LISTEN 0 511 127.0.0.1:6379 0.0.0.0:*\nLISTEN 0 4096 [::1]:9090 [::]:*\n")
    assert report.parse_listening(ss) == ["127.0.0.1:3306", "127.0.0.1:6379", "[::1]:9090"]


def test_mariadb_answers_are_split_into_lists():
    assert report.parse_mysql("11.8.3-MariaDB\nqueuefleet,shop\nqueuefleet@127.0.0.1\n0\n") == {
        "version": "11.8.3-MariaDB", "databases": ["queuefleet", "shop"], "app_users": ["queuefleet@127.0.0.1"], "anonymous_users": 0}
    assert report.parse_mysql("10.11.6-MariaDB\nNULL\nNULL\n1\n")["databases"] == []


def test_supervisor_programs_keep_their_order_and_info():
    out = ("queuefleet-default-d3668b_00   RUNNING   pid 3230, uptime 0:00:17\n"
           "queuefleet-slow-bd6fb9_00      FATAL     Exited too quickly (process log may have details)\n"
           "queuefleet_exporter            STOPPED   Not started\n")
    assert report.parse_supervisor(out) == [
        {"name": "queuefleet-default-d3668b_00", "state": "RUNNING", "info": "pid 3230, uptime 0:00:17"},
        {"name": "queuefleet-slow-bd6fb9_00", "state": "FATAL", "info": "Exited too quickly (process log may have details)"},
        {"name": "queuefleet_exporter", "state": "STOPPED", "info": "Not started"},
    ]


@pytest.fixture
def fake_redis_cli(tmp_path, monkeypatch):
    """A redis-cli on PATH that logs its arguments and whether it got a password, and answers like Redis."""
    log = tmp_path / "calls.log"
    script = tmp_path / "redis-cli"
    script.write_text(f"""#!/bin/sh
echo "$* auth=${{REDISCLI_AUTH:-none}}" >> {log}
case "$*" in
  *"info server"*) printf 'redis_version:7.0.15\\r\\nredis_mode:standalone\\r\\n' ;;
  *"config get maxmemory-policy"*) printf 'maxmemory-policy\\nnoeviction\\n' ;;
  *"config get maxmemory"*) printf 'maxmemory\\n134217728\\n' ;;
  *"config get appendonly"*) printf 'appendonly\\nyes\\n' ;;
  *"config get appendfsync"*) printf 'appendfsync\\neverysec\\n' ;;
  *ping*) [ -n "$REDISCLI_AUTH" ] && echo PONG || echo 'NOAUTH Authentication required.' ;;
esac
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("REDISCLI_AUTH", "from-the-environment")  # must not reach the unauthenticated PING
    return log


def test_redis_is_asked_with_its_password_and_pinged_without_it(fake_redis_cli):
    found = report.read_redis(6380, "s3cret")
    assert found == {"version": "7.0.15", "appendonly": "yes", "appendfsync": "everysec", "maxmemory": 134217728,
                     "maxmemory_policy": "noeviction", "unauthenticated_ping": "NOAUTH Authentication required.",
                     "role": "", "master": "", "master_link": "", "connected_replicas": 0}
    calls = fake_redis_cli.read_text().splitlines()
    assert all("-p 6380" in call for call in calls)
    assert [call.rsplit(" auth=", 1)[1] for call in calls] == ["s3cret"] * 6 + ["none"]
    assert calls[-1].startswith("--no-auth-warning -h 127.0.0.1 -p 6380 ping")


def test_the_module_never_shows_the_password_even_at_vvv():
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_LOCALHOST_WARNING": "0",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0", "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    done = subprocess.run([str(VENV_BIN / "ansible"), "localhost", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
                           "-m", "queuefleet.fleet.host_report", "-a",
                           json.dumps({"redis": True, "redis_password": "Sup3r-s3cret-pw", "mysql": True, "supervisor": True}),
                           "--check", "-vvv"], capture_output=True, text=True, env=env, check=False, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Sup3r-s3cret-pw" not in done.stdout + done.stderr
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in done.stdout
    assert re.search(r"\bservices:", done.stdout) and re.search(r"\blistening:", done.stdout)


DEMO = {
    "services": {"redis-server": {"installed": True, "state": "running", "enabled": "enabled"},
                 "mariadb": {"installed": True, "state": "running", "enabled": "enabled"},
                 "supervisor": {"installed": True, "state": "running", "enabled": "enabled"}},
    "listening": ["127.0.0.1:3306", "127.0.0.1:6379", "127.0.0.1:9818"],
    "redis": {"version": "8.0.2", "appendonly": "yes", "appendfsync": "everysec", "maxmemory": 134217728,
              "maxmemory_policy": "noeviction", "unauthenticated_ping": "NOAUTH Authentication required."},
    "mysql": {"version": "11.8.9-MariaDB-0+deb13u1 from Debian", "databases": ["queuefleet"],
              "app_users": ["queuefleet@127.0.0.1"], "anonymous_users": 0},
    "supervisor": {"programs": [
        {"name": "queuefleet-default-d3668b_00", "state": "RUNNING", "info": "pid 3230, uptime 0:00:17"},
        {"name": "queuefleet-default-d3668b_01", "state": "RUNNING", "info": "pid 3231, uptime 0:00:17"},
        {"name": "queuefleet-slow-bd6fb9_00", "state": "RUNNING", "info": "pid 3232, uptime 0:00:17"},
        {"name": "queuefleet_exporter", "state": "RUNNING", "info": "pid 3233, uptime 0:00:17"}], "error": ""},
}


def test_the_demo_report_is_the_one_the_readme_shows():
    readme = (ROOT / "README.md").read_text()
    sample = readme[readme.index("queuefleet report: queuefleet-demo"):]
    sample = sample[: sample.index("\n[demo]")]
    assert text(DEMO, host="queuefleet-demo", distribution="Debian", distribution_version="13.8", environments=["demo"],
                redis_password_set=True) == sample


def test_a_host_that_runs_nothing_yet_reports_its_services_missing():
    empty = {"services": {unit: {"installed": False, "state": "", "enabled": ""} for unit in ("redis-server", "mariadb", "supervisor")},
             "listening": [], "redis": None, "mysql": None, "supervisor": None}
    assert text(empty, host="fresh", distribution="Debian", distribution_version="12.9", environments=["staging"]).splitlines() == [
        "queuefleet report: fresh (Debian 12.9, env staging)", "  listening TCP: "]
    stopped = dict(empty, supervisor={"programs": [], "error": "unix:///run/supervisor.sock no such file"})
    assert text(stopped).splitlines()[2:] == ["  supervisor: missing, not installed", "      programs: 0",
                                              "      supervisorctl: unix:///run/supervisor.sock no such file"]


def test_redis_without_a_limit_or_password_says_so():
    lines = text(dict(DEMO, mysql=None, supervisor=None, redis=dict(DEMO["redis"], maxmemory=0))).splitlines()
    assert "maxmemory=unlimited" in lines[3] and lines[4].startswith("      password: none (loopback only);")


@pytest.mark.parametrize("given", [None, "report", {"services": {}}, {"listening": []}])
def test_the_text_refuses_anything_but_the_modules_result(given):
    with pytest.raises(AnsibleFilterError, match="host_report_text: expected the result of queuefleet.fleet.host_report"):
        text(given)


def test_the_report_shows_the_redis_topology():
    replica = {**DEMO, "redis": {**DEMO["redis"], "role": "slave", "master": "10.0.0.11:6379", "master_link": "up"}}
    master = {**DEMO, "redis": {**DEMO["redis"], "role": "master", "connected_replicas": 2}}
    assert "      replica of 10.0.0.11:6379 (link up)" in text(replica).splitlines()
    assert "      master with 2 replica(s) connected" in text(master).splitlines()
