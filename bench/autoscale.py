#!/usr/bin/env python3
"""bench/autoscale: does `queue autoscale` save processes without making jobs wait?

Three pools serve the same deterministic, bursty timeline of pushes, one after another, each
with its own redis-server, its own supervisord and real `queue work` processes:

  peak  a fixed pool sized for the peak (8 processes, autostart)
  avg   a fixed pool sized for the average (2 processes, autostart)
  auto  an autoscaled pool, min 1 max 8: programs auto_00..auto_07 (autostart=false) and the
        real `queue autoscale` program under the same supervisord, as the queue_worker role
        renders them

Each job notes its start and its wait since the push (bench/jobs/autoscale_jobs.py). A
sampler reads supervisord's XML-RPC every SAMPLE seconds and integrates the worker processes
over the run. Reported per pool: process-seconds, p50/p95/max wait, jobs run, lost, run twice,
failed; and two targets: the autoscaled pool uses clearly fewer process-seconds than the
peak pool, with a p95 wait close to the peak pool's.

Run it through bench/autoscale (which builds bench/.venv).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "worker" / "tests"))  # the real servers of the worker tests
from servers import SUPERVISOR_HEAD, RedisServer, Supervisord, poll  # noqa: E402

VENV_BIN = Path(sys.executable).parent
QUEUE_BIN = VENV_BIN / "queue"
QUEUE_NAME = "burst"
JOB = "autoscale_jobs:work"
SAMPLE = 0.25  # seconds between two reads of supervisord's process list
DRAIN_TIMEOUT = 150.0  # seconds after the last push for every job to have run

# -- the load -------------------------------------------------------------------------------------

LENGTH = 75.0  # seconds of pushes; the measured window is [first push, max(LENGTH, last job done)]
QUICK_LENGTH = 30.0  # --quick: the first 30 s only (the trickle and burst A)
SLOW = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # burst jobs' sleeps, in turn (0.75 s on average)
TRICKLE = 0.2  # a quiet period's job sleeps 0.2 s; one is pushed every second all along
BURST_A = (10.0, 22.0, 8.0)  # start, end, jobs a second: a ramp-in burst, 6 processes of work for 12 s
BURST_B = (40.0, 24, 50.0, 4.0)  # at, jobs pushed at once, then until end at jobs a second: a spike


@dataclass(frozen=True)
class Push:
    at: float  # seconds after the start of the timeline
    id: str
    seconds: float
    phase: str


def timeline(length: float) -> list[Push]:
    pushes = [Push(0.5 + i, f"t{i:03d}", TRICKLE, "trickle") for i in range(int(length))]
    start, end, rate = BURST_A
    pushes += [Push(start + k / rate, f"a{k:03d}", SLOW[k % len(SLOW)], "burst A") for k in range(int((end - start) * rate))]
    at, spike, end, rate = BURST_B
    pushes += [Push(at, f"b{k:03d}", SLOW[k % len(SLOW)], "burst B") for k in range(spike)]
    pushes += [Push(at + (k + 1) / rate, f"b{spike + k:03d}", SLOW[(spike + k) % len(SLOW)], "burst B")
               for k in range(int((end - at) * rate))]
    return sorted((p for p in pushes if p.at < length), key=lambda p: (p.at, p.id))


# -- the pools ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Knobs:
    """The autoscaled pool's settings (ScaleRule and the loop's interval)."""

    interval: float = 1.0
    step: int = 2
    cooldown: float = 10.0
    target_wait: float = 1.0


@dataclass(frozen=True)
class PoolSpec:
    key: str  # program prefix and pool name
    label: str
    size: int  # processes (max for the autoscaled pool)
    autoscaled: bool = False
    min: int = 0


POOLS = (
    PoolSpec("peak", "fixed, sized for the peak", 8),
    PoolSpec("avg", "fixed, sized for the average", 2),
    PoolSpec("auto", "autoscaled", 8, autoscaled=True, min=1),
)


def supervisor_conf(workdir: Path, spec: PoolSpec, env: dict[str, object], autoscale_json: Path | None) -> str:
    environment = ",".join(f'{k}="{str(v).replace("%", "%%")}"' for k, v in env.items())
    conf = SUPERVISOR_HEAD.format(dir=workdir)
    for slot in range(spec.size):
        conf += f"""
[program:{spec.key}_{slot:02d}]
command={QUEUE_BIN} work --name {spec.key} --queue {QUEUE_NAME} --timeout 30
directory={workdir}
autostart={'false' if spec.autoscaled else 'true'}
autorestart=true
startsecs=1
startretries=3
stopwaitsecs=20
stdout_logfile={workdir}/%(program_name)s.log
stderr_logfile={workdir}/%(program_name)s.err
environment={environment}
"""
    if autoscale_json is not None:
        conf += f"""
[program:autoscale]
command={QUEUE_BIN} autoscale --config {autoscale_json} --host benchhost
directory={workdir}
autorestart=true
startsecs=1
stdout_logfile={workdir}/autoscale.out
stderr_logfile={workdir}/autoscale.err
environment={environment}
"""
    return conf


class Sampler(threading.Thread):
    """(unix time, processes in state RUNNING, processes with a pid) of the pool's worker programs,
    every SAMPLE seconds from supervisord's XML-RPC interface."""

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(daemon=True)
        from queuefleet.supervisor_rpc import Supervisor

        self.supervisor = Supervisor(url, timeout=5)
        self.prefix = prefix
        self.samples: list[tuple[float, int, int]] = []
        self.errors = 0
        self.halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        k = 0
        while not self.halt.is_set():
            try:
                procs = [p for p in self.supervisor.processes() if p.group.startswith(self.prefix)]
                self.samples.append((time.time(), sum(p.state == "RUNNING" for p in procs), sum(p.pid > 0 for p in procs)))
            except Exception:  # noqa: BLE001 - a missed sample is counted, the last value holds
                self.errors += 1
            k += 1
            self.halt.wait(max(0.0, start + k * SAMPLE - time.monotonic()))

    def integral(self, t0: float, t1: float, column: int) -> float:
        """The step function of `column` (its value holds until the next sample) over [t0, t1]."""
        total = 0.0
        s = self.samples
        for i, sample in enumerate(s):
            a = max(sample[0], t0)
            b = min(s[i + 1][0] if i + 1 < len(s) else t1, t1)
            if b > a:
                total += sample[column] * (b - a)
        return total

    def at(self, t: float) -> int:
        """Processes with a pid at time t (the last sample before it)."""
        value = 0
        for sample in self.samples:
            if sample[0] > t:
                break
            value = sample[2]
        return value


@dataclass
class PoolResult:
    spec: PoolSpec
    pushed: int = 0
    run: int = 0
    lost: int = 0
    twice: int = 0
    unfinished: int = 0
    failed: int = 0
    waits: dict[str, float] = field(default_factory=dict)  # id -> wait of its first run
    phases: dict[str, str] = field(default_factory=dict)  # id -> phase
    busy_seconds: float = 0.0  # sum of the jobs' run times
    window: float = 0.0
    ps: float = 0.0  # process-seconds: worker processes with a pid (STARTING, RUNNING, STOPPING)
    ps_running: float = 0.0  # process-seconds in state RUNNING only
    sizes: str = ""  # most processes in each SPARK-second bucket
    max_size: int = 0
    late: float = 0.0  # the producer's worst lateness against the timeline
    scale_ups: int = 0
    scale_downs: int = 0
    autoscaler_cpu: float | None = None
    reactions: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)  # the autoscaler's SCALE log lines, at seconds into the timeline
    startups: list[float] = field(default_factory=list)  # seconds from supervisord's spawn to the worker's STARTING line
    notes: list[str] = field(default_factory=list)
    sample_errors: int = 0

    def pct(self, q: float, phase: str | None = None) -> float | None:
        values = sorted(w for i, w in self.waits.items() if phase is None or self.phases[i] == phase)
        return percentile(values, q)


SPARK = 2.5  # seconds per character of the size-over-time line


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    pos = (len(values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def run_pool(spec: PoolSpec, pushes: list[Push], tmp: Path, knobs: Knobs, length: float) -> PoolResult:
    from queuefleet import Queue

    workdir = tmp / spec.key
    workdir.mkdir()
    exec_log = workdir / "executed.txt"
    exec_log.touch()
    redis_server = RedisServer(workdir)
    db_url = f"sqlite:///{workdir / 'failed.sqlite3'}"
    env = {"QUEUEFLEET_REDIS_URL": redis_server.url, "QUEUEFLEET_DATABASE_URL": db_url, "QUEUEFLEET_JOBS": "autoscale_jobs",
           "PYTHONPATH": HERE / "jobs", "AUTOSCALE_EXEC_LOG": exec_log}
    sock = f"unix://{workdir / 'supervisor.sock'}"
    autoscale_json = None
    if spec.autoscaled:
        autoscale_json = workdir / "autoscale.json"
        autoscale_json.write_text(json.dumps({
            "interval": knobs.interval, "supervisor": sock,
            "pools": [{"name": spec.key, "queues": [QUEUE_NAME], "programs": [f"{spec.key}_{s:02d}" for s in range(spec.size)],
                       "min": spec.min, "max": spec.size, "step": knobs.step, "cooldown": knobs.cooldown,
                       "target_wait": knobs.target_wait}]}, indent=1))
    result = PoolResult(spec, pushed=len(pushes), phases={p.id: p.phase for p in pushes})
    sup: Supervisord | None = None
    sampler: Sampler | None = None
    redis_server.start()
    try:
        cli_env = {**os.environ, **{k: str(v) for k, v in env.items()}}
        subprocess.run([str(QUEUE_BIN), "migrate"], env=cli_env, check=True, capture_output=True)
        sup = Supervisord(workdir, supervisor_conf(workdir, spec, env, autoscale_json))
        from queuefleet.supervisor_rpc import Supervisor

        rpc = Supervisor(sock, timeout=5)
        expected = spec.min if spec.autoscaled else spec.size

        def ready() -> bool:
            procs = rpc.processes()
            workers = [p for p in procs if p.group.startswith(f"{spec.key}_")]
            if sum(p.state == "RUNNING" for p in workers) != expected or sum(p.pid > 0 for p in workers) != expected:
                return False
            return all(p.state == "RUNNING" for p in procs if p.group == "autoscale")

        if not poll(ready, 90, 0.2):
            raise RuntimeError(f"pool {spec.key} did not come up:\n{sup.logs('.err')[-2000:]}")
        time.sleep(2.0)  # the workers' first heartbeats; the autoscaler's first ticks with nothing queued
        queue = Queue.from_url(redis_server.url, socket_timeout=5)
        sampler = Sampler(sock, f"{spec.key}_")
        sampler.start()
        time.sleep(SAMPLE)

        # the producer: every push of the timeline at its time, a batch for pushes due together
        t0 = time.time()
        i = 0
        while i < len(pushes):
            j = i
            while j < len(pushes) and pushes[j].at == pushes[i].at:
                j += 1
            delay = t0 + pushes[i].at - time.time()
            if delay > 0:
                time.sleep(delay)
            result.late = max(result.late, time.time() - (t0 + pushes[i].at))
            queue.push_many([(JOB, {"seconds": p.seconds}, p.id) for p in pushes[i:j]], queue=QUEUE_NAME)
            i = j
        end_of_pushes = t0 + length
        if time.time() < end_of_pushes:
            time.sleep(end_of_pushes - time.time())

        ids = {p.id for p in pushes}

        def all_done() -> bool:
            return ids <= read_log(exec_log)[1].keys()

        poll(all_done, DRAIN_TIMEOUT, 0.25)
        starts, ends = read_log(exec_log)
        last_end = max((t for t in ends.values()), default=t0)
        window_end = max(end_of_pushes, last_end)
        while time.time() < window_end + SAMPLE:
            time.sleep(SAMPLE)
        sampler.halt.set()
        sampler.join()

        result.window = window_end - t0
        result.ps = sampler.integral(t0, window_end, 2)
        result.ps_running = sampler.integral(t0, window_end, 1)
        result.sample_errors = sampler.errors
        buckets = math.ceil(result.window / SPARK)
        sizes = []
        for b in range(buckets):
            inside = [s[2] for s in sampler.samples if t0 + b * SPARK <= s[0] < t0 + (b + 1) * SPARK]
            sizes.append(max(inside, default=sampler.at(t0 + b * SPARK)))
        result.sizes = "".join(str(n) if n < 10 else "+" for n in sizes)
        result.max_size = max((s[2] for s in sampler.samples if t0 <= s[0] <= window_end), default=0)

        for job_id in ids:
            runs = starts.get(job_id, [])
            if not runs:
                result.lost += 1
                continue
            result.waits[job_id] = runs[0][1]
            result.twice += len(runs) - 1
            if job_id in ends:
                result.run += 1
                result.busy_seconds += ends[job_id] - runs[-1][0]
            else:
                result.unfinished += 1
        failed = subprocess.run([str(QUEUE_BIN), "failed", "--json"], env=cli_env, capture_output=True, text=True)
        try:
            result.failed = len(json.loads(failed.stdout or "[]"))
        except ValueError:
            result.failed = -1
            result.notes.append(f"`queue failed --json` answered: {failed.stdout[:200]} {failed.stderr[:200]}")
        left = queue.sizes([QUEUE_NAME])[QUEUE_NAME]
        if any(left.values()):
            result.notes.append(f"queue not empty at the end: {left}")

        if spec.autoscaled:
            client = redis_server.client()
            counts = {k.decode(): int(v) for k, v in client.hgetall("queuefleet:autoscale:counts").items()}
            result.scale_ups = counts.get(f"{spec.key}|benchhost|up", 0)
            result.scale_downs = counts.get(f"{spec.key}|benchhost|down", 0)
            scaler = [p for p in rpc.processes() if p.group == "autoscale"]
            if scaler and scaler[0].pid:
                result.autoscaler_cpu = cpu_seconds(scaler[0].pid)
            result.reactions = reactions(sampler, t0, spec, pushes, window_end)
            result.decisions = decisions(workdir / "autoscale.out", t0, window_end)
            result.startups = startups(workdir, spec, t0, window_end)
        for name, (state, _) in sup.status().items():
            if state not in ("RUNNING", "STOPPED", "STARTING", "STOPPING"):
                result.notes.append(f"program {name} {state}")
        errors = sup.logs(".err") + ((workdir / "autoscale.err").read_text() if spec.autoscaled else "")
        if "Traceback" in errors:
            result.notes.append("a Traceback in the programs' stderr (see --keep-tmp)")
        return result
    finally:
        if sampler is not None:
            sampler.halt.set()
        if sup is not None:
            sup.close()
        redis_server.stop()


def read_log(path: Path) -> tuple[dict[str, list[tuple[float, float]]], dict[str, float]]:
    """id -> [(start time, wait)] of every run; id -> end time of its last run."""
    starts: dict[str, list[tuple[float, float]]] = {}
    ends: dict[str, float] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "start":
            starts.setdefault(parts[1], []).append((float(parts[3]), float(parts[4])))
        elif len(parts) == 4 and parts[0] == "end":
            ends[parts[1]] = float(parts[3])
    return starts, ends


def decisions(log: Path, t0: float, window_end: float) -> list[str]:
    """The autoscaler's SCALE lines within the window, their time as seconds into the timeline."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        stamp, _, rest = line.partition(" ")
        kind, _, text = rest.strip().partition(" ")
        if kind != "SCALE":
            continue
        try:
            at = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc).timestamp()
        except ValueError:
            continue
        if t0 <= at <= window_end:
            text = re.sub(r"\d+ host\(s\), this host's share \d+; ", "", text.strip().split(" pool_name=")[0])
            out.append(f"{at - t0:5.1f} s  {text}")
    return out


def startups(workdir: Path, spec: PoolSpec, t0: float, window_end: float) -> list[float]:
    """For every process supervisord spawned within the window: seconds until the worker logged
    STARTING (it has imported everything and takes jobs from then on). The n-th spawn of a program
    is paired with the n-th STARTING line of its log."""
    spawns: dict[str, list[float]] = {}
    for line in (workdir / "supervisord.log").read_text(errors="replace").splitlines():
        m = re.match(r"(\S+ \S+) INFO spawned: '([^']+)' with pid", line)
        if m and m.group(2).startswith(f"{spec.key}_"):
            at = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()  # supervisord logs local time
            spawns.setdefault(m.group(2), []).append(at)
    out = []
    for program, times in spawns.items():
        ready = []
        for line in (workdir / f"{program}.log").read_text(errors="replace").splitlines():
            stamp, _, rest = line.partition(" ")
            if rest.strip().startswith("STARTING"):
                try:
                    ready.append(dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc).timestamp())
                except ValueError:
                    continue
        out += [r - sp for sp, r in zip(times, ready) if t0 <= sp <= window_end]
    return sorted(out)


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def reactions(sampler: Sampler, t0: float, spec: PoolSpec, pushes: list[Push], window_end: float) -> list[str]:
    """How the autoscaled pool followed each burst: when it first grew, when it was biggest, when it was back at min."""
    out = []
    samples = [(s[0] - t0, s[2]) for s in sampler.samples if t0 <= s[0] <= window_end]
    for phase in ("burst A", "burst B"):
        times = [p.at for p in pushes if p.phase == phase]
        if not times:
            continue
        first, last = times[0], times[-1]
        nxt = min((p.at for p in pushes if p.phase.startswith("burst") and p.at > last + 1), default=window_end - t0)
        during = [(t, n) for t, n in samples if first <= t < nxt]
        base = sampler.at(t0 + first)
        grew = next((t for t, n in during if n > base), None)
        peak = max((n for _, n in during), default=base)
        at_peak = next((t for t, n in during if n == peak), None)
        back = next((t for t, n in samples if t > last and n <= spec.min
                     and all(m <= spec.min for u, m in samples if t <= u < nxt)), None)
        text = f"{phase} (pushes {first:g}-{last:g} s): {base} process(es) at its first push"
        text += f", first growth {grew - first:.1f} s after it" if grew is not None else ", never grew"
        if at_peak is not None and peak > base:
            text += f", largest size {peak} reached {at_peak - first:.1f} s after it"
        if back is not None:
            text += f"; back at min {spec.min} {back - last:.1f} s after its last push"
        else:
            end = [n for t, n in samples if t < nxt][-1:] or [0]
            text += f"; not back at min {spec.min} before {'the next burst' if nxt < window_end - t0 else 'the end of the window'} ({end[0]} then)"
        out.append(text)
    return out


# -- report ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    ps_ratio_max: float = 0.6  # the autoscaled pool: at most 60% of the peak pool's process-seconds
    p95_factor: float = 1.5  # and a p95 wait within 1.5x the peak pool's, or within p95_slack
    p95_slack: float = 1.0  # seconds of it, whichever is looser (the peak pool's p95 may be ~0)


TARGETS = Targets()


def fmt_s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f} s"


def table(results: list[PoolResult]) -> list[str]:
    lines = ["| pool | processes | process-seconds | of which RUNNING | busy | jobs pushed | run | lost | run twice "
             "| failed | p50 wait | p95 wait | max wait | p95 burst A | p95 burst B | p95 trickle |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        size = f"{r.spec.min}..{r.spec.size}" if r.spec.autoscaled else f"{r.spec.size}"
        busy = f"{100 * r.busy_seconds / r.ps:.0f}%" if r.ps else "-"
        lines.append(
            f"| {r.spec.key} ({r.spec.label}) | {size} | {r.ps:.0f} | {r.ps_running:.0f} | {busy} | {r.pushed} | {r.run} "
            f"| {r.lost} | {r.twice} | {r.failed} | {fmt_s(r.pct(0.5))} | {fmt_s(r.pct(0.95))} "
            f"| {fmt_s(max(r.waits.values(), default=None))} | {fmt_s(r.pct(0.95, 'burst A'))} "
            f"| {fmt_s(r.pct(0.95, 'burst B'))} | {fmt_s(r.pct(0.95, 'trickle'))} |")
    return lines


def size_lines(results: list[PoolResult]) -> list[str]:
    width = max(len(r.spec.key) for r in results)
    return [f"{r.spec.key:<{width}} {r.sizes}" for r in results]


def verdicts(results: list[PoolResult]) -> tuple[list[str], list[str]]:
    """(PASS/MISS lines of the targets, integrity problems)."""
    by = {r.spec.key: r for r in results}
    lines = []
    peak, auto, avg = by.get("peak"), by.get("auto"), by.get("avg")
    if peak and auto and peak.ps and auto.pct(0.95) is not None and peak.pct(0.95) is not None:
        ratio = auto.ps / peak.ps
        lines.append(f"{'PASS' if ratio <= TARGETS.ps_ratio_max else 'MISS'}: process-seconds, autoscaled / peak-sized = "
                     f"{auto.ps:.0f} / {peak.ps:.0f} = {ratio:.2f} (target <= {TARGETS.ps_ratio_max:g})")
        a95, p95 = auto.pct(0.95), peak.pct(0.95)
        bound = max(TARGETS.p95_factor * p95, p95 + TARGETS.p95_slack)
        p_ratio = f"{a95 / p95:.1f}x" if p95 > 0 else "n/a"
        lines.append(f"{'PASS' if a95 <= bound else 'MISS'}: p95 wait, autoscaled vs peak-sized = {a95:.2f} s vs {p95:.2f} s "
                     f"(ratio {p_ratio}, +{a95 - p95:.2f} s; target <= {bound:.2f} s = max({TARGETS.p95_factor:g} x, "
                     f"+{TARGETS.p95_slack:g} s))")
    else:
        lines.append("NOT MEASURED: the targets need the peak and auto pools in one run")
    if avg and peak and peak.ps and avg.pct(0.95) is not None:
        lines.append(f"for scale: the average-sized pool used {avg.ps / peak.ps:.2f} of the peak pool's process-seconds, "
                     f"with a p95 wait of {avg.pct(0.95):.2f} s")
    problems = []
    for r in results:
        for what, n in (("lost", r.lost), ("run twice", r.twice), ("failed", r.failed), ("unfinished", r.unfinished)):
            if n:
                problems.append(f"{r.spec.key}: {n} {what}")
        problems += [f"{r.spec.key}: {n}" for n in r.notes]
    return lines, problems


def machine_info() -> dict[str, str]:
    from importlib.metadata import version

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    if subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "worker"], capture_output=True,
                      text=True).stdout.strip():
        commit += " plus uncommitted changes in worker/"
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    heavy = subprocess.run(["pgrep", "-fa", "molecule|ansible-playbook|pytest"], capture_output=True, text=True).stdout
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "kernel": platform.release(),
        "cpu": cpu,
        "commit": commit,
        "redis": next((w.split("=", 1)[1] for w in redis_version if w.startswith("v=")), "?"),
        "supervisor": version("supervisor"),
        "python": platform.python_version(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "heavy": str(len([line for line in heavy.splitlines() if line.strip()])),
    }


def write_results(results: list[PoolResult], pushes: list[Push], knobs: Knobs, took: float, info: dict[str, str],
                  load_after: str) -> None:
    lines, problems = verdicts(results)
    by_phase = {ph: [p for p in pushes if p.phase == ph] for ph in ("trickle", "burst A", "burst B")}
    work = sum(p.seconds for p in pushes)
    auto = next((r for r in results if r.spec.autoscaled), None)
    text = [
        "# Autoscaled pool against fixed pools",
        "",
        "Generated by `bench/autoscale`; re-run it to refresh this file. Every figure below comes from",
        "the run it describes.",
        "",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, took {took:.0f} s.",
        f"Machine: `nproc` {info['nproc']}, kernel {info['kernel']}, CPU {info['cpu']}; load average before the run "
        f"{info['load']}, after {load_after}; {info['heavy']} molecule/ansible-playbook/pytest process(es) running "
        "at the start.",
        f"Commit measured: {info['commit']} (queuefleet installed from worker/ into bench/.venv). "
        f"redis-server {info['redis']}, supervisor {info['supervisor']}, Python {info['python']}.",
        *([] if info["heavy"] == "0" else [
            "",
            "**Not a quiet machine**: other heavy processes were running when the bench started (and may have run",
            "throughout). The pools ran one after another under the same conditions; the autoscaled pool, which",
            "starts processes while jobs wait, is the one most exposed to a busy CPU.",
        ]),
        "",
        "## Method",
        "",
        "Three pools, one after another, each with its own redis-server, its own supervisord and real",
        f"`queue work --name POOL --queue {QUEUE_NAME} --timeout 30` processes (startsecs 1, stopwaitsecs 20):",
        "",
        "- **peak**: a fixed pool sized for the peak, 8 processes, all autostarted;",
        "- **avg**: a fixed pool sized for the average, 2 processes;",
        "- **auto**: programs `auto_00`..`auto_07`, none autostarted, and the real `queue autoscale` program",
        f"  under the same supervisord, with `min: 1, max: 8, step: {knobs.step}, cooldown: {knobs.cooldown:g}, "
        f"target_wait: {knobs.target_wait:g}` and `interval: {knobs.interval:g}`.",
        "  The role's defaults (interval 5, step 2, cooldown 60, target_wait 10) are meant for bursts of",
        "  minutes; these are scaled down to a 75-second timeline whose bursts last 10-12 s and come 18 s",
        "  apart (a 60 s cooldown could not shrink the pool between them).",
        "",
        f"The same deterministic timeline of {len(pushes)} pushes for each pool ({work:.0f} s of work in all, "
        f"{work / LENGTH:.1f} processes on average over {LENGTH:g} s):",
        "",
        f"- *trickle*: one {TRICKLE:g} s job every second, all along ({len(by_phase['trickle'])} jobs);",
        f"- *burst A*: {BURST_A[2]:g} jobs a second from {BURST_A[0]:g} s to {BURST_A[1]:g} s, sleeping "
        f"{SLOW[0]:g}-{SLOW[-1]:g} s in turn ({len(by_phase['burst A'])} jobs, 6 processes of work while it lasts);",
        f"- *burst B*: {BURST_B[1]} jobs pushed at once at {BURST_B[0]:g} s, then {BURST_B[3]:g} a second until "
        f"{BURST_B[2]:g} s ({len(by_phase['burst B'])} jobs); then quiet again until {LENGTH:g} s.",
        "",
        "Each job notes its start and its *wait* (start minus the `pushed_at` the producer stamped, one clock)",
        "in a file (`bench/jobs/autoscale_jobs.py`). Counted per pool over the window from the first push to",
        f"{LENGTH:g} s or the end of the last job, whichever is later:",
        "",
        f"- *process-seconds*: supervisord's process list read over XML-RPC every {SAMPLE:g} s, the worker",
        "  processes that have a pid (STARTING, RUNNING, STOPPING) integrated over the window; *of which",
        "  RUNNING*: those in state RUNNING only (a started process is RUNNING after startsecs, 1 s). The",
        "  autoscaler process itself is not counted in them (its CPU time is given below);",
        "- *busy*: the jobs' run time over the process-seconds;",
        "- *lost*: pushed and never started; *run twice*: started more than once; *failed*: rows in failed jobs;",
        "- waits: p50, p95 and max over the first run of every job, and p95 per part of the timeline.",
        "",
        "## Results",
        "",
        *table(results),
        "",
        "Targets (the autoscaled pool against the pool sized for the peak):",
        "",
        *[f"- {line}" for line in lines],
        "",
        "Integrity (lost, run twice, failed, unfinished, crashed programs): "
        + ("none in any pool." if not problems else "; ".join(problems) + "."),
        "",
        f"Processes (with a pid) over time, the most in each {SPARK:g} s:",
        "",
        "```",
        *size_lines(results),
        "```",
        "",
    ]
    if auto is not None:
        text += [
            "The autoscaled pool:",
            "",
            *[f"- {line}" for line in auto.reactions],
            f"- {auto.scale_ups} scale-up(s) and {auto.scale_downs} scale-down(s) (the autoscaler's own counters); "
            f"largest size {auto.max_size}; the `queue autoscale` process used "
            f"{fmt_s(auto.autoscaler_cpu)} of CPU in all.",
            f"- {len(auto.startups)} worker process(es) started during the window took "
            f"{fmt_s(percentile(auto.startups, 0.5))} (median, max {fmt_s(max(auto.startups, default=None))}) from "
            "supervisord's spawn to the worker's STARTING line (ready to take jobs).",
            "",
            "Its decisions during the window (its log, seconds into the timeline):",
            "",
            "```",
            *auto.decisions,
            "```",
            "",
        ]
    late = max(r.late for r in results)
    text += [f"The producer was at most {late * 1000:.0f} ms late on the timeline; "
             f"{sum(r.sample_errors for r in results)} sample(s) of supervisord failed.", ""]
    (HERE / "AUTOSCALE.md").write_text("\n".join(text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"the first {QUICK_LENGTH:g} s of the timeline only; AUTOSCALE.md untouched")
    parser.add_argument("--only", default="", help="a subset of the pools, e.g. auto or peak,auto; AUTOSCALE.md untouched")
    parser.add_argument("--no-results", action="store_true", help="print only, leave AUTOSCALE.md alone")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (every program's log)")
    defaults = Knobs()
    parser.add_argument("--interval", type=float, default=defaults.interval, help="autoscaler: seconds between decisions")
    parser.add_argument("--step", type=int, default=defaults.step, help="autoscaler: most processes started/stopped at once")
    parser.add_argument("--cooldown", type=float, default=defaults.cooldown, help="autoscaler: seconds before a step down")
    parser.add_argument("--target-wait", type=float, default=defaults.target_wait, help="autoscaler: target wait, seconds")
    args = parser.parse_args()
    knobs = Knobs(args.interval, args.step, args.cooldown, args.target_wait)
    only = {k.strip() for k in args.only.split(",") if k.strip()}
    unknown = only - {p.key for p in POOLS}
    if unknown:
        parser.error(f"unknown pool(s) {', '.join(sorted(unknown))}: choose from {', '.join(p.key for p in POOLS)}")
    pools = [p for p in POOLS if not only or p.key in only]
    length = QUICK_LENGTH if args.quick else LENGTH
    write = not (args.no_results or args.quick or only or knobs != defaults)
    pushes = timeline(length)

    def interrupted(signum, frame):  # noqa: ARG001 - SIGTERM cleans up as Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    info = machine_info()
    print(f"bench/autoscale: {len(pushes)} pushes over {length:g} s per pool, pools {', '.join(p.key for p in pools)}; "
          f"autoscaler {knobs}; load average {info['load']}, {info['heavy']} heavy process(es)", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="queuefleet-autoscale-"))
    started = time.monotonic()
    results = []
    try:
        for spec in pools:
            t = time.monotonic()
            results.append(run_pool(spec, pushes, tmp, knobs, length))
            print(f"  {spec.key}: done in {time.monotonic() - t:.0f} s", flush=True)
    except KeyboardInterrupt:
        print("bench/autoscale: interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep_tmp:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    took = time.monotonic() - started
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print("\n".join(table(results)))
    print("\n".join(size_lines(results)))
    for r in results:
        for line in r.reactions:
            print(f"  {r.spec.key}: {line}")
        if r.spec.autoscaled:
            print(f"  {r.spec.key}: {r.scale_ups} up, {r.scale_downs} down; autoscaler CPU {fmt_s(r.autoscaler_cpu)}")
            print("\n".join(f"    {line}" for line in r.decisions))
            print(f"  {r.spec.key}: {len(r.startups)} processes started, spawn to ready median "
                  f"{fmt_s(percentile(r.startups, 0.5))}, max {fmt_s(max(r.startups, default=None))}")
    lines, problems = verdicts(results)
    print("\n".join(lines))
    print(f"bench/autoscale took {took:.0f} s; producer at most {max(r.late for r in results) * 1000:.0f} ms late; "
          + ("no integrity problem" if not problems else "PROBLEMS: " + "; ".join(problems)))
    if write:
        write_results(results, pushes, knobs, took, info, load_after)
        print("rewrote bench/AUTOSCALE.md")
    return 1 if problems or any(line.startswith("MISS") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
