"""The redis, mysql and supervisor roles' filter plugins (plugins/filter/): which config changes go live and which restart."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

FILTERS = Path(__file__).resolve().parents[1] / "plugins" / "filter"


def load_filter(role: str, name: str, plugin: str = ""):
    """The filter function `name` of plugins/filter/<plugin> (default <role>_live_config.py)."""
    plugin = plugin or f"{role}_live_config.py"
    spec = importlib.util.spec_from_file_location(plugin[:-3], FILTERS / plugin)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


LIVE = ["maxmemory", "maxmemory-policy", "maxclients", "loglevel", "timeout", "tcp-keepalive", "appendfsync"]
CONF = """# Ansible managed
bind 127.0.0.1 -::1
port 6379
loglevel notice
save 3600 1
save 300 100
requirepass s3cret
maxmemory 64mb
"""


@pytest.fixture(scope="module")
def changes():
    return load_filter("redis", "redis_config_changes")


def test_live_settings_alone_need_no_restart(changes):
    new = CONF.replace("maxmemory 64mb", "maxmemory 96mb").replace("loglevel notice", "loglevel warning")
    assert changes(CONF, new, LIVE) == {"live": {"loglevel": "warning", "maxmemory": "96mb"}, "restart": []}


def test_comments_and_an_unchanged_file_change_nothing(changes):
    assert changes(CONF, CONF.replace("# Ansible managed", "# edited by hand"), LIVE) == {"live": {}, "restart": []}


def test_other_settings_need_a_restart(changes):
    new = CONF.replace("save 300 100\n", "").replace("port 6379", "port 6380").replace("64mb", "1gb")
    result = changes(CONF, new, LIVE)
    assert result["restart"] == ["port", "save"]
    assert result["live"] == {"maxmemory": "1gb"}


def test_a_removed_live_setting_needs_a_restart(changes):
    # Its default would only come back with a restart.
    assert changes(CONF, CONF.replace("maxmemory 64mb\n", ""), LIVE) == {"live": {}, "restart": ["maxmemory"]}


def test_a_fresh_host_with_debians_file_restarts(changes):
    assert "bind" in changes("bind 127.0.0.1 ::1\nport 6379\n", CONF, LIVE)["restart"]


CNF = """# Ansible managed
[mysqld]
bind-address = 127.0.0.1
max_connections = 50
wait_timeout = 600
innodb_buffer_pool_size = 64M
skip-name-resolve
[client]
port = 3306
"""


@pytest.fixture(scope="module")
def mysql_changes():
    return load_filter("mysql", "mysql_config_changes")


def test_mysql_whole_number_live_settings_need_no_restart(mysql_changes):
    new = CNF.replace("max_connections = 50", "max-connections = 80").replace("wait_timeout = 600", "wait_timeout = 60")
    assert mysql_changes(CNF, new, ["max_connections", "wait_timeout"]) == {
        "live": {"max_connections": "80", "wait_timeout": "60"}, "restart": []}


def test_mysql_other_settings_and_other_sections(mysql_changes):
    new = CNF.replace("64M", "128M").replace("port = 3306", "port = 3307").replace("skip-name-resolve\n", "")
    # [client] is not the server's; innodb_buffer_pool_size is not live here; a removed flag restarts.
    assert mysql_changes(CNF, new, ["max_connections", "wait_timeout", "innodb_buffer_pool_size"]) == {
        "live": {}, "restart": ["innodb_buffer_pool_size", "skip_name_resolve"]}


SUPERVISORD_CONF = """; Ansible managed

[unix_http_server]
file=/run/supervisor.sock
chmod=0700

[supervisord]
logfile=/var/log/supervisor/supervisord.log
logfile_maxbytes=0
loglevel=info

[include]
files = /etc/supervisor/conf.d/*.conf
"""
DEFERRED = ["supervisord.loglevel", "supervisord.logfile_maxbytes"]


@pytest.fixture(scope="module")
def supervisord_changes():
    return load_filter("supervisor", "supervisord_conf_changes", "supervisor_conf_changes.py")


def test_supervisord_log_settings_wait_for_the_next_restart(supervisord_changes):
    new = SUPERVISORD_CONF.replace("loglevel=info", "loglevel=debug").replace("logfile_maxbytes=0", "logfile_maxbytes=50MB")
    assert supervisord_changes(SUPERVISORD_CONF, new, DEFERRED) == {
        "deferred": ["supervisord.logfile_maxbytes", "supervisord.loglevel"], "restart": []}
    assert supervisord_changes(SUPERVISORD_CONF, SUPERVISORD_CONF.replace("; Ansible managed", "; other header"), DEFERRED) == {
        "deferred": [], "restart": []}


def test_supervisord_other_settings_restart_it(supervisord_changes):
    new = SUPERVISORD_CONF.replace("loglevel=info", "loglevel=debug").replace("chmod=0700", "chmod=0770")
    assert supervisord_changes(SUPERVISORD_CONF, new, DEFERRED) == {
        "deferred": ["supervisord.loglevel"], "restart": ["unix_http_server.chmod"]}
    added = SUPERVISORD_CONF + "\n[inet_http_server]\nport=127.0.0.1:9001\n"
    assert supervisord_changes(SUPERVISORD_CONF, added, DEFERRED)["restart"] == ["inet_http_server.port"]
    assert supervisord_changes("", SUPERVISORD_CONF, DEFERRED) == {"deferred": [], "restart": ["(new file)"]}
