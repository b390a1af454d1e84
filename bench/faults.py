#!/usr/bin/env python3
"""bench/faults: the queuefleet worker under faults, end to end (issue 9).

One private redis-server (AOF everysec), one MariaDB for failed jobs, a real supervisord
running WORKERS `queue work` processes that reach Redis through a TCP proxy this script
controls, and a steady producer that pushes jobs with its own ids (retrying a push that
raised, which is safe: push is idempotent per id). Each handler appends its job's id to
a file, so executions are counted even while Redis is down or emptied.

For each fault: produce for a few seconds, inject the fault, restore, then wait until
every acknowledged push has run or is in failed jobs. Reported: pushed, executed,
executed twice, lost, wrongly failed, and the time from the end of the fault until a
probe job on the top-priority queue ran ("service back") and until every worker was
RUNNING with a fresh heartbeat ("fleet back").

Run it through bench/faults (which builds bench/.venv).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "worker" / "tests"))  # the servers and network faults of the worker tests
from servers import MariaDB, RedisServer, Supervisord, TcpProxy, poll, worker_program  # noqa: E402
VENV_BIN = Path(sys.executable).parent
WORKERS = 4
JOB_SECONDS = 0.05
RATE = 50.0  # jobs pushed per second (the fleet can run about 80/s)
PRODUCE_SECONDS = 8.0
FAULT_AT = 2.0  # seconds into producing
SETTLE_TIMEOUT = 150.0
LEASE = 30


def fleet_config(workdir: Path, redis_url: str, db_url: str, exec_log: Path) -> str:
    env = {"QUEUEFLEET_REDIS_URL": redis_url, "QUEUEFLEET_DATABASE_URL": db_url, "QUEUEFLEET_JOBS": "fault_jobs",
           "PYTHONPATH": HERE / "jobs", "FAULTS_EXEC_LOG": exec_log}
    command = f"{VENV_BIN / 'queue'} work --queue probe,work --tries 1 --timeout 30 --sleep 1 --lease {LEASE} --max-lost 3"
    return worker_program(dir=workdir, command=command, numprocs=WORKERS, stopwaitsecs=40, environment=env)


# -- the producer --------------------------------------------------------------------------------


@dataclass
class Produced:
    acked: dict[str, float] = field(default_factory=dict)  # id -> time the push was acknowledged
    retries: int = 0
    failing: set[str] = field(default_factory=set)


class Producer(threading.Thread):
    def __init__(self, url: str, tag: str, kinds: Callable[[int], str]) -> None:
        super().__init__(daemon=True)
        from queuefleet import Queue

        self.queue = Queue.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.tag, self.kinds = tag, kinds
        self.result = Produced()

    def run(self) -> None:
        start = time.monotonic()
        for i in range(int(RATE * PRODUCE_SECONDS)):
            job_id = f"{self.tag}-{i}"
            kind = self.kinds(i)
            if kind != "work":
                self.result.failing.add(job_id)
            push(self.queue, f"fault_jobs:{kind}", {"id": job_id, "seconds": JOB_SECONDS}, "work", job_id, self.result)
            delay = start + (i + 1) / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def push(queue, job: str, data: dict, queue_name: str, job_id: str, result: Produced | None = None) -> None:
    """Push until Redis accepts it; the same id every time, so a retry never adds a job."""
    while True:
        try:
            queue.push(job, data, queue=queue_name, id=job_id)
            if result is not None:
                result.acked[job_id] = time.time()
            return
        except redis.RedisError:
            if result is not None:
                result.retries += 1
            time.sleep(0.05)


# -- one fault -----------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    pushed: int = 0
    executed: int = 0
    twice: int = 0
    lost: int = 0
    lost_explained: int = 0
    wrongly_failed: int = 0
    failed_as_meant: int = 0
    retries: int = 0
    service_back: float | None = None
    fleet_back: float | None = None
    settled: bool = False
    notes: list[str] = field(default_factory=list)


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redis = RedisServer(tmp, appendonly=True)
        self.redis.start()
        self.db = MariaDB(tmp / "mariadb")
        (tmp / "mariadb").mkdir()
        self.db.start()
        self.db.app_user("qf", "qf-bench", "faults")
        self.db_url = f"mysql+pymysql://qf:qf-bench@127.0.0.1:{self.db.port}/faults"
        self.proxy = TcpProxy(self.redis.port)
        self.proxy.start()
        self.exec_log = tmp / "executed.txt"
        self.exec_log.touch()
        env = {**os.environ, "QUEUEFLEET_DATABASE_URL": self.db_url}
        subprocess.run([str(VENV_BIN / "queue"), "migrate"], env=env, check=True, capture_output=True)
        fleet_dir = tmp / "fleet"
        self.fleet = Supervisord(fleet_dir, fleet_config(fleet_dir, f"redis://127.0.0.1:{self.proxy.port}/0", self.db_url,
                                                         self.exec_log))
        self.client = redis.Redis(port=self.redis.port, socket_timeout=2)
        from queuefleet import Queue

        self.queue = Queue.from_url(self.redis.url, socket_timeout=2)
        if not poll(self.fleet_ready, 60, 0.2):
            raise RuntimeError(f"the fleet did not start:\n{self.fleet.logs('.err')[-2000:]}")

    def fleet_ready(self) -> bool:
        pids = self.fleet.pids()
        if len(pids) != WORKERS:
            return False
        now = time.time()
        beats = {int(w["pid"]) for w in self.queue.workers() if now - float(w.get("last_seen", 0)) < 5}
        return set(pids) <= beats

    def executions(self) -> collections.Counter:
        return collections.Counter(line.split(" ", 1)[0] for line in self.exec_log.read_text().splitlines() if line)

    def failed_ids(self) -> list[str]:
        answer = poll(lambda: (self.db.sql("SELECT payload FROM faults.failed_jobs"),), 30, 0.5)  # waits while it is down
        ids = []
        for (payload,) in answer[0] if answer else []:
            try:
                ids.append(json.loads(payload)["id"])
            except (ValueError, KeyError, TypeError):
                ids.append("?")
        return ids

    def queues_empty(self) -> bool:
        sizes = self.queue.sizes(["work", "probe"])
        return all(v == 0 for s in sizes.values() for v in s.values())

    def run(self, name: str, inject: Callable[[], None], restore: Callable[[], None], *,
            kinds: Callable[[int], str] = lambda i: "work", explain: Callable[[Row, Produced, set[str]], None] | None = None,
            destroyed: Callable[[Produced], set[str]] = lambda made: set()) -> Row:
        tag = name.split(".")[0].strip().replace(" ", "")
        row = Row(name)
        producer = Producer(self.redis.url, f"F{tag}", kinds)
        producer.start()
        time.sleep(FAULT_AT)
        inject()
        restore()
        restored = time.monotonic()
        probe_id = f"F{tag}-probe"
        push(self.queue, "fault_jobs:work", {"id": probe_id}, "probe", probe_id)
        if poll(lambda: probe_id in self.executions(), 120, 0.02):
            row.service_back = time.monotonic() - restored
        if poll(self.fleet_ready, 120, 0.1):
            row.fleet_back = time.monotonic() - restored
        producer.join()
        made = producer.result
        prefix = f"F{tag}-"

        gone = destroyed(made)  # jobs the fault itself may have destroyed: not waited for (counted below)

        def settled() -> bool:
            runs = self.executions()
            failed = set(self.failed_ids())
            return all(i in runs or i in failed or i in gone for i in made.acked) and self.queues_empty()

        row.settled = bool(poll(settled, SETTLE_TIMEOUT, 0.5))
        runs = {k: v for k, v in self.executions().items() if k.startswith(prefix) and k != probe_id}
        failed = collections.Counter(i for i in self.failed_ids() if i.startswith(prefix))
        row.pushed = len(made.acked)
        row.retries = made.retries
        row.executed = sum(1 for i in made.acked if runs.get(i))
        row.twice = sum(n - 1 for i, n in runs.items() if n > 1 and i not in made.failing)
        missing = {i for i in made.acked if not runs.get(i) and i not in failed}
        row.lost = len(missing)
        row.wrongly_failed = sum(1 for i in failed if i not in made.failing)
        row.failed_as_meant = sum(1 for i in failed if i in made.failing)
        if explain:
            explain(row, made, missing)
        for fatal in [p for p, (state, _) in self.fleet.status().items() if state == "FATAL"]:
            row.notes.append(f"{fatal} FATAL")
        return row

    def close(self) -> None:
        self.fleet.close()
        self.redis.stop()
        self.db.stop()


def faults(h: Harness) -> list[Row]:
    rows: list[Row] = []
    nothing = lambda: None  # noqa: E731

    def kill_workers() -> None:
        for _ in range(2):
            pids = h.fleet.pids()
            if pids:
                os.kill(random.choice(pids), signal.SIGKILL)
            time.sleep(1)

    rows.append(h.run("1. kill -9 of a worker (twice)", kill_workers, nothing))
    rows.append(h.run("2. handler os._exit()s (3 poison jobs)", nothing, nothing,
                      kinds=lambda i: "poison" if i in (40, 160, 280) else "work"))

    def restart_redis() -> None:
        h.redis.stop()
        h.redis.start()

    rows.append(h.run("3. Redis restarted (SIGTERM)", restart_redis, nothing))

    crash: dict[str, float] = {}

    def crash_redis() -> None:
        crash["at"] = time.time()
        h.redis.stop(signal.SIGKILL)
        time.sleep(1)
        h.redis.start()

    def explain_crash(row: Row, made: Produced, missing: set[str]) -> None:
        window = [crash["at"] - made.acked[i] for i in missing]
        in_window = [w for w in window if -0.01 <= w <= 2.0]
        row.lost_explained = len(in_window)
        if window:
            row.notes.append(f"lost pushes were acknowledged {min(window):.2f}-{max(window):.2f} s before the crash "
                             "(AOF everysec)")
        else:
            row.notes.append("no acknowledged push was lost: Redis writes the AOF to the kernel before it replies")

    rows.append(h.run("4. Redis crashed (SIGKILL, AOF everysec)", crash_redis, nothing, explain=explain_crash,
                      destroyed=lambda made: {i for i, at in made.acked.items() if -0.01 <= crash["at"] - at <= 2.0}))

    def unreachable() -> None:
        h.proxy.cut()
        time.sleep(10)

    rows.append(h.run("5. Redis unreachable for 10 s", unreachable, h.proxy.restore))

    def blackhole() -> None:
        h.proxy.stall()
        time.sleep(10)

    rows.append(h.run("6. network blackhole for 10 s", blackhole, h.proxy.restore))

    def kill_db() -> None:
        h.db.kill()
        time.sleep(3)
        h.db.start(fresh=False)

    rows.append(h.run("7. MariaDB killed while jobs fail", kill_db, nothing,
                      kinds=lambda i: "fail" if i % 5 == 4 else "work"))

    flushed: dict[str, float] = {}

    def flush_redis() -> None:
        h.fleet.signal("USR2", "workers:*")  # pause: let a backlog build
        time.sleep(1.5)
        flushed["at"] = time.time()
        h.client.flushall()
        h.fleet.signal("CONT", "workers:*")

    def explain_flush(row: Row, made: Produced, missing: set[str]) -> None:
        before = [i for i in missing if made.acked[i] <= flushed["at"]]
        row.lost_explained = len(before)
        row.notes.append(f"{len(before)} job(s) were waiting in Redis when it was emptied; every job pushed after it ran")

    rows.append(h.run("8. Redis emptied (FLUSHALL) with a backlog", flush_redis, nothing, explain=explain_flush,
                      destroyed=lambda made: {i for i, at in made.acked.items() if at <= flushed["at"]}))
    return rows


# -- report ------------------------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def table(rows: list[Row]) -> list[str]:
    lines = ["| fault | pushed | executed | executed twice | lost | wrongly failed | failed as meant | push retries "
             "| service back | fleet back |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lost = f"{r.lost}" + (f" ({r.lost_explained} explained)" if r.lost_explained else "")
        lines.append(f"| {r.name} | {r.pushed} | {r.executed} | {r.twice} | {lost} | {r.wrongly_failed} | "
                     f"{r.failed_as_meant} | {r.retries} | {seconds(r.service_back)} | {seconds(r.fleet_back)} |")
    return lines


def verdict(rows: list[Row]) -> list[str]:
    problems = []
    for r in rows:
        if r.lost - r.lost_explained:
            problems.append(f"{r.name}: {r.lost - r.lost_explained} lost")
        if r.wrongly_failed:
            problems.append(f"{r.name}: {r.wrongly_failed} wrongly failed")
        if not r.settled:
            problems.append(f"{r.name}: did not settle within {SETTLE_TIMEOUT:g} s")
        problems += [f"{r.name}: {n}" for n in r.notes if "FATAL" in n]
    return problems


def write_results(rows: list[Row], took: float, info: dict[str, str]) -> None:
    problems = verdict(rows)
    notes = [f"- {r.name}: {n}" for r in rows for n in r.notes]
    text = "\n".join([
        "# Faults under load",
        "",
        "Generated by `bench/faults` (issue 9); re-run it to refresh this file. The multihost scenario",
        "(`molecule/multihost/tests/test_3_faults.py`, in `make test`) runs five faults across four containers;",
        "this harness runs eight on one machine, with real processes and servers throughout.",
        "",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, took {took:.0f} s. Machine: {info['machine']}.",
        f"redis-server {info['redis']} (AOF everysec), MariaDB {info['mariadb']}, supervisor {info['supervisor']}, "
        f"queuefleet from worker/ at {info['commit']}.",
        "",
        "## Method",
        "",
        f"- {WORKERS} `queue work --queue probe,work --lease {LEASE}` processes under supervisord (startsecs 1,",
        "  startretries 3), reaching Redis through a TCP proxy the harness controls; failed jobs in MariaDB.",
        f"- A producer pushes {int(RATE * PRODUCE_SECONDS)} jobs at {RATE:g}/s ({JOB_SECONDS * 1000:g} ms each) with its own ids,",
        "  straight to Redis, retrying a push that raised with the same id (push is idempotent per id).",
        f"- The fault starts {FAULT_AT:g} s in. Times count from the moment the fault was over (Redis back,",
        "  network healed, MariaDB restarted): *service back* until a probe job pushed on `probe` ran,",
        "  *fleet back* until every supervisor process was RUNNING with a heartbeat under 5 s old.",
        "- Every handler appends its job id to a file (not Redis), so executions are counted through any fault.",
        "- *lost*: acknowledged pushes that neither ran nor are in failed jobs once the queues are empty;",
        "  *explained* where the fault itself destroys acknowledged data (AOF window, FLUSHALL).",
        "  *wrongly failed*: failed-jobs rows of jobs meant to succeed.",
        "",
        "## Results",
        "",
        *table(rows),
        "",
        "Targets: 0 lost beyond what the fault destroys, 0 wrongly failed, duplicates only where",
        "at-least-once allows them. " + ("All met." if not problems else "Not met: " + "; ".join(problems)),
        "",
        *(["Notes:", "", *notes, ""] if notes else []),
        "## What each fault does to the jobs",
        "",
        "1. **kill -9**: the killed worker's note on its host names the job it was running; supervisor",
        "   starts a new process at once, which finds the dead neighbour and takes its reservations back:",
        "   the running job is counted as lost once (not as an attempt) and runs again; jobs it had",
        "   reserved ahead or finished without the ack reaching Redis go back unblamed. A finished job",
        "   whose ack was still in the worker's buffer runs again: that is the at-least-once duplicate,",
        "   at most the jobs finished in the last batch (about 50 ms of work).",
        "2. **poison job** (`os._exit`): each death is the case above with the same job named; after",
        "   `--max-lost 3` deaths it is stored in failed jobs as lost 3 times and nothing else is blamed.",
        "   The deaths come quickly, so supervisor's `startretries 3` is just enough: more lost runs than",
        "   start retries would turn the program FATAL.",
        "3. **Redis restart**: workers log one line when Redis is lost and one when it is back; acks and",
        "   releases wait for Redis; reservations survive in the AOF, so nothing runs twice.",
        "4. **Redis process killed**: Redis writes every change to the AOF (to the kernel, not yet to the",
        "   disk) before it replies, so a killed process loses nothing acknowledged; it restarts from the AOF",
        "   and the workers carry on as in 3. Any loss here would be counted and shown as explained only if",
        "   pushed within 2 s before the kill. The `everysec` window is for a machine crash (below).",
        "5. **Redis unreachable**: connections are reset and refused; workers back off (0.1 s doubling to",
        "   5 s, so the service can take up to about 5 s after Redis is reachable again) and carry on.",
        "6. **Blackhole**: nothing passes and nothing is closed. Socket timeouts (5 s) notice it; the",
        f"   lease ({LEASE} s) outlasts the outage, so no job is handed to a second worker. A blackhole longer",
        "   than the lease lets another worker start a running job: the first worker logs that the lease",
        "   was lost and records no outcome for it (worker/README.md, Limits).",
        "7. **MariaDB killed**: jobs that fail while it is down stay in Redis (attempt not counted, handler",
        "   not run again) and are stored when it is back, retried at 10 s then doubling to 5 minutes.",
        "8. **Redis emptied**: the workers are paused (SIGUSR2) for 1.5 s so that jobs wait in Redis, then",
        "   Redis is emptied: the waiting jobs are gone with it (explained), the workers resume and every job",
        "   pushed afterwards runs. A restart signal after the flush still restarts workers (signal ids).",
        "",
        "## Redis's durability window",
        "",
        "What the toolkit configures (`roles/redis`, all overridable): `appendonly yes`, `appendfsync everysec`,",
        "RDB snapshots, `supervised systemd` (a stop waits for Redis to write and exit), `maxmemory-policy",
        "noeviction` (a full Redis refuses pushes rather than dropping jobs). Replicas and Sentinel are optional:",
        "see the Redis failover section below (`bench/faults --sentinel`).",
        "",
        "- **Clean restart or stop**: Redis writes and fsyncs the AOF before exiting; nothing acknowledged is lost.",
        "- **Process crash** (kill -9, OOM killer): nothing acknowledged is lost (fault 4): the AOF is written",
        "  to the kernel before Redis replies.",
        "- **Machine crash** (kernel panic, power loss, VM killed): what the kernel had not yet written to disk",
        "  is lost: up to about 1 s of acknowledged writes with `everysec` (up to 2 s when the disk stalls an",
        "  fsync). Lost acks make finished jobs run again; lost pushes are gone. A producer that must not lose a job keeps its",
        "  own record (an outbox) and pushes again under the same id: pushing an id again is a no-op while the job",
        "  is stored and for a day after the push, so re-pushing after a crash is safe.",
        "- `redis_appendfsync: always` closes the window; replication alone does not (replicas are asynchronous).",
        "",
    ])
    import failover

    kept = failover.kept_section(HERE / "FAULTS.md")  # written by `bench/faults --sentinel`
    (HERE / "FAULTS.md").write_text(text + (f"\n{kept}\n" if kept else ""))


def machine_info(h: Harness) -> dict[str, str]:
    from importlib.metadata import version

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    if subprocess.run(["git", "-C", str(HERE.parent), "status", "--porcelain", "--", "worker"], capture_output=True,
                      text=True).stdout.strip():
        commit += " plus uncommitted changes in worker/"
    return {
        "machine": f"{os.cpu_count()} CPUs ({cpu}), {platform.platform()}",
        "redis": h.redis.version(),
        "mariadb": str(h.db.sql("SELECT VERSION()")[0][0]),
        "supervisor": version("supervisor"),
        "commit": commit,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-results", action="store_true", help="print the table, leave FAULTS.md alone")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs of every worker)")
    parser.add_argument("--sentinel", action="store_true",
                        help="only the Redis failover rows: master, replica and 3 sentinels (bench/failover.py)")
    parser.add_argument("--only", default="", help="with --sentinel: run the rows whose name contains this text")
    args = parser.parse_args()
    if args.sentinel:
        import failover

        return failover.main(not args.no_results, args.keep_tmp, lambda name: args.only in name)
    tmp = Path(tempfile.mkdtemp(prefix="queuefleet-faults-"))
    started = time.monotonic()
    h = Harness(tmp)
    try:
        info = machine_info(h)
        rows = faults(h)
    finally:
        h.close()
        if args.keep_tmp:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    took = time.monotonic() - started
    print("\n".join(table(rows)))
    for r in rows:
        for note in r.notes:
            print(f"  {r.name}: {note}")
    problems = verdict(rows)
    print(f"bench/faults took {took:.0f} s; " + ("targets met" if not problems else "NOT MET: " + "; ".join(problems)))
    if not args.no_results:
        write_results(rows, took, info)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
