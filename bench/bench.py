#!/usr/bin/env python3
"""queuefleet benchmark (issue 2): queuefleet vs rq, arq, dramatiq and celery on one
private redis-server, in one run.

Per system, from this one process:

* push rate, one call per job (N jobs) and, where the system has a batch API, batched;
* consume rate: N jobs that each INCR one counter, pushed before the worker starts; the
  worker runs as a subprocess the way that system is really run, and the rate is taken
  from the first job's INCR to the N-th (both stamped by the handler, so interpreter and
  worker start-up are excluded for everyone). The counter must equal N afterwards;
* push-to-start latency with an idle worker: one job at a time carrying its push time,
  the handler RPUSHes ``time.time() - pushed_at``; we BLPOP it, pause a few ms, repeat.

Run it through ``bench/run`` (which builds bench/.venv); ``--help`` for options.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import importlib.metadata as md
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
JOBS_DIR = HERE / "jobs"
VENV_BIN = Path(sys.executable).parent
COUNT_KEY = "bench:count"
LAT_KEY = "bench:lat"

# Targets from issue 2.
T_CONSUME = 5_000
T_CONSUME_RATIO = 2.5
T_PUSH = 8_000
T_PUSH_BATCH = 100_000
T_P50_MS = 2.0
T_INCR_FRACTION = 0.5  # issue 9: consume as a fraction of one connection's INCR round trips


class BenchError(Exception):
    """A system failed (crash, wrong count, timeout): reported in its row, exit 1."""


class CountMismatch(BenchError):
    pass


# --------------------------------------------------------------------------- helpers


def fmt_rate(v):
    if v is None:
        return "n/a"
    return f"{v:,.0f}"


def fmt_ms(v):
    if v is None:
        return "n/a"
    return f"{v:.2f}" if v < 100 else f"{v:,.0f}"


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def cpu_busy(seconds):
    """Percent of all CPUs busy over `seconds` (from /proc/stat), or None."""

    def snap():
        with open("/proc/stat") as fh:
            vals = [int(x) for x in fh.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return sum(vals), idle

    try:
        t1, i1 = snap()
        time.sleep(seconds)
        t2, i2 = snap()
    except (OSError, ValueError, IndexError):
        return None
    return 100.0 * (1 - (i2 - i1) / (t2 - t1)) if t2 > t1 else None


def fmt_pct(v):
    return "unknown" if v is None else f"{v:.0f} %"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def tail(path, lines=25):
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


class RedisServer:
    """A throw-away redis-server: private port, temp dir, no persistence."""

    def __init__(self, tmp: Path, port: int):
        self.tmp = tmp
        self.port = port
        self.proc = None
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        import redis

        d = self.tmp / "redis"
        d.mkdir()
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(d), "--daemonize", "no",
             "--logfile", str(d / "redis.log"), "--databases", "2"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 15
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"redis-server did not start:\n{tail(d / 'redis.log')}")
            time.sleep(0.05)
        client.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def version(self):
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"v=(\S+)", out)
        return m.group(1) if m else out.strip()


class Worker:
    """A worker subprocess in its own session, output to a log file in the temp dir."""

    running: list["Worker"] = []  # every worker started, killed at exit whatever happens

    def __init__(self, argv, env, log: Path):
        Worker.running.append(self)
        self.argv = argv
        self.log = log
        self.fh = open(log, "ab")
        self.fh.write(("$ " + " ".join(argv) + "\n").encode())
        self.fh.flush()
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=self.fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self):
        return self.proc.poll() is None

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=15.0):
        """SIGTERM the worker (its main process), then SIGKILL the group if it lingers.
        Returns the exit code, or None if it had to be killed."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.wait(timeout) is None:
                self.kill()
                self.fh.close()
                return None
        self.kill_group()
        self.fh.close()
        return self.proc.returncode

    def kill_group(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self):
        self.kill_group()
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        self.proc.wait()


# --------------------------------------------------------------------------- systems


class System:
    key = "?"
    label = "?"
    n_default = 5000
    n_min = 100  # floor for --scale / --quick
    batch_api = None  # description of the batch API used, or None for n/a
    burst = False  # worker exits by itself once the queue is empty
    # the pause before each latency sample is uniform in [gap, gap + jitter] so that samples
    # land at random phases of a polling worker's cycle (not always just after its poll)
    latency_jitter = 0.010
    note = ""

    def __init__(self, bench: "Bench"):
        self.bench = bench
        self.url = bench.redis_url

    # to implement
    def setup(self):
        pass

    def push_single(self, n, key):
        raise NotImplementedError

    def push_batch(self, n, key):
        raise NotImplementedError

    def push_latency(self):
        raise NotImplementedError

    def consume_argv(self):
        raise NotImplementedError

    def latency_argv(self):
        raise NotImplementedError

    def worker_env(self):
        return {}

    def versions(self):
        return {}

    def close(self):
        pass


class QueueFleet(System):
    key = "qf"
    label = "queuefleet"
    n_default = 20_000
    batch_api = "push_many, 1,000 jobs per call"
    burst = True
    note = ("`queue work --queue bench --jobs qf_jobs --stop-when-empty` (latency: without "
            "--stop-when-empty, SIGTERM afterwards); its one log line per job goes to a file "
            "in the temp dir, not /dev/null; failed-jobs DB is SQLite after `queue migrate`")

    def setup(self):
        try:
            from queuefleet import Queue
        except Exception as exc:
            raise BenchError(f"cannot import queuefleet ({type(exc).__name__}: {exc}); "
                             f"is worker/ installed? see bench/run's output") from exc
        self.exe = VENV_BIN / "queue"
        if not self.exe.exists():
            raise BenchError(f"console script {self.exe} not found (worker package incomplete?)")
        self.q = Queue.from_url(self.url)
        db = self.bench.tmp / "failed.sqlite3"
        self.db_url = f"sqlite:///{db}"
        log = self.bench.tmp / "qf-migrate.log"
        with open(log, "wb") as fh:
            rc = subprocess.run([str(self.exe), "migrate"], env=self.bench.env(self.worker_env()),
                                stdout=fh, stderr=subprocess.STDOUT, timeout=60).returncode
        if rc != 0:
            raise BenchError(f"`queue migrate` exited {rc}:\n{tail(log)}")

    def worker_env(self):
        return {"QUEUEFLEET_REDIS_URL": self.url, "QUEUEFLEET_DATABASE_URL": self.db_url}

    def push_single(self, n, key):
        push, data = self.q.push, {"key": key}
        for _ in range(n):
            push("qf_jobs:incr", data, queue="bench")

    def push_batch(self, n, key):
        item = ("qf_jobs:incr", {"key": key})
        for start in range(0, n, 1000):
            self.q.push_many([item] * min(1000, n - start), queue="bench")

    def push_latency(self):
        self.q.push("qf_jobs:lat", {"t": time.time()}, queue="bench")

    def consume_argv(self):
        return [str(self.exe), "work", "--queue", "bench", "--jobs", "qf_jobs", "--stop-when-empty"]

    def latency_argv(self):
        return [str(self.exe), "work", "--queue", "bench", "--jobs", "qf_jobs"]

    def versions(self):
        return {"queuefleet": md.version("queuefleet")}


class RQ(System):
    key = "rq"
    label = "rq (SimpleWorker)"
    n_default = 2_000
    batch_api = "Queue.enqueue_many, 1,000 jobs per call"
    burst = True
    note = "`rq worker -w rq.worker.SimpleWorker --burst bench`, default logging"

    def setup(self):
        import redis
        import rq

        import rq_jobs

        self.jobs = rq_jobs
        self.rq = rq
        self.q = rq.Queue("bench", connection=redis.Redis.from_url(self.url))

    def push_single(self, n, key):
        enqueue, f = self.q.enqueue, self.jobs.incr
        for _ in range(n):
            enqueue(f, key)

    def push_batch(self, n, key):
        prep, f = self.rq.Queue.prepare_data, self.jobs.incr
        for start in range(0, n, 1000):
            self.q.enqueue_many([prep(f, (key,)) for _ in range(min(1000, n - start))])

    def push_latency(self):
        self.q.enqueue(self.jobs.lat, time.time())

    def consume_argv(self):
        return [str(VENV_BIN / "rq"), "worker", "-w", "rq.worker.SimpleWorker", "--burst",
                "-u", self.url, "bench"]

    def latency_argv(self):
        return [str(VENV_BIN / "rq"), "worker", "-w", "rq.worker.SimpleWorker", "-u", self.url, "bench"]

    def versions(self):
        return {"rq": md.version("rq")}


class Arq(System):
    key = "arq"
    label = "arq (defaults)"
    n_default = 1_000
    # arq reads up to 100 jobs per poll at its defaults: with fewer jobs than a few polls' worth
    # the poll delay barely shows and the rate is meaningless
    n_min = 500
    burst = True
    settings = "arq_jobs.WorkerSettings"
    latency_jitter = 0.5  # one poll_delay
    note = "`arq --burst arq_jobs.WorkerSettings`: arq's defaults (poll_delay 0.5 s, max_jobs 10), async handlers on ctx['redis']"

    def setup(self):
        from arq import create_pool

        import arq_jobs

        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(create_pool(arq_jobs.REDIS))

    def push_single(self, n, key):
        async def go():
            enqueue = self.pool.enqueue_job
            for _ in range(n):
                await enqueue("incr", key)

        self.loop.run_until_complete(go())

    def push_latency(self):
        self.loop.run_until_complete(self.pool.enqueue_job("lat", time.time()))

    def consume_argv(self):
        return [str(VENV_BIN / "arq"), "--burst", self.settings]

    def latency_argv(self):
        return [str(VENV_BIN / "arq"), self.settings]

    def versions(self):
        return {"arq": md.version("arq")}

    def close(self):
        if getattr(self, "pool", None) is not None:
            self.loop.run_until_complete(self.pool.aclose())
        if getattr(self, "loop", None) is not None:
            self.loop.close()


class ArqFast(Arq):
    key = "arq-fast"
    label = "arq (poll_delay=0.01)"
    n_default = 5_000
    settings = "arq_jobs.WorkerSettingsFast"
    latency_jitter = 0.010
    note = "`arq --burst arq_jobs.WorkerSettingsFast`: same with poll_delay = 0.01 s"


class Dramatiq(System):
    key = "dramatiq"
    label = "dramatiq (1 proc, 8 thr)"
    n_default = 10_000
    note = ("`dramatiq --processes 1 dramatiq_jobs` (default 8 threads, default middleware), "
            "SIGTERM once the count is reached; no batch API (group() enqueues one message at a time)")

    def setup(self):
        import dramatiq_jobs

        self.jobs = dramatiq_jobs

    def push_single(self, n, key):
        send = self.jobs.incr.send
        for _ in range(n):
            send(key)

    def push_latency(self):
        self.jobs.lat.send(time.time())

    def consume_argv(self):
        return [str(VENV_BIN / "dramatiq"), "--processes", "1", "dramatiq_jobs"]

    latency_argv = consume_argv

    def versions(self):
        return {"dramatiq": md.version("dramatiq")}


class Celery(System):
    key = "celery"
    label = "celery (solo pool)"
    n_default = 5_000
    note = ("`celery -A celery_jobs worker -P solo -Q bench` (default log level, no result backend), "
            "SIGTERM once the count is reached; no batch API (group().apply_async() publishes one message at a time)")

    def setup(self):
        import celery_jobs

        self.jobs = celery_jobs

    def push_single(self, n, key):
        delay = self.jobs.incr.delay
        for _ in range(n):
            delay(key)

    def push_latency(self):
        self.jobs.lat.delay(time.time())

    def consume_argv(self):
        return [str(VENV_BIN / "celery"), "-A", "celery_jobs", "worker", "-P", "solo", "-Q", "bench"]

    latency_argv = consume_argv

    def versions(self):
        return {"celery": md.version("celery"), "kombu": md.version("kombu")}


SYSTEMS = [QueueFleet, RQ, Arq, ArqFast, Dramatiq, Celery]


# --------------------------------------------------------------------------- the run


class Result:
    def __init__(self, system: System, n: int):
        self.system = system
        self.n = n
        self.push = None
        self.push_batch = None
        self.consume = None
        self.p50 = None
        self.p99 = None
        self.lat_n = 0
        self.error = None
        self.warnings = []


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="queuefleet-bench-"))
        port = args.port
        if port_in_use(port):
            newport = free_port()
            print(f"port {port} is in use, using {newport}")
            port = newport
        self.server = RedisServer(self.tmp, port)
        self.redis_url = self.server.url
        self.r = None

    def env(self, extra=None):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(JOBS_DIR), env.get("PYTHONPATH")]))
        env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
        env["BENCH_REDIS_URL"] = self.redis_url
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("BENCH_N", None)
        if extra:
            env.update(extra)
        return env

    # ---- baseline

    def baseline(self, n):
        """One redis-py connection: PING and INCR loops (round trips/s) and pipelined INCR.
        Three rounds of each, interleaved; the median round is reported (this VM is noisy)."""
        import redis

        r = redis.Redis.from_url(self.redis_url)
        r.ping()
        per = max(1, n // 3)
        rounds = {"ping": [], "incr": [], "pipelined": []}
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(per):
                r.ping()
            rounds["ping"].append(per / (time.perf_counter() - t))
            t = time.perf_counter()
            for _ in range(per):
                r.incr("bench:baseline")
            rounds["incr"].append(per / (time.perf_counter() - t))
            t = time.perf_counter()
            for start in range(0, per, 1000):
                p = r.pipeline(transaction=False)
                for _ in range(min(1000, per - start)):
                    p.incr("bench:baseline")
                p.execute()
            rounds["pipelined"].append(per / (time.perf_counter() - t))
        if int(r.get("bench:baseline")) != 6 * per:
            raise CountMismatch("baseline INCR count is wrong")
        r.flushdb()
        r.close()
        return {k: statistics.median(v) for k, v in rounds.items()}

    # ---- one system

    def run_system(self, cls) -> Result:
        system = cls(self)
        if system.key in self.args.n:
            n = max(10, self.args.n[system.key])
        else:
            n = max(system.n_min, int(system.n_default * self.args.scale))
        res = Result(system, n)
        print(f"\n== {system.label}: N={n:,}", flush=True)
        workers = []
        try:
            self.r.flushdb()
            system.setup()
            res.versions = system.versions()

            if system.batch_api:
                t = time.perf_counter()
                system.push_batch(n, COUNT_KEY)
                res.push_batch = n / (time.perf_counter() - t)
                print(f"   push batched: {fmt_rate(res.push_batch)} jobs/s ({system.batch_api})", flush=True)
                self.r.flushdb()

            t = time.perf_counter()
            system.push_single(n, COUNT_KEY)
            res.push = n / (time.perf_counter() - t)
            print(f"   push 1/call:  {fmt_rate(res.push)} jobs/s", flush=True)

            res.consume = self.consume(system, n, res, workers)
            print(f"   consume:      {fmt_rate(res.consume)} jobs/s", flush=True)

            self.r.flushdb()
            self.latency(system, res, workers)
            print(f"   latency:      p50 {fmt_ms(res.p50)} ms, p99 {fmt_ms(res.p99)} ms "
                  f"({res.lat_n} samples)", flush=True)
        except Exception as exc:
            res.error = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, BenchError):
                traceback.print_exc()
            print(f"   ERROR: {res.error}", flush=True)
        finally:
            for w in workers:
                if w.alive():
                    w.kill()
            try:
                system.close()
            except Exception:
                pass
        for w in res.warnings:
            print(f"   warning: {w}", flush=True)
        return res

    def consume(self, system, n, res, workers):
        if int(self.r.get(COUNT_KEY) or 0) != 0:
            raise BenchError("counter not zero before consume")
        log = self.tmp / f"{system.key}-consume.log"
        w = Worker(system.consume_argv(), self.env({**system.worker_env(), "BENCH_N": str(n)}), log)
        workers.append(w)
        # fail when the first job has not run 60 s after start, or the counter stalls for 20 s
        count = 0
        last, last_change, started = 0, time.monotonic(), False
        while True:
            count = int(self.r.get(COUNT_KEY) or 0)
            if count >= n:
                break
            now = time.monotonic()
            if count != last:
                last, last_change, started = count, now, True
            if not w.alive():
                raise BenchError(f"worker exited ({w.proc.returncode}) with the counter at {count:,} of {n:,}; "
                                 f"log {log}:\n{tail(log)}")
            if now - last_change > (20 if started else 60):
                raise BenchError(f"timeout: the counter is stuck at {count:,} of {n:,} (no progress for "
                                 f"{now - last_change:.0f} s); log {log}:\n{tail(log)}")
            time.sleep(0.01)
        if system.burst:
            rc = w.wait(30)
            if rc is None:
                res.warnings.append("burst worker did not exit within 30 s of finishing; stopped it")
                rc = w.stop()
        else:
            time.sleep(0.2)  # let any extra (duplicate) delivery show up before stopping
            rc = w.stop()
        if rc not in (0,):
            res.warnings.append(f"consume worker exit code {rc} (log {log})")
        count = int(self.r.get(COUNT_KEY) or 0)
        if count != n:
            raise CountMismatch(f"COUNT CHECK FAILED: counter is {count:,}, expected exactly {n:,}")
        t_first = self.r.get(COUNT_KEY + ":t_first")
        t_last = self.r.get(COUNT_KEY + ":t_last")
        if t_first is None or t_last is None:
            raise BenchError("handler time stamps missing")
        elapsed = float(t_last) - float(t_first)
        return (n - 1) / elapsed if elapsed > 0 else None

    def latency(self, system, res, workers):
        log = self.tmp / f"{system.key}-latency.log"
        w = Worker(system.latency_argv(), self.env(system.worker_env()), log)
        workers.append(w)
        # warm up: the first jobs also wait for the worker to start
        for i in range(3):
            system.push_latency()
            got = self.r.blpop([LAT_KEY], timeout=60 if i == 0 else 10)
            if got is None:
                raise BenchError(f"latency warm-up job not run; log {log}:\n{tail(log)}")
        samples = []
        rng = random.Random(2)
        cap = time.monotonic() + self.args.latency_seconds
        for _ in range(self.args.latency_samples):
            # the worker is idle again; random pause so pollers are hit at a random phase
            time.sleep(self.args.latency_gap / 1000.0 + rng.uniform(0, system.latency_jitter))
            system.push_latency()
            got = self.r.blpop([LAT_KEY], timeout=10)
            if got is None:
                raise BenchError(f"latency job not run within 10 s; log {log}:\n{tail(log)}")
            samples.append(float(got[1]) * 1000.0)
            if time.monotonic() > cap:
                break
        time.sleep(0.3)  # let the last job finish (its result was pushed by its first statement)
        rc = w.stop()
        if rc != 0:
            res.warnings.append(f"latency worker exit code after SIGTERM: {rc} (log {log})")
        res.lat_n = len(samples)
        res.p50 = statistics.median(samples)
        res.p99 = percentile(samples, 99)

    # ---- all

    def run(self):
        import redis

        self.load_start = os.getloadavg()
        self.busy_start = cpu_busy(1.0)
        if self.busy_start is not None and self.busy_start > 15:
            print(f"warning: the CPUs were {self.busy_start:.0f} % busy in the second before the bench: "
                  f"something else is running, rates will be low and noisy", flush=True)
        self.server.start()
        self.r = redis.Redis.from_url(self.redis_url)
        print(f"redis-server {self.server.version()} on {self.redis_url} (temp dir {self.tmp})")
        self.base = self.baseline(int(30_000 * min(1.0, self.args.scale)))
        print(f"baseline, one connection: PING {fmt_rate(self.base['ping'])}/s, INCR "
              f"{fmt_rate(self.base['incr'])}/s, pipelined INCR {fmt_rate(self.base['pipelined'])}/s")
        sys.path.insert(0, str(JOBS_DIR))
        os.environ["BENCH_REDIS_URL"] = self.redis_url
        selected = [c for c in SYSTEMS if not self.args.only or c.key in self.args.only]
        self.results = [self.run_system(c) for c in selected]

    def cleanup(self):
        """Idempotent: kill any worker still running, stop redis-server, remove the temp dir."""
        for w in Worker.running:
            try:
                if w.alive():
                    w.kill()
                else:
                    w.kill_group()
            except Exception:
                pass
        Worker.running.clear()
        try:
            if self.r is not None:
                self.r.close()
                self.r = None
        except Exception:
            pass
        self.server.stop()
        if not self.args.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- reporting


def machine_info(server: RedisServer):
    info = {"nproc": str(os.cpu_count())}
    try:
        info["nproc"] = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or info["nproc"]
    except OSError:
        pass
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["cpu"] = cpu
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                kb = int(line.split()[1])
                info["ram"] = f"{kb / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        info["ram"] = "unknown"
    os_name = ""
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    try:
        os_name += f" (debian_version {Path('/etc/debian_version').read_text().strip()})"
    except OSError:
        pass
    info["os"] = os_name.strip() or platform.platform()
    info["kernel"] = platform.release()
    info["python"] = platform.python_version()
    info["redis"] = server.version()
    pkgs = {}
    for name in ("queuefleet", "rq", "arq", "dramatiq", "celery", "kombu", "redis", "hiredis"):
        try:
            pkgs[name] = md.version(name)
        except md.PackageNotFoundError:
            pkgs[name] = "not installed"
    info["packages"] = pkgs
    info["worker_tree"] = worker_tree()
    return info


def worker_tree():
    """Which worker/ sources were built into the bench venv (written by bench/run)."""
    try:
        return (VENV_BIN.parent / ".bench-worker-source").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


COLUMNS = ["system", "N", "push/s (1 per call)", "push/s (batched)", "consume jobs/s",
           "p50 ms", "p99 ms", "lat. samples", "queuefleet consume ÷ this"]


def table_rows(bench: Bench):
    rows = []
    b = bench.base
    rows.append(["redis round trips (1 conn)", "", f"{fmt_rate(b['incr'])} INCR", f"{fmt_rate(b['pipelined'])} piped",
                 f"{fmt_rate(b['ping'])} PING", "", "", "", ""])
    qf = next((r for r in bench.results if r.system.key == "qf"), None)
    qf_rate = qf.consume if qf and not qf.error else None
    for r in bench.results:
        if r.error:
            short = r.error.splitlines()[0]
            if len(short) > 90:
                short = short[:87] + "..."
            rows.append([r.system.label, f"{r.n:,}", "ERROR", short, "", "", "", "", ""])
            continue
        ratio = ""
        if r.system.key != "qf":
            ratio = f"{qf_rate / r.consume:.1f}x" if qf_rate and r.consume else "n/a"
        rows.append([
            r.system.label, f"{r.n:,}", fmt_rate(r.push),
            fmt_rate(r.push_batch) if r.system.batch_api else "n/a",
            fmt_rate(r.consume), fmt_ms(r.p50), fmt_ms(r.p99), str(r.lat_n), ratio,
        ])
    return rows


def plain_table(rows):
    ok_rows = [r for r in rows if r[2] != "ERROR"]
    widths = [max(len(COLUMNS[i]), *(len(r[i]) for r in ok_rows)) for i in range(len(COLUMNS))]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    # an ERROR row's message may be longer than the column; don't pad it
    out = [line(COLUMNS), "  ".join("-" * w for w in widths)]
    for r in rows:
        if r[2] == "ERROR":
            out.append(f"{r[0].ljust(widths[0])}  {r[1].rjust(widths[1])}  ERROR: {r[3]}")
        else:
            out.append(line(r))
    return "\n".join(out)


def markdown_table(rows):
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


def targets(bench: Bench):
    """[(description, value text, PASS/MISS/n/a)]"""
    qf = next((r for r in bench.results if r.system.key == "qf"), None)
    peers = [r for r in bench.results if r.system.key != "qf" and not r.error and r.consume]
    out = []

    def ok(cond):
        return "PASS" if cond else "MISS"

    if qf is None or qf.error:
        why = "not run" if qf is None else "queuefleet errored"
        for d in (f"consume >= {T_CONSUME:,} jobs/s", f"consume >= {T_CONSUME_RATIO}x fastest peer",
                  f"push >= {T_PUSH:,}/s one call per job", f"push >= {T_PUSH_BATCH:,}/s batched",
                  f"p50 push-to-start < {T_P50_MS} ms", f"consume >= {T_INCR_FRACTION} x INCR round trips/s"):
            out.append((d, why, "n/a"))
        return out
    out.append((f"consume >= {T_CONSUME:,} jobs/s", fmt_rate(qf.consume), ok(qf.consume and qf.consume >= T_CONSUME)))
    if peers:
        best = max(peers, key=lambda r: r.consume)
        ratio = qf.consume / best.consume
        out.append((f"consume >= {T_CONSUME_RATIO}x fastest peer", f"{ratio:.2f}x {best.system.label} "
                    f"({fmt_rate(best.consume)}/s)", ok(ratio >= T_CONSUME_RATIO)))
    else:
        out.append((f"consume >= {T_CONSUME_RATIO}x fastest peer", "no peer ran", "n/a"))
    out.append((f"push >= {T_PUSH:,}/s one call per job", fmt_rate(qf.push), ok(qf.push >= T_PUSH)))
    out.append((f"push >= {T_PUSH_BATCH:,}/s batched", fmt_rate(qf.push_batch),
                ok(qf.push_batch is not None and qf.push_batch >= T_PUSH_BATCH)))
    out.append((f"p50 push-to-start < {T_P50_MS} ms", f"{fmt_ms(qf.p50)} ms", ok(qf.p50 is not None and qf.p50 < T_P50_MS)))
    incr = (getattr(bench, "base", None) or {}).get("incr")
    if incr and qf.consume:
        # Each bench job makes one round trip of its own (its INCR): this says how little the worker adds.
        out.append((f"consume >= {T_INCR_FRACTION} x INCR round trips/s", f"{qf.consume / incr:.2f} x {fmt_rate(incr)}/s",
                    ok(qf.consume / incr >= T_INCR_FRACTION)))
    else:
        out.append((f"consume >= {T_INCR_FRACTION} x INCR round trips/s", "no baseline", "n/a"))
    return out


def write_results(bench: Bench, info, rows, tgts, path: Path, started, duration):
    pk = info["packages"]
    lines = [
        "# Benchmark results",
        "",
        "Generated by `bench/run` (issue 2); re-run it to refresh this file. Everything runs on one",
        "machine against one private redis-server, in the same run.",
        "",
        f"Date: {started.strftime('%Y-%m-%d %H:%M UTC')} — bench run took {duration:.0f} s.",
        "",
        "## Machine",
        "",
        f"- CPUs (nproc): {info['nproc']} — {info['cpu']}",
        f"- RAM: {info['ram']}",
        f"- OS: {info['os']}, kernel {info['kernel']}",
        f"- Other load when the bench started: CPUs {fmt_pct(bench.busy_start)} busy over one second; load average "
        f"{bench.load_start[0]:.2f} / {bench.load_start[1]:.2f} / {bench.load_start[2]:.2f}",
        f"- Python: {info['python']}",
        f"- redis-server: {info['redis']} (Debian package; `--save '' --appendonly no`, private port, temp dir)",
        "- Packages: " + ", ".join(f"{k} {v}" for k, v in pk.items()),
        f"- queuefleet built from worker/ at {info['worker_tree']}",
        "",
        "## Results",
        "",
        markdown_table(rows),
        "",
        "Jobs each INCR one Redis counter; the counter is checked to equal N after every consume run.",
        "Latency: push-to-start with an idle worker, in milliseconds.",
        "",
        "## Targets (queuefleet, issue 2)",
        "",
        "| target | measured | |",
        "|---|---|---|",
    ]
    for d, v, s in tgts:
        lines.append(f"| {d} | {v} | {s} |")
    errors = [r for r in bench.results if r.error]
    if errors:
        lines += ["", "## Errors", ""]
        for r in errors:
            lines.append(f"- **{r.system.label}**: `{r.error.splitlines()[0]}`")
    warns = [(r, w) for r in bench.results for w in r.warnings]
    if warns:
        lines += ["", "## Warnings", ""]
        for r, w in warns:
            lines.append(f"- {r.system.label}: {w}")
    lines += [
        "",
        "## Method",
        "",
        "- **N** is per row (the same N for a row's push and consume); slower peers get fewer jobs so that",
        "  the whole run stays at a couple of minutes.",
        "- **Push**: from the bench process, N jobs one call per job; batched where the system has a",
        "  batch API (1,000 jobs per call), else n/a. The batched jobs are discarded (FLUSHDB); the",
        "  one-per-call jobs are the ones then consumed.",
        "- **Consume**: the N jobs are queued before the worker starts. The worker is a subprocess run the",
        "  way that system is normally run; the handler stamps the time when its INCR returns 1 and when it",
        "  returns N, and the rate is (N-1) / (t_N - t_1), so interpreter and worker start-up are excluded",
        "  for everyone. The bench polls the counter to know when to stop; workers without a burst mode",
        "  get SIGTERM once the counter reaches N. A counter other than exactly N fails the run.",
        "- **Latency**: an idle worker; one job at a time carrying `time.time()` taken just before the push",
        "  call; the handler's first statement RPUSHes `time.time() - pushed_at`; the bench BLPOPs it, waits",
        f"  {bench.args.latency_gap:g} ms plus a random 0-10 ms (0-500 ms for arq at its default 0.5 s poll, so",
        "  that samples hit a polling worker at a random point of its cycle) and pushes the next",
        f"  ({bench.args.latency_samples} samples, at most {bench.args.latency_seconds:g} s of sampling per system, "
        "three warm-up jobs first).",
        "  p99 is the nearest-rank percentile (with few samples it is close to the maximum).",
        "- **Worker output** of every system (including queuefleet's one log line per job) goes to a file in",
        "  the temp dir, not /dev/null, so logging costs what it really costs. Peers log at their defaults.",
        "- **Baseline row**: one redis-py (hiredis) connection from the bench process: INCR loop and PING loop",
        "  (round trips/s) and INCR pipelined 1,000 per round trip; median of three interleaved rounds.",
        "- **Noise**: this is a 2-core VM shared by redis-server, the worker and the bench process; rates",
        "  vary by about 10-20 % from run to run, so read ratios, not the last digit.",
        "",
        "How each system is run (handlers in `bench/jobs/`, `PYTHONPATH=bench/jobs`):",
        "",
    ]
    for r in bench.results:
        lines.append(f"- {r.system.label}: {r.system.note}")
    lines += [
        "",
        "Things to know about the peers' set-ups:",
        "",
        "- Per-job logging differs by default: queuefleet writes two lines per job (start, done), arq two,",
        "  rq about four; celery (log level WARNING) and dramatiq write none. Nobody was made quieter or",
        "  louder.",
        "- arq polls its queue every `poll_delay` (0.5 s by default), so its latency is about half the poll",
        "  delay on average and its consume rate at the default is bounded by polling; the 0.01 s row shows",
        "  what tuning buys. arq handlers are coroutines using the worker's own connection.",
        "- dramatiq's Redis consumer polls with an exponential back-off capped at the worker timeout (1 s",
        "  by default): the longer it has been idle the later it sees a job. Samples a few ms apart keep",
        "  it near the bottom of that back-off, so its latency here is its best case.",
        "- celery and rq wait on BRPOP/BLPOP and wake up at once. celery's solo pool prefetches (multiplier 4 x",
        "  the CPU-count concurrency, though solo runs one task at a time) and acks before running the task",
        "  (celery's defaults); rq stores each job's result (default TTL 500 s).",
        "- Batched push: rq has `enqueue_many` (one pipeline); arq has no batch API; dramatiq's",
        "  `group()` and celery's `group().apply_async()` still publish message by message, so they are",
        "  reported n/a rather than as batches.",
        "- redis-py is 5.3.1 for everyone: arq 0.28 requires redis<6, and kombu 5.7 (celery 5.7) requires",
        "  redis>=6.4, so celery is held at 5.6.3 / kombu 5.6.2.",
        "",
    ]
    import durable

    kept = durable.kept_section(path)  # measured by `bench/run --durable`, not by this run
    path.write_text("\n".join(lines) + (f"\n{kept}\n" if kept else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", type=lambda s: [x.strip() for x in s.split(",") if x.strip()], default=None,
                    help="comma-separated systems: " + ",".join(c.key for c in SYSTEMS))
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every N (e.g. 0.1 for a smoke run)")
    ap.add_argument("--quick", action="store_true", help="= --scale 0.1 --latency-samples 50, no RESULTS.md")
    ap.add_argument("--n", action="append", default=[], metavar="SYSTEM=N", help="override N for one system")
    ap.add_argument("--port", type=int, default=int(os.environ.get("BENCH_REDIS_PORT", "6399")))
    ap.add_argument("--latency-samples", type=int, default=500)
    ap.add_argument("--latency-seconds", type=float, default=12.0, help="cap on latency sampling per system")
    ap.add_argument("--latency-gap", type=float, default=3.0, help="ms between a sample and the next push")
    ap.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (worker logs)")
    ap.add_argument("--durable", action="store_true",
                    help="only measure what durable push costs (master + replica; bench/durable.py)")
    args = ap.parse_args()
    if args.durable:
        import durable

        return durable.main(None if args.no_results or args.quick else args.results)
    if args.quick:
        args.scale = min(args.scale, 0.1)
        args.latency_samples = min(args.latency_samples, 50)
        args.no_results = True
    overrides = {}
    for item in args.n:
        k, _, v = item.partition("=")
        overrides[k.strip()] = int(v)
    args.n = overrides
    if args.only:
        unknown = set(args.only) - {c.key for c in SYSTEMS}
        if unknown:
            ap.error(f"unknown system(s): {', '.join(sorted(unknown))}")

    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    bench = Bench(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        bench.run()
        info = machine_info(bench.server)
    except KeyboardInterrupt:
        bench.cleanup()
        print("interrupted", file=sys.stderr)
        return 130
    except BaseException:
        bench.cleanup()
        traceback.print_exc()
        return 1
    finally:
        bench.cleanup()
    duration = time.monotonic() - t0

    rows = table_rows(bench)
    tgts = targets(bench)
    print()
    print(plain_table(rows))
    print()
    print(f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram']}, {info['os']}, Python {info['python']}, "
          f"redis-server {info['redis']}")
    print("targets (queuefleet):")
    for d, v, s in tgts:
        print(f"  {s:4}  {d}: {v}")
    if not args.no_results:
        write_results(bench, info, rows, tgts, args.results, started, duration)
        print(f"wrote {args.results}")
    print(f"bench took {duration:.0f} s")
    failed = [r for r in bench.results if r.error]
    if failed:
        print("FAILED: " + "; ".join(f"{r.system.label}: {r.error.splitlines()[0]}" for r in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
