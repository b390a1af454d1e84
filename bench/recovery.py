#!/usr/bin/env python3
"""bench/recovery: Redis CPU while a fleet recovers, the worker's Lua of worker/ against that of a
git revision (issue 25, item 7).

After an outage every worker whose fetch failed looks for reservations of its own that a lost
reply may have made ("reclaim"), and workers that died are reaped by a neighbour. Before the
per-holder index each of those calls scanned every reservation of its queues inside Lua.

One private redis-server. For each build (REF, then worker/): 10,000 jobs reserved by 200 workers
(50 each); then (1) reclaim: the 200 workers' fetches with the ids they hold, sent at once over
16 connections; (2) reap: 20 of the workers (one host's) reaped by a neighbour, the job each was
running blamed. Measured on the server: its CPU time (INFO cpu, user + sys), the time spent in
scripts (INFO commandstats, evalsha) and the commands the scripts ran; and the wall time and
latency the workers saw. Both builds run the same calls on the same server, three rounds each,
alternately; the medians are reported and written to bench/RECOVERY.md.

The scripts are read from the sources (lua/common.lua + lua/<name>.lua), so REF needs no install.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LUA = "worker/src/queuefleet/lua"
PREFIX = "bench"
QUEUE = "work"
WORKERS = 200
PER_WORKER = 50
REAPED = 20  # one host's workers
CONNECTIONS = 16
ROUNDS = 3
DEFAULT_REF = "b8d29d1"  # the worker before issue 25


class Build:
    """One version's scripts, loaded by SHA into the server."""

    def __init__(self, name: str, read: callable) -> None:
        self.name = name
        common = read("common.lua")
        self.source = {n: common + "\n" + read(f"{n}.lua") for n in ("push", "fetch", "reap")}
        self.sha = {n: hashlib.sha1(s.encode()).hexdigest() for n, s in self.source.items()}

    def load(self, client: redis.Redis) -> None:
        for source in self.source.values():
            client.script_load(source)

    def run(self, client: redis.Redis, name: str, args: list) -> object:
        return client.evalsha(self.sha[name], 0, *args)


def from_git(ref: str) -> Build:
    def read(name: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{LUA}/{name}"], check=True, capture_output=True,
                              text=True).stdout

    return Build(ref, read)


def from_tree() -> Build:
    return Build("worker/", lambda name: (ROOT / LUA / name).read_text())


def fetch_args(base: str, max_jobs: int, keep: list[str] | None) -> list:
    # prefix, token_base, host, lease_ms, max_n, migrate_limit, n_acks, n_keep, keep ids..., queues...
    return [PREFIX, base, base.split(":")[0], 600_000, max_jobs, 1000, 0, -1 if keep is None else len(keep),
            *(keep or []), QUEUE]


def base_of(k: int) -> str:
    return f"host{k // 20}:{10_000 + k}:i{k:03d}"  # 20 workers per host


@dataclass
class Phase:
    cpu: float  # server CPU seconds (user + sys)
    script: float  # seconds inside scripts (evalsha)
    commands: int  # commands the scripts ran
    wall: float  # seconds from the first call to the last reply
    p50_ms: float
    max_ms: float


def server_counters(client: redis.Redis) -> tuple[float, float, int]:
    cpu = client.info("cpu")
    stats = client.info("commandstats")
    script = stats.get("cmdstat_evalsha", {}).get("usec", 0) / 1e6
    commands = sum(v["calls"] for k, v in stats.items()
                   if not k.startswith(("cmdstat_evalsha", "cmdstat_info", "cmdstat_config", "cmdstat_client")))
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"], script, commands


def burst(url: str, build: Build, calls: list[tuple[str, list]]) -> Phase:
    """Send `calls` at once over CONNECTIONS connections; measure the server and the callers."""
    control = redis.Redis.from_url(url)
    control.config_resetstat()
    cpu0, _, _ = server_counters(control)
    local = threading.local()
    latencies: list[float] = []
    lock = threading.Lock()

    def one(call: tuple[str, list]) -> None:
        if not hasattr(local, "client"):
            local.client = redis.Redis.from_url(url)
        start = time.perf_counter()
        build.run(local.client, *call)
        with lock:
            latencies.append(time.perf_counter() - start)

    with ThreadPoolExecutor(CONNECTIONS) as pool:
        list(pool.map(lambda _: redis.Redis.from_url(url).ping(), range(CONNECTIONS)))  # warm the connections' threads
        start = time.perf_counter()
        list(pool.map(one, calls))
        wall = time.perf_counter() - start
    cpu1, script, commands = server_counters(control)
    latencies.sort()
    return Phase(cpu1 - cpu0, script, commands, wall, statistics.median(latencies) * 1000, latencies[-1] * 1000)


def prepare(client: redis.Redis, build: Build) -> dict[str, list[list]]:
    """An empty server, the jobs pushed and reserved: worker base -> its jobs [queue, id, token]."""
    client.flushall()
    client.script_flush()
    build.load(client)
    n = WORKERS * PER_WORKER
    for s in range(0, n, 1000):
        args: list = [PREFIX, QUEUE, 0, 64, 0]
        for i in range(s, min(s + 1000, n)):
            job_id = f"job-{i}"
            args += [job_id, json.dumps({"id": job_id, "job": "bench_jobs:noop", "queue": QUEUE, "data": None,
                                         "pushed_at": time.time()})]
        build.run(client, "push", args)
    held: dict[str, list[list]] = {}
    for k in range(WORKERS):
        reply = build.run(client, "fetch", fetch_args(base_of(k), PER_WORKER, None))
        token, flat = reply[5].decode(), reply[6]
        held[base_of(k)] = [[flat[i].decode(), flat[i + 1].decode(), token] for i in range(0, len(flat), 6)]
    reserved = client.zcard(f"{PREFIX}:queue:{QUEUE}:reserved")
    if reserved != n:
        raise RuntimeError(f"{build.name}: {reserved} reservations, expected {n}")
    return held


def measure(url: str, build: Build) -> tuple[Phase, Phase]:
    client = redis.Redis.from_url(url)
    held = prepare(client, build)
    reclaim = burst(url, build, [("fetch", fetch_args(base, 0, [job[1] for job in jobs])) for base, jobs in held.items()])
    if client.zcard(f"{PREFIX}:queue:{QUEUE}:reserved") != WORKERS * PER_WORKER:
        raise RuntimeError(f"{build.name}: reclaim took back jobs that were kept")
    reaps = []
    for base in list(held)[:REAPED]:
        queue, job_id, token = held[base][0]
        worker_id = base.rsplit(":", 1)[0]
        # The queue list is what the reap of REF reads; the indexed reap ignores it.
        reaps.append(("reap", [PREFIX, "ns", worker_id, "value", base, f"{token} {job_id}", QUEUE]))
    reap = burst(url, build, reaps)
    lost = client.hlen(f"{PREFIX}:lost")
    if lost != REAPED or client.llen(f"{PREFIX}:queue:{QUEUE}") != REAPED * PER_WORKER:
        raise RuntimeError(f"{build.name}: reap blamed {lost} jobs, expected {REAPED}")
    return reclaim, reap


def median_phase(phases: list[Phase]) -> Phase:
    fields = Phase.__dataclass_fields__
    return Phase(**{f: statistics.median(getattr(p, f) for p in phases) for f in fields})


def start_server(tmp: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp), "--loglevel", "warning"], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def row(name: str, what: str, p: Phase) -> str:
    return (f"| {name} | {what} | {p.cpu:.3f} s | {p.script:.3f} s | {p.commands:,} | {p.wall:.3f} s | {p.p50_ms:.1f} ms "
            f"| {p.max_ms:.1f} ms |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ref", nargs="?", default=DEFAULT_REF, help=f"git revision to compare with (default {DEFAULT_REF})")
    parser.add_argument("--no-results", action="store_true", help="print only, leave bench/RECOVERY.md alone")
    args = parser.parse_args()
    builds = [from_git(args.ref), from_tree()]
    tmp = Path(tempfile.mkdtemp(prefix="queuefleet-recovery-"))
    proc, url = start_server(tmp)
    results: dict[str, list[tuple[Phase, Phase]]] = {b.name: [] for b in builds}
    started = time.monotonic()
    try:
        for i in range(ROUNDS):
            for build in builds:
                results[build.name].append(measure(url, build))
                rc, rp = results[build.name][-1]
                print(f"round {i + 1} {build.name}: reclaim {rc.cpu:.3f} s CPU, reap {rp.cpu:.3f} s CPU", flush=True)
        version = redis.Redis.from_url(url).info("server")["redis_version"]
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    took = time.monotonic() - started
    lines = ["| build | phase | Redis CPU | in scripts | commands run by scripts | wall | p50 call | slowest call |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    medians = {}
    for build in builds:
        reclaim = median_phase([r[0] for r in results[build.name]])
        reap = median_phase([r[1] for r in results[build.name]])
        medians[build.name] = (reclaim, reap)
        lines.append(row(build.name, f"reclaim, {WORKERS} workers at once", reclaim))
        lines.append(row(build.name, f"reap of {REAPED} workers", reap))
    old, new = medians[builds[0].name], medians[builds[1].name]
    ratio = [o.cpu / max(n.cpu, 1e-6) for o, n in zip(old, new)]
    summary = (f"Redis CPU, {builds[0].name} / worker/: reclaim {ratio[0]:.1f}x, reap {ratio[1]:.1f}x "
               f"({ROUNDS} rounds, medians).")
    print("\n".join(lines))
    print(summary)
    if not args.no_results:
        write_results(lines, summary, builds[0].name, version, took)
    return 0


def write_results(lines: list[str], summary: str, ref: str, version: str, took: float) -> None:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    if subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", LUA], capture_output=True,
                      text=True).stdout.strip():
        commit += " plus uncommitted changes in its Lua"
    text = "\n".join([
        "# Redis CPU while a fleet recovers",
        "",
        "Generated by `bench/recovery` (issue 25, item 7); re-run it to refresh this file.",
        "",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, took {took:.0f} s. Machine: {os.cpu_count()} CPUs "
        f"({cpu}), {platform.platform()}. redis-server {version}. Builds: `{ref}` (before the per-holder index) and "
        f"worker/ at {commit}.",
        "",
        "## Method",
        "",
        f"- One private redis-server; per build and round: {WORKERS * PER_WORKER:,} jobs pushed and reserved by {WORKERS} "
        f"workers ({PER_WORKER} each, {WORKERS // 20} hosts of 20).",
        f"- *reclaim*: what every worker's next fetch does after an outage (a fetch whose reply was lost may have",
        f"  reserved jobs it never heard of): the {WORKERS} fetches, each with the ids its worker holds, sent at once",
        f"  over {CONNECTIONS} connections. Nothing is taken back: every reservation is known to its worker.",
        f"- *reap*: {REAPED} dead workers (one host's) reaped by a neighbour, the job each was running blamed and the",
        f"  rest given back.",
        "- *Redis CPU*: the server's `used_cpu_user + used_cpu_sys` over the phase; *in scripts*: `evalsha` time",
        "  from `INFO commandstats`; *commands run by scripts*: the calls the scripts made; *wall*, *p50 call*,",
        "  *slowest call*: as the workers saw it (one Redis runs one script at a time: a long scan holds up every",
        "  other client, fetches and pushes included).",
        f"- {ROUNDS} rounds, the builds alternating on the same server; medians.",
        "",
        "## Results",
        "",
        *lines,
        "",
        summary,
        "",
        "Before the index, reclaim and reap read every reservation of the queue (ZRANGE of the reserved set, an",
        "HGET of each token); with it they read the worker's own `holder:<base>` hash: the work no longer grows",
        "with the rest of the fleet's reservations.",
        "",
    ])
    (HERE / "RECOVERY.md").write_text(text)


if __name__ == "__main__":
    sys.exit(main())
