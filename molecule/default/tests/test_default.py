"""Verify the redis, mysql and supervisor roles converged on one host."""

import os
import shlex
from pathlib import Path

import pytest

SECRETS = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "secrets"


def secret(name):
    path = SECRETS / name
    assert path.exists(), f"generated secret {path} missing (run through molecule)"
    # ansible's password lookup stores "<password>" or "<password> salt=..."
    return path.read_text().split()[0]


@pytest.mark.parametrize("service", ["redis-server", "mariadb", "supervisor"])
def test_service_running_and_enabled(host, service):
    svc = host.service(service)
    assert svc.is_running
    assert svc.is_enabled


@pytest.mark.parametrize("port", [6379, 3306, 9001, 9818, 9819])
def test_ports_bound_to_loopback_only(host, port):
    listening = [s for s in host.socket.get_listening_sockets() if s.endswith(f":{port}")]
    assert listening, f"nothing listens on port {port}"
    for sock in listening:
        address = sock.split("://", 1)[1].rsplit(":", 1)[0]
        assert address in ("127.0.0.1", "::1"), f"{sock} is bound beyond loopback"


# --- redis ----------------------------------------------------------------------


def redis_cli(host, *args, password=None):
    env = f"REDISCLI_AUTH={password} " if password else ""
    return host.run(f"{env}redis-cli -h 127.0.0.1 " + " ".join(args))


def test_redis_refuses_commands_without_password(host):
    out = redis_cli(host, "ping")
    assert "NOAUTH" in out.stdout + out.stderr
    assert "PONG" not in out.stdout


def test_redis_accepts_the_configured_password(host):
    assert redis_cli(host, "ping", password=secret("redis")).stdout.strip() == "PONG"


@pytest.mark.parametrize(
    "key,expected",
    [("appendonly", "yes"), ("appendfsync", "everysec"), ("maxmemory-policy", "noeviction")],
)
def test_redis_durability_settings(host, key, expected):
    out = redis_cli(host, "config", "get", key, password=secret("redis"))
    assert out.rc == 0
    assert out.stdout.split() == [key, expected]


def test_redis_config_not_world_readable(host):
    conf = host.file("/etc/redis/redis.conf")
    assert conf.user == "redis"
    assert conf.mode == 0o640


# --- mariadb --------------------------------------------------------------------


def sql_as_root(host, query):
    return host.check_output(f'mysql -NBe "{query}"')


def test_root_logs_in_by_unix_socket_only(host):
    # OS root gets in without a password ...
    assert host.run("mysql -NBe 'select 1'").stdout.strip() == "1"
    # ... another OS user cannot become MariaDB root.
    other = host.run("runuser -u nobody -- mysql -uroot -NBe 'select 1'")
    assert other.rc != 0
    plugin = sql_as_root(
        host,
        "select json_value(Priv, '$.plugin') from mysql.global_priv where User='root' and Host='localhost'",
    )
    assert "unix_socket" in plugin or "unix_socket" in sql_as_root(host, "show grants for root@localhost")


def test_no_anonymous_users(host):
    assert sql_as_root(host, "select count(*) from mysql.user where User=''") == "0"


def test_no_test_database(host):
    assert "test" not in sql_as_root(host, "show databases").split()


def app_sql(host, query, database=""):
    password = secret("mysql_queuefleet")
    return host.run(f"MYSQL_PWD={password} mysql -h 127.0.0.1 -uqueuefleet -NB {database} -e \"{query}\"")


def test_app_user_reaches_its_database(host):
    out = app_sql(host, "create table if not exists probe (id int); insert into probe values (1); "
                        "select count(*) > 0 from probe; delete from probe", "queuefleet")
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_app_user_sees_only_its_database(host):
    out = app_sql(host, "show databases")
    assert out.rc == 0, out.stderr
    assert set(out.stdout.split()) == {"information_schema", "queuefleet"}
    for other in ("otherapp", "mysql"):
        denied = app_sql(host, "select 1", other)
        assert denied.rc != 0
        assert "Access denied" in denied.stderr


@pytest.mark.parametrize(
    "variable,expected",
    [("max_connections", "50"), ("wait_timeout", "600"), ("innodb_buffer_pool_size", str(64 * 1024 * 1024))],
)
def test_mariadb_settings(host, variable, expected):
    assert sql_as_root(host, f"select @@global.{variable}") == expected


# --- supervisor -----------------------------------------------------------------


def test_supervisor_socket_locked_down(host):
    sock = host.file("/run/supervisor.sock")
    assert sock.is_socket
    assert sock.user == "root"
    assert sock.group == "root"
    assert sock.mode == 0o700


def test_supervisor_config_not_world_readable(host):
    conf = host.file("/etc/supervisor/supervisord.conf")
    assert conf.mode == 0o600
    assert secret("supervisor") not in conf.content_string


def test_supervisor_runs_declared_program(host):
    out = host.check_output("supervisorctl status heartbeat")
    assert "RUNNING" in out


def test_a_program_from_the_site_template_runs_with_its_settings(host):
    """supervisor_programs' `template:` picks the top-level templates/supervisor/service.conf.j2."""
    conf = host.file("/etc/supervisor/conf.d/clock.conf")
    assert "Site template templates/supervisor/service.conf.j2" in conf.content_string
    assert "stopasgroup=true" in conf.content_string and "stderr_logfile=/var/log/supervisor/clock.err.log" in conf.content_string
    status = host.run("for i in $(seq 30); do supervisorctl status clock | grep -q RUNNING && break; sleep 0.5; done;"
                      " supervisorctl status clock")
    assert "RUNNING" in status.stdout, status.stdout
    assert "Site template" not in host.file("/etc/supervisor/conf.d/heartbeat.conf").content_string, \
        "programs without `template:` keep the role's own template"


def test_supervisor_update_mechanism_leaves_unchanged_programs_alone(host):
    before = host.check_output("supervisorctl pid heartbeat")
    host.check_output("supervisorctl reread && supervisorctl update")
    assert host.check_output("supervisorctl pid heartbeat") == before


def test_supervisor_update_restarts_only_the_changed_program(host):
    """What the "supervisor update" handler runs: only the edited program restarts."""
    conf = "/etc/supervisor/conf.d/ticker.conf"
    heartbeat = host.check_output("supervisorctl pid heartbeat")
    ticker = host.check_output("supervisorctl pid ticker")
    original = host.file(conf).content_string
    try:
        host.check_output(f"sed -i 's/TICK=\"1\"/TICK=\"2\"/' {conf}")
        host.check_output("supervisorctl reread && supervisorctl update")
        assert host.check_output("supervisorctl pid ticker") != ticker
        assert host.check_output("supervisorctl pid heartbeat") == heartbeat
    finally:
        host.check_output(f"printf %s {shlex.quote(original)} > {conf}")
        host.check_output("supervisorctl reread && supervisorctl update")
    status = host.run("for i in $(seq 20); do supervisorctl status ticker | grep -q RUNNING && break; sleep 0.5; done;"
                      " supervisorctl status ticker")
    assert "RUNNING" in status.stdout


def probe_http(host, auth=None):
    script = (
        "import urllib.request, base64, sys\n"
        "req = urllib.request.Request('http://127.0.0.1:9001/')\n"
        + (f"req.add_header('Authorization', 'Basic ' + base64.b64encode(b'{auth}').decode())\n" if auth else "")
        + "try:\n"
        "    print(urllib.request.urlopen(req, timeout=5).status)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
    )
    return host.check_output(f"python3 -c {shlex.quote(script)}")


def test_inet_http_server_requires_credentials(host):
    assert probe_http(host) == "401"
    assert probe_http(host, auth=f"ops:{secret('supervisor')}") == "200"


# --- queue_worker program files ---------------------------------------------------


def test_pool_programs_that_may_hold_secrets_are_readable_by_root_only(host):
    for pool in ("default", "slow"):
        conf = host.file(f"/etc/supervisor/conf.d/queuefleet-{pool}.conf")
        assert (conf.user, conf.group, conf.mode) == ("root", "root", 0o640)
    assert 'environment=DEMO_API_KEY="' in host.file("/etc/supervisor/conf.d/queuefleet-slow.conf").content_string
