"""Security checks on the four hosts (issue 6): private listeners with
authentication, network isolation, the firewall (issue 27: each guarded port open
to its clients only), a confined MariaDB app user, no root over TCP, secrets only
in files others cannot read, unprivileged workers, and the job allow-list."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import time

import pytest

from mh import DB, INVENTORY, PRIVATE, REDIS, W1, W2, WORKERS, app_py, secret, sh, supervisor_pids, wait_for

pytestmark = pytest.mark.skipif(not INVENTORY, reason="runs inside molecule verify")

LOOPBACK = ("127.", "::1", "0:0:0:0:0:0:0:1")


def listeners(container: str) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket, from /proc/net/tcp{,6}."""
    out = sh(container, "cat /proc/net/tcp; echo ==; cat /proc/net/tcp6 2>/dev/null || true").stdout
    v4, _, v6 = out.partition("==")
    found = set()
    for text, family in ((v4, 4), (v6, 6)):
        for line in text.splitlines()[1:]:
            f = line.split()
            if len(f) < 4 or f[3] != "0A" or ":" not in f[1]:  # 0A = LISTEN
                continue
            addr_hex, port_hex = f[1].split(":")
            raw = bytes.fromhex(addr_hex)
            if family == 4:
                addr = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:
                addr = socket.inet_ntop(socket.AF_INET6, b"".join(struct.pack("<I", w) for w in struct.unpack(">4I", raw)))
            found.add((addr, int(port_hex, 16)))
    return found


@pytest.mark.parametrize("container,allowed", [
    (REDIS, {(PRIVATE[REDIS], 6379), (PRIVATE[REDIS], 26379)}),  # Redis's master and a sentinel
    (DB, {(PRIVATE[DB], 3306), (PRIVATE[DB], 6379), (PRIVATE[DB], 26379)}),  # MariaDB, a Redis replica, a sentinel
    (W1, {(PRIVATE[W1], 9818)}),  # the exporter, answering the monitoring host only (test_2b_monitoring.py)
    (W2, {(PRIVATE[W2], 9818), (PRIVATE[W2], 26379)}),  # and the third sentinel
])
def test_nothing_listens_beyond_loopback_but_the_authenticated_services(container, allowed):
    public = {(a, p) for a, p in listeners(container) if not a.startswith(LOOPBACK)}
    assert public == allowed, f"{container} listens beyond loopback on {sorted(public)}, expected {sorted(allowed)}"


def redis_raw(container: str, *commands: str) -> str:
    """Send raw RESP inline commands to qfmh-redis over TCP from `container` (bash /dev/tcp)."""
    payload = "".join(f"{c}\\r\\n" for c in commands)
    return sh(container, f"exec 3<>/dev/tcp/{REDIS}/6379; printf '{payload}QUIT\\r\\n' >&3; timeout 3 cat <&3").stdout


@pytest.mark.parametrize("worker", WORKERS)
def test_redis_refuses_commands_without_the_password_from_a_worker_host(worker):
    assert redis_raw(worker, "PING").startswith("-NOAUTH")
    assert "-NOAUTH" in redis_raw(worker, "KEYS *")
    assert redis_raw(worker, "AUTH not-the-password").startswith("-WRONGPASS")
    assert redis_raw(worker, f"AUTH {secret('redis')}", "PING").startswith("+OK\n+PONG")


def base_image() -> str:
    return subprocess.run(["docker", "inspect", "-f", "{{.Config.Image}}", W1],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("target,port", [(REDIS, 6379), (DB, 3306)])
def test_services_are_not_reachable_from_outside_the_private_network(target, port):
    """A container on Docker's default bridge (another network) cannot connect at all,
    neither to the private address nor by name; a worker host on the private network can."""
    probe = (f"for a in {PRIVATE[target]} {target}; do "
             f"if timeout 3 bash -c \"exec 3<>/dev/tcp/$a/{port}\" 2>/dev/null; then echo OPEN $a; fi; done; echo done")
    r = subprocess.run(["docker", "run", "--rm", "--network", "bridge", "--entrypoint", "bash", base_image(), "-c", probe],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "done" in r.stdout, r.stderr
    assert "OPEN" not in r.stdout, f"{target}:{port} reachable from the default bridge: {r.stdout}"
    inside = sh(W1, f"timeout 3 bash -c 'exec 3<>/dev/tcp/{target}/{port}' && echo OPEN", check=False).stdout
    assert "OPEN" in inside, f"{target}:{port} not reachable from {W1} on the private network"


def connects(source: str, target: str, port: int) -> str:
    """"open", "refused" (a TCP reset) or "timeout", for a TCP connection from one host to another's private address."""
    r = sh(source, f"timeout 4 bash -c 'exec 3<>/dev/tcp/{PRIVATE[target]}/{port}' 2>&1 && echo OPEN", check=False)
    if "OPEN" in r.stdout:
        return "open"
    return "refused" if "refused" in r.stdout.lower() else "timeout"


@pytest.mark.parametrize("source,target,port,expected", [
    (W1, REDIS, 6379, "open"), (W2, DB, 3306, "open"), (REDIS, W1, 9818, "open"),  # clients of each service
    (W1, REDIS, 26379, "open"), (DB, REDIS, 6379, "open"),  # sentinels and replicas reach Redis
    (REDIS, DB, 3306, "refused"),    # the Redis host is no MariaDB client
    (W2, W1, 9818, "refused"),       # an exporter answers the monitoring host only
])
def test_the_firewall_lets_in_the_fleets_clients_only(source, target, port, expected):
    """queuefleet_firewall: each guarded port is reachable from its clients' private addresses and
    refused (TCP reset) from any other host, although every one of them is on the private network."""
    assert connects(source, target, port) == expected, f"{source} -> {target}:{port}"


@pytest.mark.parametrize("container", [REDIS, DB, W1, W2])
def test_the_firewall_table_is_loaded_at_boot_and_touches_nothing_else(container):
    assert sh(container, "systemctl is-enabled queuefleet-firewall && systemctl is-active queuefleet-firewall").returncode == 0
    tables = sh(container, "nft list tables").stdout.split("\n")
    assert "table inet queuefleet" in tables, tables
    ssh_rule = sh(container, "nft list table inet queuefleet | grep -c 'dport 22' || true").stdout.strip()
    assert ssh_rule == "0", "the firewall never guards SSH"


@pytest.fixture(scope="module")
def other_database():
    sh(DB, "mysql -e \"CREATE TABLE IF NOT EXISTS otherapp.secrets (v VARCHAR(40)); "
           "INSERT INTO otherapp.secrets SELECT 'top secret' FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM otherapp.secrets)\"")
    yield "otherapp"


MYSQL_AS = r"""
import json, pymysql
res = {}
def attempt(name, **kw):
    try:
        conn = pymysql.connect(host=%(host)r, port=3306, connect_timeout=5, **kw)
    except pymysql.err.OperationalError as e:
        res[name] = {"error": e.args[0], "message": str(e.args[1])}
        return None
    res[name] = {"ok": True}
    return conn
"""


def test_app_user_sees_only_its_own_database(other_database):
    code = MYSQL_AS % {"host": DB} + f"""
conn = attempt("app", user="queuefleet", password={secret('mysql_queuefleet')!r})
cur = conn.cursor()
cur.execute("SHOW DATABASES")
res["databases"] = sorted(r[0] for r in cur.fetchall())
for sql in ("SELECT * FROM otherapp.secrets", "SELECT user FROM mysql.user", "USE otherapp"):
    try:
        cur.execute(sql)
        res[sql] = "allowed"
    except pymysql.err.MySQLError as e:
        res[sql] = e.args[0]
print(json.dumps(res))
"""
    res = json.loads(app_py(W1, code).stdout)
    assert res["databases"] == ["information_schema", "queuefleet"]
    for sql in ("SELECT * FROM otherapp.secrets", "SELECT user FROM mysql.user", "USE otherapp"):
        assert res[sql] in (1044, 1142), f"{sql}: {res[sql]}"


def test_root_cannot_log_in_over_tcp():
    code = MYSQL_AS % {"host": DB} + f"""
attempt("root-empty", user="root", password="")
attempt("root-app-password", user="root", password={secret('mysql_queuefleet')!r})
attempt("root-redis-password", user="root", password={secret('redis')!r})
print(json.dumps(res))
"""
    res = json.loads(app_py(W1, code).stdout)
    for name, outcome in res.items():
        assert outcome.get("error") in (1045, 1130, 1698), f"{name}: {outcome}"  # access denied, whichever way
    # Not even on the database host itself over TCP (root is unix_socket only).
    # (MariaDB listens on the private address only, so 127.0.0.1 refuses the connection itself.)
    for addr in ("127.0.0.1", PRIVATE[DB]):
        for password in ("", f" -p{secret('mysql_queuefleet')}"):
            r = sh(DB, f"mysql --protocol=TCP -h {addr} -u root{password} -e 'SELECT 1'", check=False)
            refused = "denied" in r.stderr or "not allowed" in r.stderr or (
                addr == "127.0.0.1" and "Can't connect" in r.stderr)
            assert r.returncode != 0 and refused, f"root over TCP to {addr}: rc={r.returncode} {r.stderr}"
    # ... while root through the socket works (what the role uses).
    assert sh(DB, "mysql -N -e 'SELECT 1'").stdout.strip() == "1"


SECRET_NAMES = ("redis", "mysql_queuefleet")


@pytest.mark.parametrize("container", [REDIS, DB, W1, W2])
def test_every_file_holding_a_secret_is_0640_or_stricter(container):
    """Search the places a deploy writes to for the secrets in clear; every hit must
    be 0640 or stricter (no bit for others, no write for group)."""
    hits = {}
    for name in SECRET_NAMES:
        out = sh(container, f"grep -rlsF -- '{secret(name)}' /etc /opt /var/log /var/lib/redis /root /home /tmp || true",
                 timeout=180).stdout
        for path in out.split():
            mode, owner = sh(container, f"stat -c '%a %U:%G' {path}").stdout.split()
            hits[path] = (mode, owner)
    bad = {p: m for p, m in hits.items() if int(m[0], 8) & 0o027}
    assert not bad, f"secret-bearing files readable by others or group-writable on {container}: {bad}"
    # Clients' passwords are SHA-256 digests in redis.conf and sentinel.conf; what a server presents to
    # its master (masterauth) and a sentinel to Redis (auth-pass) is the password itself.
    expected = {REDIS: ["/etc/redis/redis.conf", "/etc/redis/sentinel.conf"],
                W1: ["/opt/queuefleet/shared/queuefleet.env"],
                W2: ["/opt/queuefleet/shared/queuefleet.env", "/etc/redis/sentinel.conf"],
                DB: ["/etc/redis/redis.conf", "/etc/redis/sentinel.conf"]}[container]
    for path in expected:
        assert path in hits, f"{path} should hold a secret (test assumption) but grep did not find one: {hits}"
    if container in WORKERS:
        assert hits["/opt/queuefleet/shared/queuefleet.env"] == ("640", "root:queuefleet")


@pytest.mark.parametrize("worker", WORKERS)
def test_workers_run_as_the_unprivileged_user(worker):
    pids = supervisor_pids(worker)
    assert len(pids) == 2, pids
    for process, pid in pids.items():
        user = sh(worker, f"ps -o user= -p {pid}").stdout.strip()
        assert user == "queuefleet", f"{process} (pid {pid}) runs as {user}"
    shell = sh(worker, "getent passwd queuefleet | cut -d: -f7").stdout.strip()
    assert shell in ("/usr/sbin/nologin", "/bin/false"), shell
    assert sh(worker, "id -u queuefleet").stdout.strip() != "0"


def test_a_job_outside_the_allow_list_is_refused():
    marker = f"/tmp/allowlist-{int(time.time())}"
    app_py(W1, f"""
from queuefleet import Queue
q = Queue.from_url(os.environ["QUEUEFLEET_REDIS_URL"])
q.push("os:system", "touch {marker}", queue="high")
q.push("subprocess:getoutput", "touch {marker}", queue="high")
""")
    code = f"""
import json
from sqlalchemy import create_engine, text
e = create_engine(os.environ["QUEUEFLEET_DATABASE_URL"])
with e.connect() as c:
    rows = c.execute(text("SELECT payload, exception FROM failed_jobs")).fetchall()
print(json.dumps([[json.loads(p)["job"], json.loads(p)["data"], x] for p, x in rows]))
"""

    def refused():
        rows = json.loads(app_py(W1, code).stdout)
        mine = [r for r in rows if r[1] == f"touch {marker}"]
        return mine if len(mine) == 2 else None

    rows = wait_for(refused, 30, "both jobs in failed_jobs")
    for job, _, exception in rows:
        assert "is not allowed" in exception, (job, exception)
    for worker in WORKERS:
        assert sh(worker, f"test ! -e {marker}", check=False).returncode == 0, f"{marker} was created on {worker}"
