"""Interleaved consume runs: the installed queuefleet (from worker/) against another build
(a site directory given on the command line). See bench/compare."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
N = 20_000


def consume(url: str, site: str | None, tmp: Path) -> float:
    client = redis.Redis.from_url(url)
    client.flushall()
    path = [str(HERE / "jobs")] + ([site] if site else [])
    env = {**os.environ, "PYTHONPATH": ":".join(path), "QUEUEFLEET_REDIS_URL": url, "BENCH_REDIS_URL": url,
           "BENCH_N": str(N), "QUEUEFLEET_DATABASE_URL": f"sqlite:///{tmp / 'failed.sqlite3'}"}
    push = ("from queuefleet import Queue\nq = Queue.from_url(%r)\n"
            "for i in range(0, %d, 1000):\n    q.push_many([('qf_jobs:incr', {'key': 'bench:count'})] * 1000, queue='bench')\n")
    subprocess.run([sys.executable, "-c", push % (url, N)], env=env, check=True)
    cli = [sys.executable, "-c", "from queuefleet.cli import main; main()"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([*cli, "work", "--queue", "bench", "--jobs", "qf_jobs", "--stop-when-empty"], env=env, check=True,
                   stdout=open(tmp / "worker.log", "w"), stderr=subprocess.STDOUT)
    first, last = float(client.get("bench:count:t_first")), float(client.get("bench:count:t_last"))
    return (N - 1) / (last - first)


def main() -> int:
    site, ref, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tmp = Path(tempfile.mkdtemp(prefix="queuefleet-compare-"))
    port = 6398
    server = subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        time.sleep(0.5)
        here, there = [], []
        for i in range(runs):
            here.append(consume(url, None, tmp))
            there.append(consume(url, site, tmp))
            print(f"run {i + 1}: worker/ {here[-1]:,.0f} jobs/s, {ref} {there[-1]:,.0f} jobs/s", flush=True)
        ratio = statistics.median(here) / statistics.median(there)
        print(f"median consume: worker/ {statistics.median(here):,.0f} jobs/s, {ref} {statistics.median(there):,.0f} "
              f"jobs/s; worker/ / {ref} = {ratio:.2f} ({runs} interleaved runs of {N:,} jobs)")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
