"""The everyday deploy operations, timed on the demo container (issue 10).

One run, in order, against a fresh `queuefleet-demo` container:

1. a fresh deploy (deploy.yml on a container that has nothing);
2. a no-op re-deploy (nothing changed: must report changed=0);
3. a numprocs change (the demo's default pool 2 -> 3);
4. a repair: one pool process stopped by hand (`supervisorctl stop`), then a plain re-deploy,
   which must start it (issue 23);
5. a code update (the demo app with a new version: a new release, graceful restart);
6. a rollback (playbooks/rollback.yml back to the release of step 1).

For each: wall time, its ratio to the fresh deploy of the same run, tasks run, tasks
changed and the five slowest tasks (ansible.posix.profile_tasks). Prints a table and
writes bench/DEPLOY.md (unless --no-results; earlier runs are kept below the new one).
Targets: no-op <= 25% of fresh with changed=0, numprocs change <= 35% of fresh, the repair
<= 40% of fresh with the process RUNNING again, and shipping a release that is already on the
host costs under a second.

Usage: bench/deploy [--project DIR] [--no-results]
  --project DIR  run the playbooks of another checkout (a "before" measurement); the demo
                 container, inventory and this script stay the same.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONTAINER = "queuefleet-demo"
TARGETS = {"no-op re-deploy": 0.25, "numprocs change": 0.35, "repair a stopped process": 0.40}
SHIP_TASK = re.compile(r"ship.*(wheelhouse|release)", re.I)


@dataclass
class Operation:
    name: str
    seconds: float
    tasks: int
    changed: int
    slowest: list[tuple[str, float]] = field(default_factory=list)
    ship_seconds: float | None = None


def sh(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, text=True, capture_output=True, **kw)


def fresh_container(project: Path) -> None:
    sh("bash", str(ROOT / "scripts" / "demo.sh"), "down")
    start = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), "start"], text=True, check=False)
    if start.returncode != 0:
        sys.exit("bench/deploy: could not start the demo container")


def run_playbook(project: Path, playbook: str, name: str, extra: dict | None = None) -> Operation:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(project / "ansible.cfg"),
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
        "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "all",
        "PROFILE_TASKS_SORT_ORDER": "descending",
        "ANSIBLE_FORCE_COLOR": "0",
        "NO_COLOR": "1",
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
    }
    argv = ["ansible-playbook", "-i", str(ROOT / "inventories" / "demo"), str(project / playbook), "-l", "demo"]
    tmp = None
    if extra:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as tmp:
            json.dump(extra, tmp)
        argv += ["-e", f"@{tmp.name}"]
    started = time.monotonic()
    result = subprocess.run(argv, text=True, capture_output=True, env=env, cwd=project, check=False)
    seconds = time.monotonic() - started
    if tmp:
        os.unlink(tmp.name)
    log = HERE / ".deploy-logs"
    log.mkdir(exist_ok=True)
    (log / f"{name.replace(' ', '-')}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        sys.exit(f"bench/deploy: {name} failed (log: {log / (name.replace(' ', '-') + '.log')}):\n{result.stdout[-3000:]}")
    recap = result.stdout.split("PLAY RECAP")[-1]
    counts = {key: sum(int(n) for n in re.findall(rf"{key}=(\d+)", recap)) for key in ("ok", "changed", "skipped")}
    timings = [(m[1].strip(), float(m[2])) for m in re.finditer(r"^(.+?) -{3,} (\d+\.\d+)s$", result.stdout, re.M)]
    ship = [t for task, t in timings if SHIP_TASK.search(task)]
    return Operation(name, seconds, counts["ok"], counts["changed"], timings[:5], max(ship) if ship else None)


def stop_one_pool_process() -> str:
    """Stop the first pool process by hand, as an operator might; returns its name."""
    status = sh("docker", "exec", CONTAINER, "supervisorctl", "status", check=False).stdout
    name = next(line.split()[0] for line in status.splitlines() if re.match(r"^queuefleet-.+-[0-9a-f]{6}_\d+\s+RUNNING", line))
    sh("docker", "exec", CONTAINER, "supervisorctl", "stop", name)
    return name


def demo_pools() -> list[dict]:
    import yaml

    return yaml.safe_load((ROOT / "inventories" / "demo" / "group_vars" / "workers.yml").read_text())["queue_worker_pools"]


def app_v2() -> Path:
    src = Path(tempfile.mkdtemp(prefix="qf-bench-app-")) / "demo-app"
    shutil.copytree(ROOT / "examples" / "demo-app", src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    init = src / "src" / "queuefleet_demo" / "__init__.py"
    init.write_text(re.sub(r'__version__ = "[^"]+"', '__version__ = "9.9.9-bench"', init.read_text()))
    return src


def machine() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}"


def target(project: Path) -> str:
    """The demo container's OS release and the connection the demo inventory uses."""
    release = sh("docker", "exec", "queuefleet-demo", "cat", "/etc/debian_version", check=False).stdout.strip() or "?"
    import yaml

    hosts = yaml.safe_load((project / "inventories/demo/hosts.yml").read_text())
    connection = hosts["all"]["children"]["demo"]["hosts"]["queuefleet-demo"].get("ansible_connection", "ssh")
    return f"Debian {release}, connection {connection}"


def commit(project: Path) -> str:
    out = sh("git", "-C", str(project), "rev-parse", "--short", "HEAD", check=False).stdout.strip() or "?"
    dirty = sh("git", "-C", str(project), "status", "--porcelain", "--untracked-files=no", check=False).stdout.strip()
    return out + ("+changes" if dirty else "")


def verdicts(ops: list[Operation]) -> list[str]:
    fresh = ops[0].seconds
    lines = []
    for op in ops:
        if op.name in TARGETS:
            ratio, target = op.seconds / fresh, TARGETS[op.name]
            ok = ratio <= target and (op.name != "no-op re-deploy" or op.changed == 0)
            lines.append(f"{op.name}: {ratio:.0%} of the fresh deploy (target <= {target:.0%}"
                         + (", changed=0" if op.name == "no-op re-deploy" else "") + f"), changed={op.changed}: "
                         + ("PASS" if ok else "MISS"))
    noop = next(op for op in ops if op.name == "no-op re-deploy")
    if noop.ship_seconds is not None:
        lines.append(f"shipping a release already on the host: {noop.ship_seconds:.2f} s (target < 1 s): "
                     + ("PASS" if noop.ship_seconds < 1 else "MISS"))
    else:
        lines.append("shipping a release already on the host: no ship task ran: PASS")
    return lines


def table(ops: list[Operation]) -> str:
    fresh = ops[0].seconds
    rows = ["| operation | wall time | of fresh | tasks run | changed | slowest tasks |", "|---|---:|---:|---:|---:|---|"]
    for op in ops:
        slow = "<br>".join(f"{t:.1f} s {task}" for task, t in op.slowest)
        rows.append(f"| {op.name} | {op.seconds:.1f} s | {op.seconds / fresh:.0%} | {op.tasks} | {op.changed} | {slow} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=ROOT, help="checkout whose playbooks and roles run")
    parser.add_argument("--no-results", action="store_true", help="do not rewrite bench/DEPLOY.md")
    args = parser.parse_args()
    project = args.project.resolve()

    fresh_container(project)
    ops = [run_playbook(project, "deploy.yml", "fresh deploy")]
    ops.append(run_playbook(project, "deploy.yml", "no-op re-deploy"))
    pools = [dict(p, numprocs=p["numprocs"] + 1) if i == 0 else p for i, p in enumerate(demo_pools())]
    ops.append(run_playbook(project, "deploy.yml", "numprocs change", {"queue_worker_pools": pools}))
    stopped = stop_one_pool_process()
    ops.append(run_playbook(project, "deploy.yml", "repair a stopped process", {"queue_worker_pools": pools}))
    state = sh("docker", "exec", CONTAINER, "supervisorctl", "status", stopped, check=False).stdout.split()
    if state[1:2] != ["RUNNING"]:
        sys.exit(f"bench/deploy: the re-deploy left {stopped} {state[1:2]}, not RUNNING")
    ops.append(run_playbook(project, "deploy.yml", "code update", {
        "queue_worker_pools": pools, "queue_worker_app_packages": [{"name": "queuefleet-demo", "src": str(app_v2())}]}))
    ops.append(run_playbook(project, "playbooks/rollback.yml", "rollback", {"queue_worker_pools": pools}))

    header = (f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, playbooks of commit {commit(project)}, "
              f"machine: {machine()}. The demo container ({target(project)}).")
    report = "\n".join([header, "", table(ops), "", *[f"- {line}" for line in verdicts(ops)]])
    print(report)
    if not args.no_results:
        write_results(report)


BEGIN, END = "<!-- bench/deploy: latest run -->", "<!-- /bench/deploy -->"


def write_results(report: str) -> None:
    """The run goes between the markers of bench/DEPLOY.md (at its top if they are missing); the
    earlier runs and notes below them stay."""
    path = HERE / "DEPLOY.md"
    text = path.read_text() if path.exists() else "# Deploy operations on the demo container (bench/deploy)\n\n"
    block = f"{BEGIN}\n{report}\n{END}"
    if BEGIN in text and END in text:
        text = text.split(BEGIN)[0] + block + text.split(END, 1)[1]
    else:
        title, _, rest = text.partition("\n\n")
        text = f"{title}\n\n{block}\n\n{rest}"
    path.write_text(text)


if __name__ == "__main__":
    main()
