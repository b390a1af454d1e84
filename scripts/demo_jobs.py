"""Push sample jobs into the demo and report what the fleet did with them.

Runs inside the demo container with the deployed release's Python:
    docker exec -i queuefleet-demo /opt/queuefleet/current/bin/python - < scripts/demo_jobs.py
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ENV_FILE = Path("/opt/queuefleet/shared/queuefleet.env")
for line in ENV_FILE.read_text().splitlines():
    if "=" in line and not line.lstrip().startswith("#"):
        key, _, value = line.partition("=")
        os.environ.setdefault(key.strip(), value.strip())

from queuefleet import FailedJobStore, Queue  # noqa: E402

queue = Queue.from_url(os.environ["QUEUEFLEET_REDIS_URL"])
store = FailedJobStore(os.environ["QUEUEFLEET_DATABASE_URL"])
redis = queue.redis
run = f"{time.time():.0f}"
before_failed = store.count()

ids = queue.push_many([("queuefleet_demo.jobs:fast", {"id": f"{run}-{i}"}) for i in range(20)], queue="default")
ids += queue.push_many([("queuefleet_demo.jobs:fast", {"id": f"{run}-high"})], queue="high")
ids += queue.push_many([("queuefleet_demo.jobs:slow", {"id": f"{run}-slow{i}", "seconds": 1}) for i in range(2)], queue="slow")
ids.append(queue.push("queuefleet_demo.jobs:fail", {"id": f"{run}-fail"}, queue="default", tries=1))

deadline = time.monotonic() + 60
names = ["high", "default", "slow"]
while time.monotonic() < deadline:
    sizes = queue.sizes(names)
    if all(s["ready"] == 0 and s["reserved"] == 0 and s["delayed"] == 0 for s in sizes.values()) and store.count() > before_failed:
        break
    time.sleep(0.2)
else:
    sys.exit(f"sample jobs did not finish within 60 s: {queue.sizes(names)}")

executed = [e.decode() for e in redis.lrange("demo:executed", 0, -1) if e.decode().startswith(run + "-")]
workers = queue.workers()
status = subprocess.run(["supervisorctl", "status"], capture_output=True, text=True).stdout.splitlines()
pools: dict[str, list[str]] = {}
for line in status:
    # One supervisor program per process: queuefleet-<pool>-<generation>_<NN>.
    match = re.match(r"^queuefleet-(.+)-[0-9a-f]{6}_[0-9]{2,}\s+(\S+)", line)
    if match:
        pools.setdefault(match[1], []).append(match[2])

print("workers:")
for pool, states in sorted(pools.items()):
    on = sorted({w["release"] for w in workers if w.get("pool") == pool})
    print(f"  pool {pool}: {len(states)} processes ({', '.join(sorted(set(states)))}), release {', '.join(on) or '-'}")
print(f"  release: {os.path.basename(os.path.realpath('/opt/queuefleet/current'))}")
print(f"sample jobs: pushed {len(ids)}, processed {len(executed)} "
      f"(fast {sum('slow' not in e for e in executed)}, slow {sum('slow' in e for e in executed)}), "
      f"failed {store.count() - before_failed} (by design: queuefleet_demo.jobs:fail)")
print(f"failed_jobs table: {store.count()} row(s) in total; see them with: queue failed")
print(json.dumps({"pushed": len(ids), "processed": len(executed)}), file=sys.stderr)
