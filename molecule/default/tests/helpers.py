"""Helpers shared by the scenario's verify tests: run a playbook against the converged host, read its output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", "")
LIMIT = os.environ.get("QF_TEST_LIMIT", "molecule")
SCENARIO = Path(__file__).resolve().parents[1]
QUEUE = "/opt/queuefleet/current/bin/queue --env-file /opt/queuefleet/shared/queuefleet.env"


def base_pools() -> list[dict]:
    if INVENTORY.endswith("inventories/demo/hosts.yml"):
        return yaml.safe_load((PROJECT / "inventories/demo/group_vars/workers.yml").read_text())["queue_worker_pools"]
    config = yaml.safe_load((SCENARIO / "molecule.yml").read_text())
    return config["provisioner"]["inventory"]["group_vars"]["molecule"]["queue_worker_pools"]


BASE_POOLS = base_pools()
BASE = {"queuefleet_environments": [LIMIT], "queue_worker_pools": BASE_POOLS}


def play(playbook: str, expect_rc: int | None = 0, *, verbose: bool = False, project: Path = PROJECT,
         **extra) -> str:
    """Run a playbook of `project` (a checkout) against the host with extra vars; returns stdout, then
    stderr (where Ansible prints its warnings: what a run repaired, and why)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({**BASE, **extra}, f)
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_CONFIG": str(project / "ansible.cfg"),
           "ANSIBLE_COLLECTIONS_PATH": f"{project}/collections:~/.ansible/collections:/usr/share/ansible/collections"}
    result = subprocess.run(["ansible-playbook", "-i", INVENTORY, str(project / playbook), "-l", LIMIT, "-e", f"@{f.name}"]
                            + (["-v"] if verbose else []),
                            capture_output=True, text=True, env=env, cwd=project, timeout=900)
    os.unlink(f.name)
    if expect_rc is not None:
        assert result.returncode == expect_rc, f"{playbook}: rc={result.returncode}\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    return result.stdout + "\n" + result.stderr


def ansible(module: str, args: dict | str, expect_rc: int | None = 0) -> dict:
    """One module run against the host (become), its result as JSON."""
    env = {**os.environ, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "json",
           "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg")}
    result = subprocess.run(["ansible", "-i", INVENTORY, LIMIT, "-b", "-m", module,
                             "-a", args if isinstance(args, str) else json.dumps(args)],
                            capture_output=True, text=True, env=env, cwd=PROJECT, timeout=300)
    if expect_rc is not None:
        assert result.returncode == expect_rc, result.stdout[-4000:] + result.stderr[-2000:]
    return next(iter(json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"].values()))


def changed(out: str) -> int:
    return sum(int(n) for n in re.findall(r"changed=(\d+)", out.split("PLAY RECAP")[-1]))


def flat(out: str) -> str:
    """The output with its line wrapping undone (the yaml callback folds long messages)."""
    return " ".join(out.split())


def running(host, pool: str) -> int:
    """RUNNING processes of a pool (supervisor programs queuefleet-<pool>-<generation>_<NN>)."""
    out = host.run("supervisorctl status").stdout
    return len(re.findall(rf"^queuefleet-{re.escape(pool)}-[0-9a-f]{{6}}_[0-9]{{2,}}\s+RUNNING\s", out, re.M))


def pool_programs(host, pool: str) -> dict[str, str]:
    """{program: state} of a pool's processes as supervisord reports them."""
    out = host.run("supervisorctl status").stdout
    return {m.group(1): m.group(2) for m in re.finditer(rf"^(queuefleet-{re.escape(pool)}-[0-9a-f]{{6}}_[0-9]{{2,}})\s+([A-Z]+)", out, re.M)}


def secret(name: str) -> str:
    return (Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "secrets" / name).read_text().split()[0]


def wait_for(predicate, timeout: float, what: str):
    """The first truthy value of predicate(), polled every 0.5 s; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
