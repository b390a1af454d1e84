"""The producer side as a web app has it: the core install (`pip install queuefleet`, no extras)
pushes jobs, and a Queue survives a pre-fork server's fork.

The core environment is real: a directory holding only queuefleet and the installed
distributions its core dependencies resolve to (read from pyproject.toml and the installed
metadata), run with `python -S` so nothing else of the test venv can be imported."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import redis

from queuefleet import Queue

WORKER = Path(__file__).resolve().parents[1]
WORKER_EXTRA_MODULES = ("sqlalchemy", "click", "rich", "cronsim", "prometheus_client", "pymysql")

try:
    from packaging.requirements import Requirement
except ImportError:  # pip vendors it
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]


def project() -> dict:
    return tomllib.loads((WORKER / "pyproject.toml").read_text())["project"]


def closure(requirements: list[str], extras: tuple[str, ...] = ()) -> set[str]:
    """The installed distributions `requirements` pull in, with their markers evaluated here."""
    seen: set[str] = set()
    todo = [(Requirement(r), set(extras)) for r in requirements]
    while todo:
        req, wanted = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (wanted or {""})):
            continue
        dist = importlib.metadata.distribution(req.name)
        key = f"{dist.metadata['Name'].lower().replace('_', '-')}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        todo += [(Requirement(r), set(req.extras)) for r in dist.requires or []]
    return {key.split("[")[0] for key in seen}


def installed_env(root: Path, requirements: list[str], extras: tuple[str, ...] = ()) -> Path:
    """queuefleet's package plus the top-level files of what `requirements` resolve to, nothing else."""
    (root / "queuefleet").symlink_to(WORKER / "src" / "queuefleet")
    for name in closure(requirements, extras):
        dist = importlib.metadata.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            target = Path(str(dist.locate_file(top)))
            if target.exists() and not (root / top).exists():
                (root / top).symlink_to(target)
    return root


@pytest.fixture(scope="module")
def core_env(tmp_path_factory) -> Path:
    return installed_env(tmp_path_factory.mktemp("core-env"), project()["dependencies"])


def run_core(core_env: Path, code: str, redis_url: str = "") -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(core_env), "TEST_REDIS_URL": redis_url}
    return subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          cwd=core_env)


def test_the_core_install_is_redis_and_hiredis_only():
    assert [Requirement(r).name for r in project()["dependencies"]] == ["redis"]
    assert closure(project()["dependencies"]) == {"redis", "hiredis"}
    assert {"sqlalchemy", "click", "rich", "cronsim", "prometheus-client"} <= closure(["queuefleet[worker]"])
    assert "pymysql" in closure(["queuefleet[mysql]"]), "the mysql extra brings the worker's too"


def test_the_core_install_pushes_jobs(core_env, redis_url, r):
    result = run_core(core_env, f"""
import importlib.util, os, sys
assert [m for m in {WORKER_EXTRA_MODULES!r} if importlib.util.find_spec(m)] == [], "the extras are not there"
import queuefleet
from queuefleet import Job, Queue, on_failure
job_id = Queue.from_url(os.environ["TEST_REDIS_URL"]).push("myapp.jobs:send", {{"order": 42}}, id="order-42")
print(job_id, sorted(m for m in sys.modules if m.split(".")[0] in ("redis", "hiredis")) != [])
""", redis_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["order-42", "True"]
    assert r.llen("queuefleet:queue:default") == 1


def test_the_worker_parts_name_the_extra_to_install(core_env):
    cli = run_core(core_env, "import sys; sys.argv = ['queue', 'status']; from queuefleet.command import main; main()")
    assert cli.returncode == 1 and "Traceback" not in cli.stderr, cli.stderr
    assert cli.stderr == ("queue: the queue command needs the worker's dependencies, and SQLAlchemy, click, rich, cronsim, "
                          "prometheus-client are not installed: pip install 'queuefleet[worker]' (plain `pip install "
                          "queuefleet` installs only what pushing jobs needs)\n")
    store = run_core(core_env, "from queuefleet import FailedJobStore")
    assert store.returncode == 1
    assert "ImportError: queuefleet.FailedJobStore needs the worker's dependencies (No module named 'sqlalchemy'): " \
           "pip install 'queuefleet[worker]'" in store.stderr


def test_a_queue_created_before_a_fork_is_safe_in_the_child(redis_url, r):
    """gunicorn --preload, uWSGI without lazy-apps: the master creates the Queue, the workers are
    forked from it. redis-py's pool sees the new pid and opens the child's own connection, and
    the child's exit does not shut the parent's socket down."""
    q = Queue.from_url(redis_url)
    q.push("myapp.jobs:send", {"from": "parent"})
    parent_conn = q.redis.client_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: push on the inherited Queue, report its connection, exit
        code = 1
        try:
            os.close(read)
            q.push("myapp.jobs:send", {"from": "child"})
            os.write(write, str(q.redis.client_id()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        child_conn = int(f.read() or -1)
    assert os.waitpid(pid, 0)[1] == 0
    assert child_conn not in (-1, parent_conn), "the child opened its own connection"
    q.push("myapp.jobs:send", {"from": "parent again"})
    assert q.redis.client_id() == parent_conn, "the parent's connection outlived the child"
    assert r.llen("queuefleet:queue:default") == 3


def test_a_mysql_url_without_the_mysql_extra_names_it(tmp_path):
    """`queuefleet[worker]` without `mysql`: a mysql+pymysql:// URL says which extra is missing."""
    worker_only = [*project()["dependencies"], *project()["optional-dependencies"]["worker"]]
    env = installed_env(tmp_path, worker_only)
    code = ("import sys; sys.argv = ['queue', '--database-url', 'mysql+pymysql://qf:secret@127.0.0.1:9/qf', 'failed']; "
            "from queuefleet.command import main; main()")
    result = run_core(env, code)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr == ("queue: bad database URL mysql+pymysql://qf:***@127.0.0.1:9/qf: No module named 'pymysql': "
                             "install the mysql extra, pip install 'queuefleet[mysql]'\n")
