"""The plugins of the road to one's own servers (issue 27): URL parts that survive any password,
MariaDB accounts per host with rotation passwords, and the firewall rules computed from the fleet."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from ansible.errors import AnsibleFilterError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "collections"))


def load(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


urlquote = load("plugins/filter/urlquote.py").urlquote
mysql_accounts = load("plugins/filter/mysql_accounts.py").mysql_accounts
fleet_firewall = load("plugins/filter/fleet_firewall.py").fleet_firewall
native_digest = load("plugins/modules/mysql_passwords.py").native_digest

NASTY = "a/b@c:d%e+f=g#h i?j&k"


@pytest.mark.parametrize("password", [NASTY, "Zx9/+Qw==", "plain", "ünïcode ✓"])
def test_a_quoted_password_survives_a_url_round_trip(password):
    parts = urlsplit(f"redis://:{urlquote(password)}@10.0.0.11:6379/0")
    assert parts.hostname == "10.0.0.11" and parts.port == 6379 and parts.path == "/0"
    from urllib.parse import unquote
    assert unquote(parts.password) == password


def test_jinjas_urlencode_would_have_broken_the_url():
    # What Jinja's urlencode leaves alone: the reason this filter exists.
    assert "/" in "ab/cd" and "/" not in urlquote("ab/cd")
    with pytest.raises(ValueError):
        urlsplit("redis://:ab/cd%2Be%3D@redis1:6379/0").port


def test_urlquote_refuses_what_is_not_text():
    with pytest.raises(AnsibleFilterError):
        urlquote(["a"])


def test_mysql_accounts_one_per_host_with_rotation_passwords():
    users = [{"name": "shop", "hosts": ["10.0.0.13", "10.0.0.14"], "password": "new", "previous_password": "old",
              "priv": "shop.*:SELECT"},
             {"name": "report", "password": "r", "priv": "shop.*:SELECT"}]
    accounts = mysql_accounts(users)
    assert [(a["name"], a["host"], a["passwords"]) for a in accounts] == [
        ("shop", "10.0.0.13", ["new", "old"]), ("shop", "10.0.0.14", ["new", "old"]), ("report", "localhost", ["r"])]


@pytest.mark.parametrize("user, message", [
    ({"name": "a", "host": "x", "hosts": ["y"], "password": "p"}, "host or hosts, not both"),
    ({"name": "a", "hosts": [], "password": "p"}, "non-empty list"),
    ({"name": "a", "hosts": "10.0.0.1", "password": "p"}, "non-empty list"),
    ({"name": "a", "password": ""}, "non-empty password"),
    ({"password": "p"}, "needs a name"),
])
def test_mysql_accounts_refuses_entries_it_cannot_use(user, message):
    with pytest.raises(AnsibleFilterError, match=message):
        mysql_accounts([user])


def test_the_native_digest_is_mariadbs():
    # SHOW CREATE USER on MariaDB 11.8 for PASSWORD('old/p@ss') and PASSWORD('new:p%ss').
    assert native_digest("old/p@ss") == "*CE872E936BB153F63C2663FE602286C761B51D47"
    assert native_digest("new:p%ss") == "*FE380C4691A16849D9775D5AB46CA52526EABB61"


HOSTVARS = {
    "redis1": {"queuefleet_private_address": "10.0.0.11"},
    "db1": {"queuefleet_private_address": "10.0.0.12", "mysql_port": 3307},
    "worker1": {"queuefleet_private_address": "10.0.0.13", "queue_worker_exporter_listen": "10.0.0.13:9818"},
    "app1": {"queuefleet_private_address": "fd00::21"},
    "mon1": {"queuefleet_private_address": "10.0.0.30"},
}
GROUPS = {"redis": ["redis1"], "mysql": ["db1"], "workers": ["worker1"], "producers": ["app1"], "monitoring": ["mon1"]}


def test_each_host_guards_its_own_services_from_their_clients_only():
    assert fleet_firewall("redis1", HOSTVARS, GROUPS) == [
        {"name": "redis", "port": 6379, "from": ["10.0.0.11", "10.0.0.13", "10.0.0.30", "fd00::21"]}]
    assert fleet_firewall("db1", HOSTVARS, GROUPS) == [
        {"name": "mysql", "port": 3307, "from": ["10.0.0.12", "10.0.0.13", "fd00::21"]}]
    assert fleet_firewall("worker1", HOSTVARS, GROUPS) == [
        {"name": "exporter", "port": 9818, "from": ["10.0.0.13", "10.0.0.30"]}]
    assert fleet_firewall("app1", HOSTVARS, GROUPS) == []


def test_a_client_without_a_private_address_is_named():
    hostvars = {**HOSTVARS, "worker1": {}}
    with pytest.raises(AnsibleFilterError, match="worker1 has no queuefleet_private_address"):
        fleet_firewall("redis1", hostvars, GROUPS)
    with pytest.raises(AnsibleFilterError, match="is not an IP address"):
        fleet_firewall("redis1", {**HOSTVARS, "mon1": {"queuefleet_private_address": "mon1.internal"}}, GROUPS)


redis_master = load("plugins/filter/redis_master.py").redis_master


def test_the_master_the_sentinels_name_wins_so_a_deploy_never_undoes_a_failover():
    reports = [{"address": "10.0.0.11", "sentinel_master": "10.0.0.12 6379", "role": "slave"},
               {"address": "10.0.0.12", "sentinel_master": "10.0.0.12 6379", "role": "master", "connected_replicas": 1},
               {"address": "10.0.0.13", "sentinel_master": "10.0.0.12 6379"}]
    assert redis_master(reports, "10.0.0.11")["address"] == "10.0.0.12"


def test_without_a_sentinel_majority_the_server_with_replicas_or_the_first_host():
    split = [{"sentinel_master": "10.0.0.11 6379"}, {"sentinel_master": "10.0.0.12 6379"}]
    assert redis_master(split, "10.0.0.11")["address"] == "10.0.0.11"
    replicated = [{"address": "10.0.0.11", "role": "slave"}, {"address": "10.0.0.12", "role": "master", "connected_replicas": 1}]
    assert redis_master(replicated, "10.0.0.11")["address"] == "10.0.0.12"
    fresh = [{"address": "10.0.0.11", "role": "master"}, {"address": "10.0.0.12", "role": "master"}]
    assert redis_master(fresh, "10.0.0.11") == {"address": "10.0.0.11",
                                                "why": "the first redis host (no sentinel names a master, no single server runs as master)"}
    assert redis_master([], "10.0.0.11")["address"] == "10.0.0.11"


def test_without_a_sentinel_majority_the_one_running_master_is_kept():
    # After a failover the old master (the first host) is down and most sentinels are too: the
    # promoted replica, master without replicas, stays master.
    promoted = [{"address": "10.0.0.11"}, {"address": "10.0.0.12", "role": "master", "connected_replicas": 0},
                {"address": "10.0.0.13"}]
    assert redis_master(promoted, "10.0.0.11") == {"address": "10.0.0.12", "why": "it is the one server that runs as master"}
    # A fleet that grows: the new host (listed first) has no Redis yet; the server with the data stays master.
    grown = [{"address": "10.0.0.10"}, {"address": "10.0.0.11", "role": "master"}]
    assert redis_master(grown, "10.0.0.10")["address"] == "10.0.0.11"


topology_problems = load("plugins/filter/redis_topology_problems.py").redis_topology_problems


def topology(**overrides):
    hostvars = {h: {"queuefleet_private_address": a, "redis_requirepass": "secret", "sentinel_quorum": 2}
                for h, a in [("r1", "10.0.0.11"), ("r2", "10.0.0.12"), ("s1", "10.0.0.11"), ("s2", "10.0.0.12"),
                             ("s3", "10.0.0.13"), ("s4", "10.0.0.14")]}
    for host, values in overrides.items():
        hostvars[host] = {**hostvars[host], **values}
    return hostvars


def test_a_topology_that_can_fail_over_safely_has_no_problem():
    assert topology_problems(["r1", "r2"], ["s1", "s2", "s3"], topology()) == []
    assert topology_problems(["r1"], [], topology()) == []


@pytest.mark.parametrize("redis, sentinels, hostvars, message", [
    (["r1", "r2"], ["s1", "s2"], {}, "at least three"),
    (["r1", "r2"], ["s1", "s2", "s3", "s4"], {}, "even number"),
    (["r1", "r2"], ["s1", "s2", "s3"], {"s3": {"queuefleet_private_address": "10.0.0.12"}}, "share one host"),
    (["r1", "r2"], ["s1", "s2", "s3"], {"s1": {"sentinel_quorum": 1}}, "make it a majority"),
    (["r1"], ["s1", "s2", "s3"], {}, "without a replica"),
    (["r1", "r2"], [], {"r1": {"redis_requirepass": ""}}, "masterauth"),
    (["r1", "r2"], ["s1", "s2", "s3"], {"r1": {"redis_requirepass": "two words"}}, "whitespace or a quote"),
    (["r1", "r2"], ["s1", "s2", "s3"], {"s1": {"redis_sentinel_password": "it's"}}, "redis_sentinel_password holds"),
])
def test_a_topology_that_cannot_fail_over_safely_is_refused_with_a_reason(redis, sentinels, hostvars, message):
    problems = topology_problems(redis, sentinels, topology(**hostvars))
    assert any(message in p for p in problems), problems


redis_url = load("plugins/filter/redis_url.py").redis_url


def test_the_workers_url_names_the_master_or_its_sentinels():
    hostvars = topology()
    assert redis_url(["r1", "r2"], [], hostvars, NASTY) == f"redis://:{urlquote(NASTY)}@10.0.0.11:6379/0"
    url = redis_url(["r1", "r2"], ["s1", "s2", "s3"], hostvars, "pw", sentinel_password="s/pw")
    assert url == "redis+sentinel://:pw@10.0.0.11:26379,10.0.0.12:26379,10.0.0.13:26379/queuefleet/0?sentinel_password=s%2Fpw"
    # The sentinels take the Redis password unless told otherwise (playbooks/sentinel.yml's default).
    assert redis_url(["r1", "r2"], ["s1", "s2", "s3"], hostvars, "p@w").endswith("/queuefleet/0?sentinel_password=p%40w")
