#!/usr/bin/env bash
# Bad inventory must make each role stop before anything changes. Runs the
# role in --check mode against localhost; each case must fail with a message
# naming the problem, and the failure must come from argument validation or
# one of the role's own assert tasks.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH" ANSIBLE_CONFIG="$ROOT/ansible.cfg" ANSIBLE_FORCE_COLOR=0 NO_COLOR=1
passed=0 failed=0

refuses() {  # refuses <role> "<pattern>" '<json extra vars>'
  local role="$1" pattern="$2" vars="$3" out rc ok=true
  out="$(ansible-playbook -i localhost, --check tests/validate-role.yml \
         -e role_under_test="$role" -e "$vars" 2>&1)"; rc=$?
  [ "$rc" -ne 0 ] || ok=false
  grep -q -- "$pattern" <<<"$out" || ok=false
  # Nothing may have reported a change (or a would-be change) before the refusal.
  grep -q '^changed:' <<<"$out" && ok=false
  if $ok; then
    passed=$((passed + 1)); echo "PASSED  $role refuses $vars"
  else
    failed=$((failed + 1)); echo "FAILED  $role should refuse $vars (rc=$rc)"; echo "$out" | tail -n 25
  fi
}

passes_validation() {  # passes_validation <role> '<json extra vars>': the role's own checks accept these values
  local role="$1" vars="$2" out
  out="$(ansible-playbook -i localhost, --check tests/validate-role.yml -e role_under_test="$role" -e "$vars" 2>&1)"
  if grep -q "Check the pools beyond what the argument specs express" <<<"$out" && ! grep -q "fatal:.*\(assert\|argument\)\|Assertion failed\|Validation of arguments failed" <<<"$out" \
     && grep -q "Create the worker user" <<<"$out"; then
    passed=$((passed + 1)); echo "PASSED  $role accepts $vars"
  else
    failed=$((failed + 1)); echo "FAILED  $role should accept $vars"; echo "$out" | grep -B2 -A12 "fatal" | head -n 30
  fi
}

refuses redis "redis_requirepass is empty" '{"redis_bind": ["0.0.0.0"]}'
refuses redis "redis_requirepass is empty" '{"redis_bind": ["127.0.0.1", "10.0.0.5"], "redis_requirepass": ""}'
refuses redis "redis_maxmemory_policy" '{"redis_maxmemory_policy": "drop-everything"}'
refuses redis "redis_appendonly" '{"redis_appendonly": "sometimes"}'
refuses mysql "needs a non-empty password" '{"mysql_users": [{"name": "app", "password": "", "priv": "app.*:ALL"}]}'
refuses mysql "password" '{"mysql_users": [{"name": "app", "priv": "app.*:ALL"}]}'
refuses mysql "mysql_max_connections" '{"mysql_max_connections": "lots"}'
refuses supervisor "without credentials" '{"supervisor_inet_http_server_enabled": true}'
refuses supervisor "supervisor_socket_mode" '{"supervisor_socket_mode": "0777"}'
refuses queue_worker "queue_worker_exporter_listen must be HOST:PORT" '{"queue_worker_jobs": ["app.jobs"], "queue_worker_pools": [{"name": "p", "queues": ["q"], "numprocs": 1}], "queue_worker_exporter_listen": "9818"}'
refuses queue_worker "map queue names to numbers" '{"queue_worker_jobs": ["app.jobs"], "queue_worker_pools": [{"name": "p", "queues": ["q"], "numprocs": 1}], "queue_worker_exporter_backlog": {"default": "lots"}}'
refuses queue_worker "must name the networks that may scrape" '{"queue_worker_jobs": ["app.jobs"], "queue_worker_pools": [{"name": "p", "queues": ["q"], "numprocs": 1}], "queue_worker_exporter_listen": "10.0.0.2:9818"}'
refuses queue_worker "must name the networks that may scrape" '{"queue_worker_jobs": ["app.jobs"], "queue_worker_pools": [{"name": "p", "queues": ["q"], "numprocs": 1}], "queue_worker_exporter_listen": "10.0.0.2:9818", "queue_worker_exporter_allow": ["10.0.0.0/99"]}'

# The role and preflight share one pool model (the queuefleet.fleet.pools filter): the same checks, the same words.
# The worker package must be a wheel, an sdist or a source tree: anything else is named.
refuses queue_worker "pyproject.toml is neither a wheel (.whl) nor an sdist" '{"queue_worker_jobs": ["app.jobs"], "queue_worker_pools": [{"name": "p", "queues": ["q"], "numprocs": 1}], "queue_worker_package_src": "'"$ROOT"'/worker/pyproject.toml"}'
refuses queue_worker "queue_worker_pools is empty: a worker host needs at least one pool" '{"queue_worker_jobs": ["app.jobs"]}'
refuses queue_worker "pool #1 'p': sleep must be a positive number of seconds" '{"queue_worker_jobs": ["app.jobs"], "queue_worker_pools": [{"name": "p", "queues": ["q"], "numprocs": 1, "sleep": 0}]}'
# The autoscaler's settings are checked before anything changes, not by a FATAL program after the switch.
refuses queue_worker "queue_worker_autoscale_interval must be seconds > 0 and <= 30" '{"queue_worker_jobs": ["app.jobs"], "queue_worker_pools": [{"name": "p", "queues": ["q"], "autoscale": {"min": 1, "max": 2}}], "queue_worker_autoscale_interval": 0}'
refuses queue_worker "unix:///path/to/supervisor.sock or http://host:port (got /run/supervisor.sock)" '{"queue_worker_jobs": ["app.jobs"], "queue_worker_pools": [{"name": "p", "queues": ["q"], "autoscale": {"min": 1, "max": 2}}], "queue_worker_autoscale_supervisor_url": "/run/supervisor.sock"}'
# The role and preflight share one numprocs limit (queue_worker_max_numprocs): raised, it holds in both.
refuses queue_worker "numprocs must be between 1 and 100 (got 101)" '{"queue_worker_jobs": ["app.jobs"], "queue_worker_max_numprocs": 100, "queue_worker_pools": [{"name": "p", "queues": ["q"], "numprocs": 101}]}'
passes_validation queue_worker '{"queue_worker_jobs": ["app.jobs"], "queue_worker_max_numprocs": 100, "queue_worker_pools": [{"name": "p", "queues": ["q"], "numprocs": 80}]}'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
