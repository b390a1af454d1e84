"""The check-mode guard of the roles that install packages, one collection plugin
(queuefleet.fleet.packages, plugins/action/packages.py), with apt and getent played by fakes:
what it runs, in which mode, and when it tells the role to end. tests/check_fresh.sh runs it
for real on fresh Debian 12 and 13 hosts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
from ansible.errors import AnsibleActionFail

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("packages_action", ROOT / "plugins/action/packages.py")
packages = importlib.util.module_from_spec(spec)
spec.loader.exec_module(packages)


def action(args, check_mode, answers):
    """The action with a fake task and connection; each module run gets the next answer for its module."""
    plugin = object.__new__(packages.ActionModule)
    plugin._task = SimpleNamespace(args=args, check_mode=check_mode, async_val=0, action="queuefleet.fleet.packages")
    plugin._connection = SimpleNamespace(_shell=SimpleNamespace(tmpdir="/tmp/x"))
    plugin.calls = []

    def execute(module_name, module_args, task_vars):
        plugin.calls.append((module_name, module_args, plugin._task.check_mode))
        return answers[module_name].pop(0)

    plugin._execute_module = execute
    return plugin


def test_check_mode_on_a_fresh_host_refreshes_the_lists_for_real_then_asks_apt_and_says_what_follows():
    plugin = action({"name": ["redis-server", "redis-tools"], "then": "redis.conf, the data directory and the service"}, True,
                    {"ansible.builtin.apt": [{"changed": True, "cache_updated": True}, {"changed": True}]})
    result = plugin.run(task_vars={})
    assert plugin.calls == [
        ("ansible.builtin.apt", {"update_cache": True, "cache_valid_time": 3600}, False),
        ("ansible.builtin.apt", {"name": ["redis-server", "redis-tools"], "state": "present", "update_cache": True,
                                 "cache_valid_time": 3600}, True),
    ]
    assert plugin._task.check_mode is True, "the task's check mode must be restored"
    assert result["pending"] is True and result["changed"] is True and result["cache_refreshed"] is True
    assert result["msg"] == ("check mode: redis-server, redis-tools would be installed first; redis.conf, the data directory "
                             "and the service follow once they are, and are not evaluated in this run.")
    assert result["_ansible_verbose_always"] is True


def test_check_mode_with_the_packages_installed_goes_on():
    plugin = action({"name": ["logrotate"], "then": "the rotation config and the timer"}, True,
                    {"ansible.builtin.apt": [{"changed": False, "cache_updated": False}, {"changed": False}]})
    result = plugin.run(task_vars={})
    assert result["pending"] is False and result["changed"] is False and result["msg"] == ""
    assert "_ansible_verbose_always" not in result


def test_check_mode_also_waits_for_the_users_the_role_creates():
    getent_missing = {"ansible_facts": {"getent_passwd": {"queuefleet": None}}}
    plugin = action({"name": ["python3", "python3-venv"], "users": ["queuefleet"], "then": "the layout under /opt/queuefleet"}, True,
                    {"ansible.builtin.apt": [{"changed": False}, {"changed": False}], "ansible.builtin.getent": [getent_missing]})
    result = plugin.run(task_vars={})
    assert plugin.calls[-1] == ("ansible.builtin.getent", {"database": "passwd", "key": "queuefleet", "fail_key": False}, True)
    assert result["pending"] is True and result["missing_users"] == ["queuefleet"] and result["changed"] is False
    assert result["msg"] == ("check mode: a deploy would install python3, python3-venv if missing, create the user(s) queuefleet, "
                             "the layout under /opt/queuefleet; none of it is evaluated in this run.")
    getent_found = {"ansible_facts": {"getent_passwd": {"queuefleet": ["x", "999", "999", "", "/opt", "/usr/sbin/nologin"]}}}
    plugin = action({"name": ["python3"], "users": ["queuefleet"], "then": "x"}, True,
                    {"ansible.builtin.apt": [{"changed": False}, {"changed": False}], "ansible.builtin.getent": [getent_found]})
    assert plugin.run(task_vars={})["pending"] is False


def test_a_real_run_installs_once_and_never_ends_the_role():
    plugin = action({"name": ["prometheus"], "then": "the config", "install_recommends": False, "users": ["prometheus"]}, False,
                    {"ansible.builtin.apt": [{"changed": True}]})
    result = plugin.run(task_vars={})
    assert plugin.calls == [("ansible.builtin.apt", {"name": ["prometheus"], "state": "present", "update_cache": True,
                                                     "cache_valid_time": 3600, "install_recommends": False}, False)]
    assert result["changed"] is True and result["pending"] is False and result["msg"] == ""


def test_an_apt_failure_is_the_tasks_failure():
    plugin = action({"name": ["no-such-package"], "then": "x"}, False,
                    {"ansible.builtin.apt": [{"failed": True, "msg": "No package matching 'no-such-package' is available"}]})
    result = plugin.run(task_vars={})
    assert result["failed"] is True and result["msg"] == "No package matching 'no-such-package' is available"


def test_lists_that_cannot_be_refreshed_stop_check_mode_with_the_reason():
    plugin = action({"name": ["redis-server"], "then": "x"}, True,
                    {"ansible.builtin.apt": [{"failed": True, "msg": "Failed to update apt cache: unknown reason"}]})
    with pytest.raises(AnsibleActionFail, match="check mode: cannot refresh the package lists: Failed to update apt cache"):
        plugin.run(task_vars={})


@pytest.mark.parametrize("args, message", [
    ({"name": [], "then": "x"}, "name must list at least one package"),
    ({"then": "x"}, "missing required arguments: name"),
    ({"name": ["redis-server"]}, "missing required arguments: then"),
    ({"name": ["redis-server"], "then": "x", "state": "absent"}, "state"),
])
def test_bad_arguments_are_refused_before_anything_runs(args, message):
    plugin = action(args, True, {"ansible.builtin.apt": []})
    with pytest.raises(AnsibleActionFail, match=message):
        plugin.run(task_vars={})
    assert plugin.calls == []
