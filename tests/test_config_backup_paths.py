"""config_backup saves the files where the other roles' public variables put them (issue 23:
overriding queue_worker_root used to drop the env file from every snapshot). The role is run by
ansible-playbook on the controller, its stage and commit entry points on a temporary tree."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"

PLAYBOOK = """
- name: Snapshot around a change, with the roles' paths moved
  hosts: localhost
  gather_facts: false
  vars:
    queue_worker_root: {tmp}/srv/queuefleet
    supervisor_conf_dir: {tmp}/supervisor/conf.d
    queue_worker_supervisor_conf_dir: {tmp}/supervisor/pools.d
    mysql_config_dir: {tmp}/mysql/conf.d
    config_backup_dir: {tmp}/backups
  tasks:
    - name: Stage
      ansible.builtin.include_role:
        name: queuefleet.fleet.config_backup
        public: true  # its defaults (config_backup_paths as resolved) stay visible for the check below
    - name: Show what the stage holds
      ansible.builtin.debug:
        msg: {{"files": "{{{{ __config_backup_stage.files }}}}", "paths": "{{{{ config_backup_paths }}}}"}}
    - name: Change the env file
      ansible.builtin.copy:
        dest: "{{{{ queue_worker_root }}}}/shared/queuefleet.env"
        content: "QUEUEFLEET_REDIS_URL=redis://127.0.0.1:6380/0\\n"
        mode: "0640"
    - name: Commit
      ansible.builtin.include_role:
        name: queuefleet.fleet.config_backup
        tasks_from: commit
    - name: Show the snapshot
      ansible.builtin.debug:
        msg: "{{{{ __config_backup_commit.snapshot }}}}"
"""


def test_snapshots_follow_the_roles_variables(tmp_path):
    files = {
        "srv/queuefleet/shared/queuefleet.env": "QUEUEFLEET_REDIS_URL=redis://127.0.0.1:6379/0\n",
        "supervisor/conf.d/exporter.conf": "[program:queuefleet_exporter]\n",
        "supervisor/pools.d/queuefleet-default.conf": "[program:queuefleet-default-aaaaaa_00]\n",
        "mysql/conf.d/60-queuefleet.cnf": "[mysqld]\nmax_connections = 151\n",
    }
    for rel, content in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(content)
    (tmp_path / "srv/queuefleet/releases/5826e13699fa").mkdir(parents=True)
    os.symlink(tmp_path / "srv/queuefleet/releases/5826e13699fa", tmp_path / "srv/queuefleet/current")
    book = tmp_path / "snapshot.yml"
    book.write_text(PLAYBOOK.format(tmp=tmp_path))
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
    done = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(book),
                           "-e", f"ansible_python_interpreter={sys.executable}"],
                          capture_output=True, text=True, env=env, check=False, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    tasks = json.loads(done.stdout)["plays"][0]["tasks"]
    shown = [task["hosts"]["localhost"]["msg"] for task in tasks if task["task"]["name"].startswith("Show")]
    staged, snapshot = shown[0], shown[1]
    # Every moved file is held (files at the Debian packages' fixed paths may exist on this machine too).
    assert {str(tmp_path / rel) for rel in files} <= set(staged["files"]), staged
    assert f"{tmp_path}/srv/queuefleet/shared/queuefleet.env" in staged["paths"]
    assert "/opt/queuefleet/shared/queuefleet.env" not in staged["paths"]
    # The release link follows queue_worker_root too: the snapshot is named after the release that ran.
    assert re.fullmatch(r"[0-9]{8}T[0-9]{6}Z-5826e13699fa\.tar\.gz", snapshot), snapshot
    assert (tmp_path / "backups" / snapshot).is_file()


def test_the_fallbacks_are_the_other_roles_defaults():
    """Where a role's variable is not set (its role is not in the play), config_backup falls back to
    a copy of that role's default: the copies must not drift from the originals."""
    text = (ROOT / "roles/config_backup/defaults/main.yml").read_text()
    pairs = re.findall(r"\(?(\w+) \| default\('([^']*)'(?:, true)?\)", text)
    assert {name for name, _ in pairs} >= {"queue_worker_root", "supervisor_conf_dir", "queue_worker_supervisor_conf_dir",
                                           "mysql_config_dir", "mysql_service_name", "logrotate_config_name"}
    owners = {"mysql_config_dir": "/etc/mysql/mariadb.conf.d", "mysql_service_name": "mariadb"}  # "" = the OS default
    debian_mysql = yaml.safe_load((ROOT / "roles/mysql/vars/Debian.yml").read_text())
    assert owners == {"mysql_config_dir": debian_mysql["__mysql_config_dir"], "mysql_service_name": debian_mysql["__mysql_service_name"]}
    for name, fallback in pairs:
        role = next(r for r in ("queue_worker", "supervisor", "mysql", "logrotate") if name.startswith(r + "_"))
        default = yaml.safe_load((ROOT / "roles" / role / "defaults/main.yml").read_text())[name]
        assert fallback == (default or owners[name]), f"{name}: config_backup falls back to {fallback!r}, {role} defaults to {default!r}"
