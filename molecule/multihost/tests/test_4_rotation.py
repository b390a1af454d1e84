"""Rotating the Redis and MariaDB passwords without downtime (issue 27), to passwords with every
character that breaks a URL or a config file (/ @ : % + = # and a space).

Under producers that never stop, like a web app:
1. deploy with the new passwords and the old ones as `redis_requirepass_previous` and
   `mysql_users[].previous_password`: both servers accept both, every worker restarts gracefully
   onto the new ones and the deploy waits for all of them, while a producer keeps pushing with the
   OLD Redis password;
2. the producer moves to the new password (the app's own deploy); then a deploy without the
   previous passwords: the old ones are refused from then on.
No pool process is ever FATAL, BACKOFF or EXITED, and every job pushed runs exactly once.
Runs last: the scenario's secrets then hold the new passwords, so the check-mode run that follows
sees a converged fleet.
"""

from __future__ import annotations

import json
import re
import secrets as random
import threading
import time

import pytest

from mh import (DB, INVENTORY, PRIVATE, REDIS, SECRETS, W1, W2, WORKERS, agent, app_py, install_agent, playbook, secret,
                sh, supervisor_pids, wait_for)

pytestmark = pytest.mark.skipif(not INVENTORY, reason="runs inside molecule verify")

NEW_REDIS = "r/ed@is:p%s+w=r#d" + random.token_urlsafe(8)  # no space: Sentinel keeps it unquoted
NEW_DB = "d/b@p:a%s+s=w#r d" + random.token_urlsafe(8)
PRIV = "queuefleet.*:SELECT,INSERT,UPDATE,DELETE,CREATE,INDEX,ALTER"


class Watcher(threading.Thread):
    """Polls supervisord on both worker hosts and keeps every pool process state that is not healthy."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.bad: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for worker in WORKERS:
                out = sh(worker, "supervisorctl status", check=False).stdout
                for line in out.splitlines():
                    parts = line.split()
                    if len(parts) > 1 and parts[0].startswith("queuefleet") and parts[1] in ("FATAL", "BACKOFF", "EXITED"):
                        self.bad.append(f"{worker}: {line.strip()}")
            time.sleep(0.5)


def producing(tag: str) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run() -> None:
        result.update(agent("produce", tag, "100000", "10", "0", timeout=900))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(lambda: agent("tally", tag)["pushed"] > 0, 30, f"producer {tag} to push")
    return thread, result


def stop(tag: str, thread: threading.Thread) -> None:
    app_py(W1, f"from queuefleet import Queue\nQueue.from_url(os.environ['QUEUEFLEET_REDIS_URL']).redis.set('mh:stop:{tag}', 1)")
    thread.join(60)
    assert not thread.is_alive(), f"producer {tag} did not stop"


def redis_auth(password: str) -> str:
    payload = f"AUTH {json.dumps(password)}\r\nQUIT\r\n"
    return app_py(W1, f"""
import socket
s = socket.create_connection(({PRIVATE[REDIS]!r}, 6379), timeout=5)
s.sendall({payload.encode()!r})
print(s.recv(200).decode().split()[0])
""").stdout.strip()


def mysql_login(password: str) -> str:
    return app_py(W1, f"""
import pymysql
try:
    pymysql.connect(host={PRIVATE[DB]!r}, user="queuefleet", password={password!r}, database="queuefleet", connect_timeout=5)
    print("ok")
except pymysql.err.OperationalError as e:
    print(e.args[0])
""").stdout.strip()


def deploy(redis_password: str, previous_redis: list[str], db_password: str, previous_db: str | None) -> str:
    user = {"name": "queuefleet", "hosts": [PRIVATE[W1], PRIVATE[W2]], "password": db_password, "priv": PRIV}
    if previous_db:
        user["previous_password"] = previous_db
    return playbook("molecule/multihost/converge.yml", extra={
        "multihost_redis_password": redis_password, "redis_requirepass_previous": previous_redis,
        "multihost_mysql_password": db_password, "mysql_users": [user]})


def test_rotating_both_passwords_loses_nothing_and_never_fails_a_worker():
    old_redis, old_db = secret("redis"), secret("mysql_queuefleet")
    install_agent(W1)
    agent("reset")
    before = {worker: supervisor_pids(worker) for worker in WORKERS}
    watcher = Watcher()
    watcher.start()
    old_producer, old_result = producing("rot-old")  # the web app, still on the old password

    # 1. Both passwords accepted; every worker moves to the new ones; the deploy waits for them.
    out = deploy(NEW_REDIS, [old_redis], NEW_DB, old_db)
    assert re.search(r"set live: [^;]*\buser \(passwords\)", " ".join(out.split())), out[-3000:]
    for worker in WORKERS:
        after = supervisor_pids(worker)
        assert set(after) == set(before[worker]) and not set(after.values()) & set(before[worker].values()), \
            f"every worker on {worker} restarted onto the new settings before the deploy ended: {before[worker]} -> {after}"
    assert redis_auth(old_redis) == "+OK" and redis_auth(NEW_REDIS) == "+OK"
    assert mysql_login(old_db) == "ok" and mysql_login(NEW_DB) == "ok"
    assert agent("tally", "rot-old")["pushed"] > 0

    # 2. The app moves to the new password, then the old ones go.
    stop("rot-old", old_producer)
    new_producer, new_result = producing("rot-new")  # reads the env file: the new password
    deploy(NEW_REDIS, [], NEW_DB, None)
    assert redis_auth(old_redis).startswith("-WRONGPASS") and redis_auth(NEW_REDIS) == "+OK"
    assert mysql_login(old_db) == "1045" and mysql_login(NEW_DB) == "ok"
    stop("rot-new", new_producer)
    watcher.done.set()
    watcher.join(10)

    # The scenario's inventory now yields the new passwords (the check-mode run that follows).
    (SECRETS / "redis").write_text(NEW_REDIS)
    (SECRETS / "mysql_queuefleet").write_text(NEW_DB)

    for tag, result in (("rot-old", old_result), ("rot-new", new_result)):
        ids = [job for job, _ in result["jobs"]]

        def drained(tag=tag, ids=ids):
            t = agent("tally", tag)
            return t if set(ids) <= set(t["executed"]) and not any(any(q.values()) for q in t["queues"].values()) else None

        tally = wait_for(drained, 60, f"the {tag} jobs to run")
        assert len(tally["executed"]) == len(set(tally["executed"])) == len(ids), f"{tag}: a job ran twice or was lost"
        assert tally["failed"] == [], tally["failed"]
    assert watcher.bad == [], f"pool processes failed during the rotation: {watcher.bad[:10]}"
    env = sh(W1, "cat /opt/queuefleet/shared/queuefleet.env").stdout
    assert "r%2Fed%40is%3Ap%25s%2Bw%3Dr%23d" in env, "the URL holds the password fully percent-encoded"
