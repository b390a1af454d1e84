"""Push one canary job per queue and wait until each is processed (postdeploy_check).

Run with the release's own interpreter (current/bin/python), so it uses the same
queuefleet package and the same env file as the workers. Prints one JSON object:
{"results": [{"queue", "job", "id", "result": done|failed|timeout|skipped, "seconds", "error"}]}.
Always exits 0; the role decides what a result means.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time


def read_env(path: str) -> dict[str, str]:
    values: dict[str, str] = {}
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, dummy, value = line.removeprefix("export ").partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[key.strip()] = value
    return values


def importable(job: str) -> str:
    module, dummy, func = job.partition(":")
    try:
        handler = getattr(importlib.import_module(module), func, None)
    except Exception as exc:  # noqa: BLE001
        return f"cannot import {module}: {exc}"
    return "" if callable(handler) else f"{module} has no callable {func}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("canaries", nargs="+", metavar="POOL|QUEUE|JOB")
    args = parser.parse_args()

    env_file = os.path.join(args.root, "shared", "queuefleet.env")
    queue_cmd = [os.path.join(args.root, "current", "bin", "queue"), "--env-file", env_file]
    env = {**read_env(env_file), **os.environ}
    allowed = [p.strip() for p in env.get("QUEUEFLEET_JOBS", "").split(",") if p.strip()]
    results = []
    todo = []
    for item in args.canaries:
        pool, queue, job = item.split("|", 2)
        module = job.partition(":")[0]
        problem = importable(job)
        if not problem and module != "queuefleet.canary" and not any(module == p or module.startswith(p + ".") for p in allowed):
            problem = f"{module} is not in QUEUEFLEET_JOBS ({', '.join(allowed)})"
        base = {"pool": pool, "queue": queue, "job": job}
        if problem and module == "queuefleet.canary":  # the built-in default, missing from an older release
            results.append({**base, "result": "skipped", "error": problem})
        elif problem:  # the job a pool is tested with cannot run in this release: that pool is broken
            results.append({**base, "result": "failed", "error": f"cannot run in this release: {problem}"})
        else:
            todo.append(base)

    import redis  # a dependency of queuefleet, present in every release

    client = redis.Redis.from_url(env.get("QUEUEFLEET_REDIS_URL", "redis://127.0.0.1:6379/0"))
    payloads = f"{env.get('QUEUEFLEET_PREFIX', 'queuefleet')}:payloads"
    pending = {}
    for base in todo:
        data = json.dumps({"canary": True, "pool": base["pool"], "at": time.time()})
        out = subprocess.run(queue_cmd + ["push", base["job"], "--queue", base["queue"], "--tries", "1", "--data", data],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            results.append({**base, "result": "failed", "error": (out.stderr or out.stdout).strip()})
        else:
            pending[out.stdout.strip()] = (base, time.monotonic())
    deadline = time.monotonic() + args.timeout
    while pending and time.monotonic() < deadline:
        for job_id in [j for j in pending if not client.hexists(payloads, j)]:
            base, started = pending.pop(job_id)
            results.append({**base, "id": job_id, "result": "done", "seconds": round(time.monotonic() - started, 2)})
        if pending:
            time.sleep(0.2)
    for job_id, (base, dummy) in pending.items():
        results.append({**base, "id": job_id, "result": "timeout", "seconds": args.timeout,
                        "error": f"not processed within {args.timeout:g}s"})
    # A processed canary that ended in failed_jobs did not succeed: say why, and remove the row.
    done = [r for r in results if r["result"] == "done"]
    by_uuid = {}
    for queue in sorted({r["queue"] for r in done}):
        out = subprocess.run(queue_cmd + ["failed", "--json", "--queue", queue], capture_output=True, text=True, check=False)
        rows = json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip().startswith("[") else []
        by_uuid.update({row.get("uuid"): row for row in rows})
    for result in done:
        row = by_uuid.get(result["id"])
        if row:
            lines = [line for line in (row.get("exception") or "").splitlines() if line.strip()]
            result.update(result="failed", error=lines[-1] if lines else "failed")
            subprocess.run(queue_cmd + ["forget", str(row.get("id"))], capture_output=True, text=True, check=False)
    print(json.dumps({"results": sorted(results, key=lambda r: r["pool"])}))


if __name__ == "__main__":
    sys.exit(main())
