#!/usr/bin/env bash
# Table-driven bad inventories: each invalid value must stop the preflight with
# its own message, before anything changes.
#
#   tests/preflight_cases.sh          every case against playbooks/preflight.yml on the
#                                     controller (tests/preflight-inventory.yml, read-only),
#                                     plus a check that deploy.yml runs preflight first
#   tests/preflight_cases.sh --demo   also every case through the full deploy.yml against
#                                     the demo container (`make demo`), comparing a checksum
#                                     of the managed files and the snapshot list before/after
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH" ANSIBLE_CONFIG="$ROOT/ansible.cfg" ANSIBLE_FORCE_COLOR=0 NO_COLOR=1
DEMO=false; [ "${1:-}" = --demo ] && DEMO=true
passed=0 failed=0
pools='[{"name": "default", "queues": ["high", "default"], "numprocs": 2}]'
pool() {  # pool '<json fields merged into a valid pool>' -> extra vars with that one pool
  python3 -c 'import json,sys; p={"name": "p1", "queues": ["q1"], "numprocs": 1}; p.update(json.loads(sys.argv[1])); print(json.dumps({"queue_worker_pools": [p]}))' "$1"
}

# name | extra vars (JSON) | pattern the output must contain
CASES=(
  "bad pool name|$(pool '{"name": "bad name"}')|name must match"
  "duplicate pool names|{\"queue_worker_pools\": [{\"name\": \"a\", \"queues\": [\"q\"], \"numprocs\": 1}, {\"name\": \"a\", \"queues\": [\"r\"], \"numprocs\": 1}]}|pool names must be unique: 'a' is used 2 times"
  "no queues|$(pool '{"queues": []}')|queues must be a non-empty list"
  "bad queue name|$(pool '{"queues": ["ok", "not ok"]}')|queue name \"not ok\" must match"
  "numprocs 0|$(pool '{"numprocs": 0}')|numprocs must be between 1 and 64 (got 0)"
  "numprocs 65|$(pool '{"numprocs": 65}')|numprocs must be between 1 and 64 (got 65)"
  "numprocs over a raised limit|$(pool '{"numprocs": 101}' | python3 -c 'import json,sys; d=json.load(sys.stdin); d["queue_worker_max_numprocs"]=100; print(json.dumps(d))')|numprocs must be between 1 and 100 (got 101)"
  "timeout as a decimal string|$(pool '{"timeout": "2.5"}')|argument 'timeout' is of type str"
  "numprocs true|$(pool '{"numprocs": true}')|numprocs must be a whole number (got true)"
  "numprocs not a number|$(pool '{"numprocs": "four"}')|argument 'numprocs' is of type str"
  "tries 2.5|$(pool '{"tries": 2.5}')|argument 'tries' is of type float"
  "timeout 0|$(pool '{"timeout": 0}')|timeout must be a positive number of seconds (got 0)"
  "timeout negative|$(pool '{"timeout": -5}')|timeout must be a positive number of seconds (got -5)"
  "sleep 0|$(pool '{"sleep": 0}')|sleep must be a positive number of seconds"
  "memory negative|$(pool '{"memory": -1}')|memory must not be negative (got -1)"
  "startretries negative|$(pool '{"startretries": -1}')|startretries must not be negative (got -1)"
  "negative backoff|$(pool '{"backoff": [1, -1]}')|backoff must be seconds >= 0"
  "unknown pool key|$(pool '{"numproc": 3}')|queue_worker_pools.numproc"
  "pools not a list|{\"queue_worker_pools\": \"default\"}|queue_worker_pools"
  "no pools|{\"queue_worker_pools\": []}|queue_worker_pools is empty"
  "redis_port not a number|{\"redis_port\": \"abc\"}|role redis: argument 'redis_port'"
  "mysql_max_connections not a number|{\"mysql_max_connections\": \"lots\"}|role mysql: argument 'mysql_max_connections'"
  "bad redis eviction policy|{\"redis_maxmemory_policy\": \"drop-everything\"}|redis_maxmemory_policy"
  "redis_maxmemory not a size|{\"redis_maxmemory\": \"lots\"}|redis_maxmemory \"lots\" is not a size"
  "buffer pool not a size|{\"mysql_innodb_buffer_pool_size\": \"2 gigs\"}|mysql_innodb_buffer_pool_size \"2 gigs\" is not a size"
  "unsupported OS release|{\"preflight_supported_os\": {\"Debian\": [\"11\"]}}|is not one of Debian 11"
  "Python too old on a worker host|{\"preflight_min_python\": \"3.99\"}|needs Python 3.99 or newer, and /usr/bin/python3 is 3."
  "Redis too old on a Redis host|{\"preflight_min_redis\": \"99.0\"}|is installed, and the worker needs Redis 99.0 or newer"
  "no Python on a worker host|{\"queue_worker_python\": \"/nonexistent/python3\"}|/nonexistent/python3 is missing"
  "a role whose argument specs cannot be found|{\"preflight_role_groups\": {\"redis\": [\"redis\", \"no_such_role\"]}}|cannot find meta/argument_specs.yml of role no_such_role"
  "does not fit in memory|$(pool '{"name": "huge", "numprocs": 19, "memory": 4000000}')|19 processes, about"
)

managed_state() {  # checksums of the managed files and the snapshot list on the demo container
  docker exec queuefleet-demo sh -c 'sha256sum /etc/supervisor/supervisord.conf /etc/supervisor/conf.d/*.conf \
    /etc/redis/redis.conf /etc/mysql/mariadb.conf.d/60-queuefleet.cnf /opt/queuefleet/shared/queuefleet.env \
    /etc/logrotate.d/queuefleet 2>/dev/null; readlink /opt/queuefleet/current; ls /var/backups/queuefleet 2>/dev/null' | sha256sum
}

run_case() {  # run_case <mode> <name> <vars> <pattern>
  local mode="$1" name="$2" vars="$3" pattern="$4" out rc ok=true before="" after=""
  if [ "$mode" = demo ]; then
    before="$(managed_state)"
    out="$(ansible-playbook -i inventories/demo deploy.yml -l demo -e "$vars" 2>&1)"; rc=$?
    after="$(managed_state)"
    [ "$before" = "$after" ] || ok=false
    grep -q 'PLAY \[Redis queue servers\]' <<<"$out" && ok=false   # must stop before the first changing play
  else
    out="$(ansible-playbook -i tests/preflight-inventory.yml playbooks/preflight.yml -e "$vars" 2>&1)"; rc=$?
  fi
  [ "$rc" -ne 0 ] || ok=false
  grep -qF -- "$pattern" <<<"$out" || ok=false
  grep -q '^changed:' <<<"$out" && ok=false
  if $ok; then
    passed=$((passed + 1)); echo "PASSED  [$mode] $name"
  else
    failed=$((failed + 1)); echo "FAILED  [$mode] $name (rc=$rc, expected: $pattern${before:+, managed files unchanged: $([ "$before" = "$after" ] && echo yes || echo NO)})"
    echo "$out" | grep -v '^\s*$' | tail -n 20
  fi
}

# The baseline inventory passes.
if out="$(ansible-playbook -i tests/preflight-inventory.yml playbooks/preflight.yml 2>&1)"; then
  passed=$((passed + 1)); echo "PASSED  [local] valid inventory passes"
else
  failed=$((failed + 1)); echo "FAILED  [local] valid inventory should pass"; echo "$out" | tail -n 20
fi

# deploy.yml (which is queuefleet.fleet.deploy, playbooks/deploy.yml): guard, then preflight,
# then the snapshot staging, before any play that changes a host.
if "$ROOT/.venv/bin/python" - <<'PY'
import sys, yaml
root = yaml.safe_load(open("deploy.yml"))
assert [p.get("ansible.builtin.import_playbook") for p in root] == ["queuefleet.fleet.deploy"], root
plays = yaml.safe_load(open("playbooks/deploy.yml"))
names = [p.get("ansible.builtin.import_playbook", p.get("name")) for p in plays]
assert "preflight.yml" in names and "redis.yml" in names, names
assert names.index("preflight.yml") == 1, names           # right after the guard
assert names.index("preflight.yml") < names.index("Stage a config snapshot before anything changes") < names.index("redis.yml"), names
assert yaml.safe_load(open("playbooks/preflight.yml"))[0]["any_errors_fatal"] is True
PY
then passed=$((passed + 1)); echo "PASSED  [local] deploy.yml runs preflight, then snapshot staging, before redis"
else failed=$((failed + 1)); echo "FAILED  [local] deploy.yml play order"; fi

for case in "${CASES[@]}"; do
  IFS='|' read -r name vars pattern <<<"$case"
  run_case local "$name" "$vars" "$pattern"
done

# Two worker hosts on the default SQLite database: refused on both (each would keep its own
# failed jobs); the same two hosts with one shared database URL pass.
two_workers="$(mktemp --suffix=.yml)"; trap 'rm -f "$two_workers"' EXIT
printf 'workers:\n  hosts:\n    target2:\n' >"$two_workers"
out="$(ansible-playbook -i tests/preflight-inventory.yml -i "$two_workers" playbooks/preflight.yml 2>&1)"; rc=$?
if [ "$rc" -ne 0 ] && grep -qF '2 worker hosts (target, target2) would each keep their own SQLite failed-jobs file' <<<"$out" \
   && ! grep -q '^changed:' <<<"$out"; then
  passed=$((passed + 1)); echo "PASSED  [local] SQLite on two worker hosts is refused"
else
  failed=$((failed + 1)); echo "FAILED  [local] SQLite on two worker hosts should be refused (rc=$rc)"; echo "$out" | tail -n 20
fi
if out="$(ansible-playbook -i tests/preflight-inventory.yml -i "$two_workers" playbooks/preflight.yml \
          -e queue_worker_database_url=mysql+pymysql://app:secret@db/queuefleet 2>&1)"; then
  passed=$((passed + 1)); echo "PASSED  [local] two worker hosts sharing one database pass"
else
  failed=$((failed + 1)); echo "FAILED  [local] two worker hosts sharing one database should pass"; echo "$out" | tail -n 20
fi

if $DEMO; then
  if [ "$(docker inspect -f '{{.State.Running}}' queuefleet-demo 2>/dev/null)" != true ]; then
    echo "FAILED  [demo] the demo container is not running (make demo)"; failed=$((failed + 1))
  else
    for case in "${CASES[@]}"; do
      IFS='|' read -r name vars pattern <<<"$case"
      # The demo inventory has a single pool list; the capacity case needs a memory the host cannot have.
      run_case demo "$name" "$vars" "$pattern"
    done
  fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
