"""What a running service owes its config file (plugins/module_utils/service_config.py): which
differences go live, which need a restart, which wait on purpose, and that the running values
(CONFIG GET, SHOW GLOBAL VARIABLES) decide for the live ones, so a hand-made change is drift.

The molecule scenario runs the same code through the roles on real services
(molecule/default/tests/test_converge.py)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "collections"))
from ansible_collections.queuefleet.fleet.plugins.module_utils import service_config  # noqa: E402

LIVE = ["maxmemory", "maxmemory-policy", "maxclients", "loglevel", "timeout", "tcp-keepalive", "appendfsync", "appendonly", "save"]
CONF = """# Ansible managed
bind 127.0.0.1 -::1
port 6379
loglevel notice
save 3600 1
save 300 100
user default on #aaaa ~* &* +@all
maxmemory 64mb
maxmemory-policy noeviction
"""
RUNNING = {"loglevel": "notice", "save": "3600 1 300 100", "maxmemory": "67108864", "maxmemory-policy": "noeviction",
           "user": "on #aaaa"}


def redis(desired: str, running_copy: str | None = CONF, live: dict | None = None) -> dict:
    values = dict(RUNNING, **(live or {}))
    return service_config.pending("redis", desired, running_copy, live_keys=LIVE, live_values=values)


def test_an_unchanged_service_owes_nothing():
    assert redis(CONF) == {"restart": [], "live": {}, "was": {}, "deferred": []}
    assert redis(CONF.replace("# Ansible managed", "# edited by hand"))["restart"] == []


def test_live_settings_go_live_with_their_running_values():
    new = CONF.replace("maxmemory 64mb", "maxmemory 96mb").replace("loglevel notice", "loglevel warning")
    assert redis(new) == {"restart": [], "live": {"loglevel": "warning", "maxmemory": "96mb"},
                          "was": {"loglevel": "notice", "maxmemory": "67108864"}, "deferred": []}


def test_a_hand_made_config_set_is_drift_even_when_the_file_did_not_change():
    found = redis(CONF, live={"maxmemory-policy": "allkeys-lru"})
    assert found["live"] == {"maxmemory-policy": "noeviction"} and found["was"] == {"maxmemory-policy": "allkeys-lru"}
    assert found["restart"] == []


def test_a_setting_applied_live_earlier_owes_nothing():
    # The file says 96mb, the running copy (from the last start) 64mb, and the server runs 96mb:
    # a live change made by an earlier run, not a restart owed.
    new = CONF.replace("maxmemory 64mb", "maxmemory 96mb")
    assert redis(new, live={"maxmemory": str(96 * 1024 * 1024)})["live"] == {}


def test_other_settings_need_a_restart_also_when_an_earlier_run_wrote_them():
    new = CONF.replace("save 300 100\n", "").replace("port 6379", "port 6380").replace("64mb", "1gb")
    found = redis(new)
    assert found["restart"] == ["port"]
    assert found["live"] == {"maxmemory": "1gb", "save": "3600 1"}
    # The interrupted run: the file was written, the server never restarted; the copy is the old file.
    assert redis(new, running_copy=CONF)["restart"] == ["port"]


def test_a_removed_live_setting_needs_a_restart():
    # Its default would only come back with a restart.
    assert redis(CONF.replace("maxmemory 64mb\n", ""))["restart"] == ["maxmemory"]


def test_unknown_running_config_means_a_restart():
    assert redis(CONF, running_copy=None)["restart"] == ["(config the running service loaded is unknown)"]


def test_a_fresh_host_with_debians_file_restarts():
    assert "bind" in redis(CONF, running_copy="bind 127.0.0.1 ::1\nport 6379\n")["restart"]


def test_passwords_change_live_by_their_digests():
    new_digest = hashlib.sha256(b"new secret").hexdigest()
    rotated = CONF.replace("#aaaa", f"#{new_digest} #aaaa")
    found = redis(rotated)
    assert found["restart"] == [] and found["live"] == {"user": f"default on #{new_digest} #aaaa ~* &* +@all"}
    # Once Redis accepts both, nothing is owed, whatever order ACL LIST shows them in.
    assert redis(rotated, live={"user": f"user default on sanitize-payload #aaaa #{new_digest} ~* &* +@all"})["live"] == {}


@pytest.mark.parametrize("written, running", [("64mb", "67108864"), ("1gb", "1073741824"), ("1g", "1000000000"),
                                              ("\"\"", ""), ("yes", "yes"), ("3600  1", "3600 1")])
def test_redis_values_compare_as_config_get_shows_them(written, running):
    assert service_config.normalize_redis(written) == running


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
MYSQL_RUNNING = {"max_connections": "50", "wait_timeout": "600"}


def mysql(desired: str, live: dict | None = None, keys=("max_connections", "wait_timeout")) -> dict:
    return service_config.pending("mysql", desired, CNF, live_keys=list(keys), live_values=dict(MYSQL_RUNNING, **(live or {})))


def test_mysql_live_options_need_no_restart():
    new = CNF.replace("max_connections = 50", "max-connections = 80").replace("wait_timeout = 600", "wait_timeout = 60")
    assert mysql(new)["live"] == {"max_connections": "80", "wait_timeout": "60"} and mysql(new)["restart"] == []


def test_mysql_a_hand_made_set_global_is_drift():
    found = mysql(CNF, live={"wait_timeout": "5"})
    assert found["live"] == {"wait_timeout": "600"} and found["was"] == {"wait_timeout": "5"}


def test_mysql_other_settings_and_other_sections():
    new = CNF.replace("64M", "128M").replace("port = 3306", "port = 3307").replace("skip-name-resolve\n", "")
    # [client] is not the server's; innodb_buffer_pool_size is not live here; a removed flag restarts.
    assert mysql(new)["restart"] == ["innodb_buffer_pool_size", "skip_name_resolve"]


def test_mysql_sizes_and_booleans_compare_as_the_server_shows_them():
    assert service_config.normalize_mysql("64M") == str(64 * 1024 * 1024)
    assert service_config.normalize_mysql("ON") == service_config.normalize_mysql("1") == "on"


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


def supervisord(desired: str, running: str | None = SUPERVISORD_CONF) -> dict:
    return service_config.pending("supervisord", desired, running, live_keys=[], deferred_keys=DEFERRED)


def test_supervisord_log_settings_wait_for_the_next_restart():
    new = SUPERVISORD_CONF.replace("loglevel=info", "loglevel=debug").replace("logfile_maxbytes=0", "logfile_maxbytes=50MB")
    assert supervisord(new) == {"restart": [], "live": {}, "was": {},
                                "deferred": ["supervisord.logfile_maxbytes", "supervisord.loglevel"]}
    assert supervisord(SUPERVISORD_CONF.replace("; Ansible managed", "; other header"))["deferred"] == []


def test_supervisord_other_settings_restart_it():
    new = SUPERVISORD_CONF.replace("loglevel=info", "loglevel=debug").replace("chmod=0700", "chmod=0770")
    assert supervisord(new)["restart"] == ["unix_http_server.chmod"] and supervisord(new)["deferred"] == ["supervisord.loglevel"]
    added = SUPERVISORD_CONF + "\n[inet_http_server]\nport=127.0.0.1:9001\n"
    assert supervisord(added)["restart"] == ["inet_http_server.port"]


def test_replication_goes_live_and_a_master_has_no_replicaof():
    replica = CONF + "replicaof 10.0.0.11 6379\n"
    found = redis(replica)
    assert found["live"] == {"replicaof": "10.0.0.11 6379"} and found["was"] == {"replicaof": ""} and found["restart"] == []
    assert redis(replica, live={"replicaof": "10.0.0.11 6379"})["live"] == {}
    # This server must be the master (Sentinel says so) but still follows another one: REPLICAOF NO ONE.
    assert redis(CONF, running_copy=replica, live={"replicaof": "10.0.0.12 6379"})["live"] == {"replicaof": ""}


def test_masterauth_compares_as_written_not_lower_cased():
    conf = CONF + 'masterauth "AbC d#1"\n'
    keys = LIVE + ["masterauth"]
    same = service_config.pending("redis", conf, conf, live_keys=keys, live_values=dict(RUNNING, masterauth="AbC d#1"))
    assert same["live"] == {}
    other = service_config.pending("redis", conf, conf, live_keys=keys, live_values=dict(RUNNING, masterauth="abc d#1"))
    assert other["live"] == {"masterauth": "AbC d#1"}
