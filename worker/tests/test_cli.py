"""The `queue` command line as operators run it (the real console script), and the
producer API's validation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import QUEUE_BIN, QueueCli
from servers import free_port, wait_for
from queuefleet import Job, Queue

WIDE = {"COLUMNS": "250"}


def one_error_line(result: subprocess.CompletedProcess, code: int = 1) -> str:
    """The command failed with `code` and exactly one `queue: ...` line, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("queue: "), result.stderr
    return lines[0]


def usage_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Click's usage error: exit 2, an `Error:` line naming the problem, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "Error:" in result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    return result.stderr


def run_with_env(cli: QueueCli, args: list[str], env: dict[str, str], drop: tuple[str, ...] = (), **kwargs) -> subprocess.CompletedProcess:
    """Run the console script with some variables removed from the environment."""
    full = {k: v for k, v in {**cli.env, **env}.items() if k not in drop}
    return subprocess.run([QUEUE_BIN, *args], env=full, capture_output=True, text=True, timeout=60, cwd=cli.workdir, **kwargs)


@pytest.fixture
def bare_cli(redis_url, sqlite_url, tmp_path):
    """Like `cli` but without running `queue migrate` first: for commands that fail before
    they touch the database (saves a subprocess per test)."""
    c = QueueCli(redis_url, sqlite_url, tmp_path)
    yield c
    c.close()


def status(cli: QueueCli, *args: str) -> dict:
    return json.loads(cli.run("status", "--json", *args).stdout)


# -- unreachable Redis / database --------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["push", "qf_testjobs:record", "--data", '{"tag": "x"}'],
        ["status"],
        ["monitor", "default=10"],
        ["restart", "--release", "r1"],
        ["clear", "default", "--force"],
        ["retry", "all"],
    ],
    ids=lambda a: a[0],
)
def test_unreachable_redis_is_one_line_and_exit_1(cli, args):
    closed = f"redis://127.0.0.1:{free_port()}/0"
    line = one_error_line(cli.run(*args, check=False, env={"QUEUEFLEET_REDIS_URL": closed}))
    assert "Redis" in line and closed in line


def test_redis_password_is_not_printed(bare_cli):
    closed = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    line = one_error_line(bare_cli.run("status", check=False, env={"QUEUEFLEET_REDIS_URL": closed}))
    assert "hunter2" not in line and ":***@127.0.0.1" in line


@pytest.mark.parametrize("args", [["failed"], ["forget", "1"], ["flush"], ["retry", "all"], ["migrate"]],
                         ids=lambda a: a[0])
def test_unreachable_database_is_one_line_and_exit_1(bare_cli, args):
    port = free_port()
    url = f"mysql+pymysql://qf:s3cret-pw@127.0.0.1:{port}/queuefleet"
    line = one_error_line(bare_cli.run(*args, check=False, env={"QUEUEFLEET_DATABASE_URL": url}))
    assert f"127.0.0.1:{port}" in line
    assert "s3cret-pw" not in line
    assert "Can't connect" in line or "cannot reach" in line


def test_bad_database_url_is_one_line(bare_cli):
    line = one_error_line(bare_cli.run("failed", check=False, env={"QUEUEFLEET_DATABASE_URL": "nosuchdb://x/y"}))
    assert "bad database URL" in line


# -- `queue work` option errors -------------------------------------------------------------


def test_work_without_jobs_is_a_usage_error(bare_cli):
    result = run_with_env(bare_cli, ["work"], {}, drop=("QUEUEFLEET_JOBS",))
    usage_error(result, "no job modules are allowed", "--jobs")
    # an empty QUEUEFLEET_JOBS is the same as none
    usage_error(bare_cli.run("work", check=False, env={"QUEUEFLEET_JOBS": ""}), "no job modules are allowed")
    usage_error(bare_cli.run("work", "--jobs", "os;rm", check=False), "--jobs")


@pytest.mark.parametrize(
    "value, needle",
    [("a b", "queue name must be"), ("a,,b/c", "queue name must be"), (",", "give at least one queue"),
     ("high,low,high", "listed twice"), ("", "give at least one queue")],
)
def test_work_with_bad_queue_names_is_a_usage_error(bare_cli, value, needle):
    usage_error(bare_cli.run("work", "--queue", value, check=False), "--queue", needle)


@pytest.mark.parametrize(
    "args, needle",
    [(["--sleep", "0"], "--sleep must be > 0"), (["--sleep", "-1"], "--sleep must be > 0"),
     (["--tries", "-1"], "--tries must be >= 0"), (["--timeout", "nan"], "--timeout must be a finite number"),
     (["--backoff", "10,x"], "backoff must be seconds"), (["--lease", "0"], "--lease must be > 0"),
     (["--prefetch", "0"], "--prefetch"), (["--log-format", "xml"], "--log-format")],
)
def test_work_option_errors(bare_cli, args, needle):
    usage_error(bare_cli.run("work", *args, check=False), needle)


# -- `queue push` -------------------------------------------------------------------------------


def test_push_prints_the_id_and_honours_its_options(bare_cli, r):
    job_id = bare_cli.run("push", "qf_testjobs:record", "--data", '{"tag": "p"}', "--queue", "mail", "--tries", "4",
                     "--timeout", "7.5", "--backoff", "1,5").stdout.strip()
    payload = json.loads(r.hget("queuefleet:payloads", job_id))
    assert payload["id"] == job_id and payload["queue"] == "mail" and payload["data"] == {"tag": "p"}
    assert (payload["max_tries"], payload["timeout"], payload["backoff"]) == (4, 7.5, [1.0, 5.0])
    assert r.lrange("queuefleet:queue:mail", 0, -1) == [job_id.encode()]

    delayed_id = bare_cli.run("push", "qf_testjobs:record", "--data", '{"tag": "d"}', "--delay", "60").stdout.strip()
    assert r.zscore("queuefleet:queue:default:delayed", delayed_id) is not None
    assert r.llen("queuefleet:queue:default") == 0


@pytest.mark.parametrize(
    "args, needle",
    [
        (["qf_testjobs:record", "--data", "{tag: 1}"], "not valid JSON"),
        (["os.system", "--data", "1"], "package.module:function"),
        (["qf_testjobs:record", "--delay", "-5"], "--delay must be >= 0"),
        (["qf_testjobs:record", "--delay", "inf"], "--delay must be a finite number"),
        (["qf_testjobs:record", "--timeout", "nan"], "--timeout must be a finite number"),
        (["qf_testjobs:record", "--timeout", "0"], "--timeout must be > 0"),
        (["qf_testjobs:record", "--backoff", "inf"], "finite number"),
        (["qf_testjobs:record", "--tries", "-2"], "--tries must be >= 0"),
        (["qf_testjobs:record", "--queue", "no spaces"], "queue name must be"),
    ],
)
def test_push_errors_are_usage_errors_and_push_nothing(bare_cli, r, args, needle):
    usage_error(bare_cli.run("push", *args, check=False), needle)
    assert r.keys("queuefleet:*") == []


# -- status / heartbeats -----------------------------------------------------------------------


def test_status_shows_queues_and_a_live_workers_heartbeat(cli, r):
    cli.run("push", "qf_testjobs:record", "--data", '{"tag": "later"}', "--queue", "low", "--delay", "300")
    cli.run("push", "qf_testjobs:record", "--data", '{"tag": "x"}', "--queue", "other")
    worker = cli.spawn("--queue", "high,low", "--name", "pool-a", "--release", "rel-7", "--sleep", "0.2")
    worker.wait_log("STARTING")

    doc = wait_for(lambda: (d := status(cli)) and d["workers"] and d, what="the worker's heartbeat")
    assert doc["queues"]["low"] == {"ready": 0, "delayed": 1, "reserved": 0}
    assert doc["queues"]["other"] == {"ready": 1, "delayed": 0, "reserved": 0}
    [hb] = doc["workers"]
    assert hb["host"] == os.uname().nodename
    assert hb["pid"] == str(worker.pid)
    assert (hb["pool"], hb["release"], hb["state"], hb["queues"]) == ("pool-a", "rel-7", "idle", "high,low")
    assert hb["processed"] == "0" and hb["failed"] == "0"
    assert float(hb["started"]) <= float(hb["last_seen"]) <= time.time() + 1
    # heartbeats expire on their own when a worker dies without cleaning up
    assert 0 < r.ttl(f"queuefleet:worker:{hb['id']}") <= 10

    table = cli.run("status", env=WIDE).stdout
    assert "pool-a" in table and "rel-7" in table and str(worker.pid) in table and "other" in table

    assert status(cli, "--queue", "other")["queues"] == {"other": {"ready": 1, "delayed": 0, "reserved": 0}}

    worker.signal(signal.SIGUSR2)
    wait_for(lambda: status(cli)["workers"][0]["state"] == "paused", what="the paused state")
    worker.signal(signal.SIGCONT)
    wait_for(lambda: status(cli)["workers"][0]["state"] == "idle", what="the idle state again")

    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert status(cli)["workers"] == []
    assert r.keys("queuefleet:worker:*") == []


# -- monitor ----------------------------------------------------------------------------------------


def test_monitor_exits_1_naming_only_the_queues_over_threshold(bare_cli):
    q = Queue.from_url(bare_cli.env["QUEUEFLEET_REDIS_URL"])
    q.push_many([("qf_testjobs:record", {"tag": i}) for i in range(6)], queue="high")
    q.push_many([("qf_testjobs:record", {"tag": i}) for i in range(50)], queue="low")

    over = bare_cli.run("monitor", "high=5", "low=100", check=False)
    assert over.returncode == 1
    assert over.stderr.strip() == "queue: backlog over threshold: high"
    assert "OVER high: 6 ready (max 5)" in over.stdout
    assert "ok   low: 50 ready (max 100)" in over.stdout

    both = bare_cli.run("monitor", "high=5", "low=10", check=False)
    assert both.returncode == 1 and both.stderr.strip() == "queue: backlog over threshold: high, low"

    fine = bare_cli.run("monitor", "high=6", "low=100", "empty=0", check=False)
    assert fine.returncode == 0 and fine.stderr == ""
    assert "ok   empty: 0 ready" in fine.stdout


@pytest.mark.parametrize("item", ["high", "high=", "high=x", "high=-1", "high=1.5", "bad name=3", "=3"])
def test_monitor_bad_syntax_is_a_usage_error(bare_cli, item):
    usage_error(bare_cli.run("monitor", item, check=False), "THRESHOLDS")


def test_monitor_needs_a_threshold(bare_cli):
    usage_error(bare_cli.run("monitor", check=False))


# -- env file ---------------------------------------------------------------------------------------


def test_env_file_loads_settings_and_the_environment_wins(bare_cli, r, tmp_path):
    env_file = tmp_path / "queuefleet.env"
    env_file.write_text(
        "# written by the deploy\n"
        "\n"
        f"QUEUEFLEET_REDIS_URL={bare_cli.env['QUEUEFLEET_REDIS_URL']}\n"
        "export QUEUEFLEET_PREFIX='fromfile'\n"
        'QUEUEFLEET_RELEASE="rel-file"\n'
    )
    drop = ("QUEUEFLEET_REDIS_URL", "QUEUEFLEET_PREFIX")
    pushed = run_with_env(bare_cli, ["--env-file", str(env_file), "push", "qf_testjobs:record"], {}, drop=drop)
    assert pushed.returncode == 0, pushed.stderr
    assert r.hexists("fromfile:payloads", pushed.stdout.strip())

    # the same through QUEUEFLEET_ENV_FILE, and the process environment beats the file
    env = {"QUEUEFLEET_ENV_FILE": str(env_file), "QUEUEFLEET_PREFIX": "fromenv"}
    pushed = run_with_env(bare_cli, ["push", "qf_testjobs:record"], env, drop=("QUEUEFLEET_REDIS_URL",))
    assert pushed.returncode == 0, pushed.stderr
    assert r.hexists("fromenv:payloads", pushed.stdout.strip())
    assert not r.hexists("fromfile:payloads", pushed.stdout.strip())

    # ... but `restart` never takes its release from QUEUEFLEET_RELEASE: with the deploy's
    # env file that would turn "restart every worker" into a no-op for the current release
    restarted = run_with_env(bare_cli, ["--env-file", str(env_file), "restart"], {}, drop=drop)
    assert restarted.stdout.strip() == "restart signalled: all workers", restarted.stderr


def test_env_file_errors_are_usage_errors(bare_cli, tmp_path):
    usage_error(bare_cli.run("--env-file", str(tmp_path / "missing.env"), "status", check=False), "cannot read")
    bad = tmp_path / "bad.env"
    bad.write_text("QUEUEFLEET_PREFIX=x\nthis is not a setting\n")
    usage_error(bare_cli.run("--env-file", str(bad), "status", check=False), f"{bad}:2: expected KEY=VALUE")


# -- restart / clear ----------------------------------------------------------------------------------


def test_restart_for_the_same_release_twice_does_nothing_the_second_time(bare_cli, r):
    first = bare_cli.run("restart", "--release", "X").stdout
    assert "restart signalled" in first and "release X" in first
    second = bare_cli.run("restart", "--release", "X").stdout
    assert "nothing to do" in second and "release X" in second
    assert r.hget("queuefleet:restart", "generation") == b"1"
    assert r.hget("queuefleet:restart", "release") == b"X"

    assert "restart signalled" in bare_cli.run("restart", "--release", "Y").stdout
    assert r.hget("queuefleet:restart", "generation") == b"2"
    # without a release every call is a new generation
    assert "restart signalled" in bare_cli.run("restart").stdout
    assert "restart signalled" in bare_cli.run("restart").stdout
    assert r.hget("queuefleet:restart", "generation") == b"4"


def test_clear_deletes_waiting_jobs_of_one_queue_only(bare_cli, r):
    q = Queue.from_url(bare_cli.env["QUEUEFLEET_REDIS_URL"])
    q.push_many([("qf_testjobs:record", {"tag": i}) for i in range(3)], queue="doomed")
    q.push("qf_testjobs:record", {"tag": "later"}, queue="doomed", delay=300)
    keep = q.push("qf_testjobs:record", {"tag": "keep"}, queue="kept")

    # without --force it asks; "no" changes nothing
    answer_no = run_with_env(bare_cli, ["clear", "doomed"], {}, input="n\n")
    assert answer_no.returncode == 1 and "aborted" in answer_no.stderr
    assert r.llen("queuefleet:queue:doomed") == 3

    assert bare_cli.run("clear", "doomed", "--force").stdout.strip() == "cleared 4 jobs from doomed"
    assert r.llen("queuefleet:queue:doomed") == 0 and r.zcard("queuefleet:queue:doomed:delayed") == 0
    assert r.hkeys("queuefleet:payloads") == [keep.encode()]
    assert r.llen("queuefleet:queue:kept") == 1
    usage_error(bare_cli.run("clear", "no/such", "--force", check=False), "queue name must be")


# -- producer API ---------------------------------------------------------------------------------------


def test_push_many_returns_ids_in_order_and_jobs_run_fifo(redis_url, r):
    q = Queue.from_url(redis_url)
    ids = q.push_many([("qf_testjobs:record", {"tag": f"t{i}"}) for i in range(5)], queue="bulk", tries=2, timeout=9,
                      backoff=[1, 2])
    assert len(set(ids)) == 5
    # the ready list is consumed from the right: oldest first
    assert [i.decode() for i in reversed(r.lrange("queuefleet:queue:bulk", 0, -1))] == ids
    for n, job_id in enumerate(ids):
        job = Job.decode(r.hget("queuefleet:payloads", job_id))
        assert (job.id, job.job, job.data, job.queue) == (job_id, "qf_testjobs:record", {"tag": f"t{n}"}, "bulk")
        assert (job.max_tries, job.timeout, job.backoff) == (2, 9, [1.0, 2.0])
    assert q.push_many([]) == []


def test_push_many_with_one_invalid_item_pushes_nothing(redis_url, r):
    q = Queue.from_url(redis_url)
    q.push("qf_testjobs:record", {"tag": "before"}, queue="bulk")
    before = r.hgetall("queuefleet:payloads")
    items = [("qf_testjobs:record", {"tag": 1}), ("qf_testjobs:record", {"tag": {1, 2}}), ("qf_testjobs:record", {"tag": 3})]
    with pytest.raises(ValueError, match="JSON-serialisable"):
        q.push_many(items, queue="bulk")
    with pytest.raises(ValueError, match="package.module:function"):
        q.push_many([("qf_testjobs:record", 1), ("os.system", 2)], queue="bulk")
    with pytest.raises(ValueError, match="JSON-serialisable"):
        q.push_many([("qf_testjobs:record", float("nan"))], queue="bulk")
    assert r.llen("queuefleet:queue:bulk") == 1
    assert r.hgetall("queuefleet:payloads") == before


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"delay": -1}, "delay must be a finite number of seconds >= 0"),
        ({"delay": float("inf")}, "delay must be a finite number of seconds >= 0"),
        ({"delay": "5"}, "delay must be"),
        ({"tries": -1}, "tries must be an integer >= 0"),
        ({"tries": 2.5}, "tries must be an integer >= 0"),
        ({"tries": True}, "tries must be an integer >= 0"),
        ({"timeout": 0}, "timeout must be a finite number of seconds > 0"),
        ({"timeout": float("nan")}, "timeout must be a finite number of seconds > 0"),
        ({"timeout": "10"}, "timeout must be"),
        ({"backoff": "10,x"}, "backoff must be seconds like"),
        ({"backoff": [5, -1]}, "backoff seconds must be a finite number >= 0"),
        ({"backoff": float("inf")}, "backoff seconds must be a finite number >= 0"),
        ({"queue": "has space"}, "queue name must be"),
    ],
)
def test_producer_validation_errors_are_value_errors(redis_url, r, kwargs, message):
    q = Queue.from_url(redis_url)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        q.push("qf_testjobs:record", {"tag": 1}, **kwargs)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        q.push_many([("qf_testjobs:record", {"tag": 1})], **kwargs)
    assert r.keys("queuefleet:*") == []


def test_push_rejects_bad_job_names(redis_url, r):
    q = Queue.from_url(redis_url)
    for name in ("os.system", "os:system()", ":f", "a.b:", "a..b:f", "1a:f"):
        with pytest.raises(ValueError, match="package.module:function"):
            q.push(name, None)
    assert r.keys("queuefleet:*") == []
