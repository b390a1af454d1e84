"""bench/run --durable: what durable push costs (issue 24).

A master and one replica (local redis-server processes, AOF everysec as our role sets it),
and queuefleet's producer API pushing N jobs: one call per job, then push_many (1,000 jobs
per call), each with durable push off and on (`wait_replicas=1`: the push and a WAIT go down
one pipeline, so a push returns once the replica has it). Written into bench/RESULTS.md
between the DURABLE markers (a full `bench/run` keeps that section).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "worker" / "tests"))
from servers import RedisServer  # noqa: E402

BEGIN = "<!-- DURABLE: written by bench/run --durable -->"
END = "<!-- /DURABLE -->"
ROUNDS = 3


def measure(n_single: int = 5000, n_batch: int = 50_000) -> list[tuple[str, float, float]]:
    """(mode, jobs/s off, jobs/s on), the best of ROUNDS each."""
    from queuefleet import Queue

    tmp = Path(tempfile.mkdtemp(prefix="queuefleet-durable-"))
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    master = RedisServer(tmp / "a", appendonly=True)
    master.start()
    replica = RedisServer(tmp / "b", appendonly=True, replicaof=master)
    replica.start()
    try:
        while replica.client().info("replication")["master_link_status"] != "up":
            time.sleep(0.05)
        rates: dict[tuple[str, bool], list[float]] = {}
        for _ in range(ROUNDS):
            for durable in (False, True):
                q = Queue.from_url(master.url, wait_replicas=1 if durable else 0, wait_timeout_ms=1000)
                q.redis.flushall()
                start = time.perf_counter()
                for i in range(n_single):
                    q.push("bench:job", {"i": i})
                rates.setdefault(("one call per job", durable), []).append(n_single / (time.perf_counter() - start))
                q.redis.flushall()
                start = time.perf_counter()
                for first in range(0, n_batch, 1000):
                    q.push_many([("bench:job", {"i": i}) for i in range(first, first + 1000)])
                rates.setdefault(("push_many, 1,000 per call", durable), []).append(n_batch / (time.perf_counter() - start))
        return [(mode, max(rates[(mode, False)]), max(rates[(mode, True)]))
                for mode in ("one call per job", "push_many, 1,000 per call")]
    finally:
        replica.kill()
        master.kill()


def section(rows: list[tuple[str, float, float]], version: str) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    lines = [BEGIN, "## Durable push (issue 24)", "",
             f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs ({cpu}), "
             f"{platform.platform()}, redis-server {version}: a master and one replica on the same machine",
             f"(so the replica's round trip is a loopback one), best of {ROUNDS} rounds. Durable push",
             "(`wait_replicas=1`) sends each push, or each push_many call, with a `WAIT 1 1000` in one pipeline.",
             "", "| push | durable off | durable on | cost |", "|---|---:|---:|---:|"]
    for mode, off, on in rows:
        lines.append(f"| {mode} | {off:,.0f} jobs/s | {on:,.0f} jobs/s | {100 * (1 - on / off):.0f} % fewer |")
    lines += ["", "One call per job pays one replica acknowledgement per job; a batch pays one per call.",
              "Across hosts the cost grows with the master-to-replica round trip.", END]
    return "\n".join(lines)


def write(text: str, path: Path) -> None:
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        head, _, rest = old.partition(BEGIN)
        _, _, tail = rest.partition(END)
        new = head + text + tail
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


def kept_section(path: Path) -> str:
    """The durable section of an existing RESULTS.md, for a full run to keep."""
    old = path.read_text() if path.exists() else ""
    if BEGIN not in old or END not in old:
        return ""
    return BEGIN + old.partition(BEGIN)[2].partition(END)[0] + END


def main(results: Path | None) -> int:
    rows = measure()
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split("v=")[1].split()[0]
    for mode, off, on in rows:
        print(f"{mode}: {off:,.0f}/s off, {on:,.0f}/s on ({100 * (1 - on / off):.0f} % fewer)")
    if results is not None:
        write(section(rows, version), results)
        print(f"wrote the durable push section of {results}")
    return 0
