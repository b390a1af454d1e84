"""Helpers shared by the multihost tests: docker exec into the four
containers, the generated secrets, playbook runs, the in-container agent."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", "")
SECRETS = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "secrets"
SCENARIO = Path(__file__).resolve().parents[1]
STATE = PROJECT / ".state"

REDIS, DB, W1, W2 = "qfmh-redis", "qfmh-db", "qfmh-worker1", "qfmh-worker2"
WORKERS = [W1, W2]
PRIVATE = {REDIS: "10.213.47.10", DB: "10.213.47.11", W1: "10.213.47.21", W2: "10.213.47.22"}
PROCS_PER_HOST = 2
PY = "/opt/queuefleet/current/bin/python"
QUEUE = "/opt/queuefleet/current/bin/queue --env-file /opt/queuefleet/shared/queuefleet.env"


def secret(name: str) -> str:
    path = SECRETS / name
    assert path.exists(), f"generated secret {path} missing (run through molecule)"
    return path.read_text().split()[0]


def sh(container: str, cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    r = subprocess.run(["docker", "exec", container, "bash", "-c", cmd],
                       capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"{container}: {cmd}\nrc={r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def put(container: str, path: str, content: str) -> None:
    subprocess.run(["docker", "exec", "-i", container, "bash", "-c", f"umask 077; cat > {path}"],
                   input=content, text=True, check=True, timeout=30)


def install_agent(container: str = W1) -> None:
    put(container, "/tmp/mh_agent.py", (Path(__file__).parent / "mh_agent.py").read_text())


def agent(*args: str, container: str = W1, timeout: float = 120, env: str = "") -> dict:
    r = sh(container, f"{env} {PY} /tmp/mh_agent.py {' '.join(args)}", timeout=timeout)
    return json.loads(r.stdout.strip().splitlines()[-1])


def app_py(container: str, code: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run Python with the deployed release (env file loaded) on a worker host."""
    prelude = ("import os\nfor line in open('/opt/queuefleet/shared/queuefleet.env'):\n"
               "    if '=' in line and not line.startswith('#'):\n"
               "        k, _, v = line.strip().partition('=')\n        os.environ.setdefault(k, v)\n")
    # Snippets may carry secrets: 0600 (put) and removed right after.
    put(container, "/tmp/mh_snippet.py", prelude + code)
    try:
        return sh(container, f"{PY} /tmp/mh_snippet.py", check=check)
    finally:
        sh(container, "rm -f /tmp/mh_snippet.py", check=False)


def playbook(playbook: str, *args: str, extra: dict | None = None, timeout: float = 900) -> str:
    """ansible-playbook against the scenario's inventory; returns stdout+stderr."""
    cmd = ["ansible-playbook", "-i", INVENTORY, str(PROJECT / playbook), *args]
    name = None
    if extra:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(extra, f)
        name = f.name
        cmd += ["-e", f"@{name}"]
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "NO_COLOR": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=PROJECT, timeout=timeout)
    if name:
        os.unlink(name)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{playbook} failed:\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
    return out


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def supervisor_pids(container: str) -> dict[str, int]:
    """{process: pid} of RUNNING queuefleet processes (others are omitted)."""
    out = sh(container, "supervisorctl status", check=False).stdout
    pids = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[0].startswith("queuefleet-") and parts[1] == "RUNNING":
            pids[parts[0]] = int(parts[3].rstrip(","))
    return pids


def starting_counts(container: str) -> dict[str, int]:
    """STARTING lines per worker process log (<pool>_NN.log): one per process start. The logs of
    the side programs (exporter, scheduler) are not worker logs."""
    out = sh(container, "grep -c ' STARTING worker ' /var/log/queuefleet/*_[0-9][0-9].log || true").stdout
    counts = {}
    for line in out.splitlines():
        path, _, n = line.rpartition(":")
        counts[Path(path).name] = int(n)
    return counts
