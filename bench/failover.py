"""bench/faults --sentinel: Redis failovers under load on one machine (issue 24).

A master, a replica and 3 sentinels as local processes (worker/tests/servers.SentinelGroup,
down-after-milliseconds DOWN_AFTER_MS), WORKERS workers under a real supervisord and a
steady producer with its own ids, all on the redis+sentinel:// URL. Each fault hits
whichever server is master at the time, with durable push off and on:

- the master's redis-server killed (kill -9); it is started again as a replica of the new
  master, as a re-deploy would configure it (and as the Sentinels would make it anyway);
- the master stopped (SIGSTOP: a hung host that holds its sockets), killed once the
  Sentinels promoted the replica, and started again as a replica;
- a switchover (SENTINEL FAILOVER): the old master stays up and is demoted a few seconds
  after the promotion.

Reported as bench/faults' rows, with *service back* counted from the fault's start (a
probe job pushed at that moment ran). Written into bench/FAULTS.md between the SENTINEL
markers (a full bench/faults run keeps that section).
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "worker" / "tests"
QUEUE = Path(sys.executable).with_name("queue")
sys.path.insert(0, str(TESTS))
import faults  # noqa: E402
from faults import Produced, Row, poll, push, seconds  # noqa: E402
from servers import RedisServer, SentinelGroup, Supervisord, worker_program  # noqa: E402

BEGIN = "<!-- SENTINEL: written by bench/faults --sentinel -->"
END = "<!-- /SENTINEL -->"
EXPLAINED = """What a failover can still lose or run twice:

- **Durable push off.** Whatever the old master acknowledged and no replica received. A dead or
  hung master: the replication lag at that moment (0 pushes and 0 acks in S1 and S3; sub-millisecond
  on one machine). A switchover: the demoted master takes writes until its clients see the switch
  (at most 1 s, they ask the Sentinels every second) and the Sentinels reconfigure it (about 10 s):
  18 pushes (0.8 s at 50/s) lost and 3 jobs run twice in S5; at R pushes/s expect up to about R
  lost per switchover, and the acks of about one fetch per worker.
- **Durable push on.** No acknowledged push is lost (a push the replica did not confirm raises
  NotReplicated and is pushed again with the same id), and workers send again the acks the replica
  did not confirm once the Sentinels name another master: 0 lost and 0 run twice in S2, S4, S6.
  What remains: a job whose worker learns of the switch only after the Sentinels' own delay may run
  twice (at-least-once); a push that raised NotReplicated without an id of your own and is retried
  makes a second job; with no replica online durable pushes fail until one is back."""
DOWN_AFTER_MS = 5000
FAILOVER_TIMEOUT_MS = 10_000
PRODUCE_SECONDS = 14.0
WAIT = "wait_replicas=1&wait_timeout_ms=500"


class FailoverHarness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.group = SentinelGroup(tmp / "redis", down_after_ms=DOWN_AFTER_MS, failover_timeout_ms=FAILOVER_TIMEOUT_MS)
        self.group.start()
        self.exec_log = tmp / "executed.txt"
        self.exec_log.touch()
        self.db_url = f"sqlite:///{tmp / 'failed.sqlite3'}"
        env = {**os.environ, "QUEUEFLEET_DATABASE_URL": self.db_url}
        subprocess.run([str(QUEUE), "migrate"], env=env, check=True, capture_output=True)
        self.fleet: Supervisord | None = None
        from queuefleet import FailedJobStore

        self.store = FailedJobStore(self.db_url)

    def start_fleet(self, url: str) -> None:
        """Workers on `url` (durable or not, as the row's producer)."""
        if self.fleet is not None:
            self.fleet.close()
        fleet_dir = self.tmp / f"fleet-{len(list(self.tmp.glob('fleet-*')))}"
        env = {"QUEUEFLEET_REDIS_URL": url, "QUEUEFLEET_DATABASE_URL": self.db_url, "QUEUEFLEET_JOBS": "fault_jobs",
               "PYTHONPATH": HERE / "jobs", "FAULTS_EXEC_LOG": self.exec_log}
        command = (f"{QUEUE} work --queue probe,work --tries 1 --timeout 30 --sleep 1 "
                   f"--lease {faults.LEASE} --max-lost 3")
        fleet_dir.mkdir()
        self.fleet = Supervisord(fleet_dir, worker_program(dir=fleet_dir, command=command, numprocs=faults.WORKERS,
                                                           stopwaitsecs=40, environment=env))
        from queuefleet import Queue

        q = Queue.from_url(url, socket_timeout=2)
        if not poll(lambda: len(self.fleet.pids()) == faults.WORKERS and len(q.workers()) >= faults.WORKERS, 60, 0.2):
            raise RuntimeError(f"the fleet did not start:\n{self.fleet.logs('.err')[-2000:]}")

    def executions(self) -> collections.Counter:
        return collections.Counter(line.split(" ", 1)[0] for line in self.exec_log.read_text().splitlines() if line)

    def failed_ids(self) -> list[str]:
        ids = []
        for failed in self.store.all():
            try:
                ids.append(json.loads(failed.payload)["id"])
            except (ValueError, KeyError, TypeError):
                ids.append("?")
        return ids

    def bring_back(self, old: RedisServer, new: RedisServer) -> None:
        """Start the old master again as a replica of the new one (what a re-deploy renders) and wait until it synced."""
        old.replicaof = new
        old.start()
        if not poll(lambda: old.client().info("replication")["master_link_status"] == "up", 60, 0.1):
            raise RuntimeError("the old master did not sync as a replica")

    def run(self, name: str, fault: str, durable: bool) -> Row:
        g = self.group
        url = g.url_with(WAIT) if durable else g.url
        if not poll(g.settled, 60, 0.2):
            raise RuntimeError("the sentinels did not settle")
        self.start_fleet(url)
        tag = f"S{fault[0]}{int(durable)}{int(time.time()) % 10000}"
        row = Row(name)
        producer = faults.Producer(url, tag, lambda i: "work")
        producer.start()
        time.sleep(faults.FAULT_AT)
        old = g.current_master()
        new = g.other(old)
        from queuefleet import Queue

        probe_queue = Queue.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        probe_id = f"{tag}-probe"
        started = time.monotonic()
        faulted_at = time.time()
        if fault == "kill":
            old.kill()
        elif fault == "stop":
            old.freeze()
        else:
            g.failover()
        prober = threading.Thread(target=push, args=(probe_queue, "fault_jobs:work", {"id": probe_id}, "probe", probe_id),
                                  daemon=True)
        prober.start()
        g.wait_promoted(new, timeout=60)
        promoted = time.monotonic() - started
        if fault == "stop":
            old.proc.send_signal(signal.SIGKILL)
            old.proc.wait(30)
        if fault in ("kill", "stop"):
            # Started again as soon as the replica is promoted (as an operator or a re-deploy would),
            # as a replica of the new master: until it synced, durable pushes cannot be confirmed.
            self.bring_back(old, new)
            back_as_replica = time.monotonic() - started
        else:
            poll(lambda: old.client().info("replication").get("master_link_status") == "up", 60, 0.1)
            back_as_replica = time.monotonic() - started
        row.notes.append(f"replica promoted {promoted:.1f} s after the fault; the old master a synced replica "
                         f"at {back_as_replica:.1f} s")
        if poll(lambda: probe_id in self.executions(), 120, 0.02):
            row.service_back = self.ran_at(probe_id) - faulted_at  # from the handler's own timestamp
        producer.join()
        made: Produced = producer.result
        prefix = f"{tag}-"

        def settled() -> bool:
            runs = self.executions()
            return all(i in runs for i in made.acked) and all(v == 0 for s in probe_queue.sizes(["work", "probe"]).values()
                                                               for v in s.values())

        row.settled = bool(poll(settled, faults.SETTLE_TIMEOUT, 0.5))
        runs = {k: v for k, v in self.executions().items() if k.startswith(prefix) and k != probe_id}
        failed = collections.Counter(i for i in self.failed_ids() if i.startswith(prefix))
        row.pushed = len(made.acked)
        row.retries = made.retries
        row.executed = sum(1 for i in made.acked if runs.get(i))
        row.twice = sum(n - 1 for n in runs.values() if n > 1)
        missing = {i for i in made.acked if not runs.get(i) and i not in failed}
        row.lost = len(missing)
        row.wrongly_failed = sum(failed.values())
        if row.twice:
            row.notes.append(self.explain_twice(prefix, faulted_at, promoted))
        if missing:
            late = sorted(made.acked[i] - faulted_at for i in missing)
            row.notes.append(f"lost: pushes acknowledged {late[0]:+.2f} s to {late[-1]:+.2f} s from the fault (promotion at "
                             f"+{promoted:.1f} s), by the old master before the producer saw the switch")
        return row

    def ran_at(self, job_id: str) -> float:
        for line in self.exec_log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == job_id:
                return float(parts[2])
        raise KeyError(job_id)

    def explain_twice(self, prefix: str, faulted_at: float, promoted: float) -> str:
        """When the first run of each job that ran twice ended, relative to the fault."""
        firsts: dict[str, float] = {}
        for line in self.exec_log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0].startswith(prefix):
                firsts.setdefault(parts[0], float(parts[2]))
        counts = self.executions()
        ends = sorted(firsts[i] - faulted_at for i, n in counts.items() if i.startswith(prefix) and n > 1 and i in firsts)
        return (f"run twice: first runs ended {ends[0]:+.2f} s to {ends[-1]:+.2f} s from the fault (promotion at "
                f"+{promoted:.1f} s); their acks reached only the old master, and they ran again when their "
                f"lease ran out on the new one")

    def close(self) -> None:
        if self.fleet is not None:
            self.fleet.close()
        self.group.stop()


ROWS: list[tuple[str, str, bool]] = [
    ("S1. master killed (kill -9), durable push off", "kill", False),
    ("S2. master killed (kill -9), durable push on", "kill", True),
    ("S3. master stopped (SIGSTOP), then killed, durable push off", "stop", False),
    ("S4. master stopped (SIGSTOP), then killed, durable push on", "stop", True),
    ("S5. switchover (SENTINEL FAILOVER), durable push off", "switch", False),
    ("S6. switchover (SENTINEL FAILOVER), durable push on", "switch", True),
]


def section(rows: list[Row], took: float, machine: str, redis_version: str) -> str:
    notes = [f"- {r.name}: {n}" for r in rows for n in r.notes]
    lines = [
        BEGIN, "## Redis failover (issue 24)", "",
        f"Generated by `bench/faults --sentinel` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, took "
        f"{took:.0f} s. Machine: {machine}. redis-server {redis_version} (AOF everysec).", "",
        f"A master, a replica and 3 sentinels as local processes (quorum 2, down-after-milliseconds {DOWN_AFTER_MS},",
        f"failover-timeout {FAILOVER_TIMEOUT_MS}); {faults.WORKERS} workers under supervisord and a producer pushing "
        f"{int(faults.RATE * PRODUCE_SECONDS)} jobs",
        f"at {faults.RATE:g}/s with its own ids, all on the redis+sentinel:// URL; durable push is `?{WAIT}`.",
        "The fault hits whichever server is master; *service back* counts from the fault's start until a",
        "probe job pushed at that moment ran. After a kill the old master is started again as a replica.", "",
        *faults.table(rows), "", *(["Notes:", "", *notes, ""] if notes else []), EXPLAINED, END,
    ]
    return "\n".join(lines)


def write(text: str, path: Path) -> None:
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        head, _, rest = old.partition(BEGIN)
        new = head + text + rest.partition(END)[2]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


def kept_section(path: Path) -> str:
    old = path.read_text() if path.exists() else ""
    if BEGIN not in old or END not in old:
        return ""
    return BEGIN + old.partition(BEGIN)[2].partition(END)[0] + END


def main(write_results: bool, keep_tmp: bool, only: Callable[[str], bool] = lambda name: True) -> int:
    faults.PRODUCE_SECONDS = PRODUCE_SECONDS  # the producer reads it as it runs
    tmp = Path(tempfile.mkdtemp(prefix="queuefleet-failover-"))
    start = time.monotonic()
    h = FailoverHarness(tmp)
    rows: list[Row] = []
    try:
        redis_version = h.group.master.version()
        for name, fault, durable in ROWS:
            if only(name):
                rows.append(h.run(name, fault, durable))
                print(faults.table([rows[-1]])[-1], flush=True)
    finally:
        h.close()
        if keep_tmp:
            print(f"logs kept in {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    took = time.monotonic() - start
    print("\n".join(faults.table(rows)))
    for r in rows:
        for n in r.notes:
            print(f"  {r.name}: {n}")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    import platform

    if write_results:
        write(section(rows, took, f"{os.cpu_count()} CPUs ({cpu}), {platform.platform()}", redis_version), HERE / "FAULTS.md")
        print("wrote the Sentinel section of bench/FAULTS.md")
    bad = [r for r in rows if "durable push on" in r.name and (r.lost or r.wrongly_failed or not r.settled)]
    bad += [r for r in rows if r.service_back is None or r.service_back > DOWN_AFTER_MS / 1000 + 5]
    print(f"took {took:.0f} s; " + ("targets met" if not bad else "NOT MET: " + "; ".join(r.name for r in bad)))
    return 1 if bad else 0
