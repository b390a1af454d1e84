#!/usr/bin/env bash
# deploy.yml must stop before touching any host unless --limit selects exactly
# one environment. Runs against the real site inventory (example hosts that do
# not exist: any connection attempt would show as UNREACHABLE) and a local
# test inventory for the accepted cases.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH" ANSIBLE_CONFIG="$ROOT/ansible.cfg" ANSIBLE_FORCE_COLOR=0 NO_COLOR=1
passed=0 failed=0

expect() {  # expect refuse|accept "<pattern in output>" ansible-playbook args...
  local want="$1" pattern="$2"; shift 2
  local out rc
  out="$(ansible-playbook deploy.yml "$@" 2>&1)"; rc=$?
  local ok=true
  if [ "$want" = refuse ]; then
    [ "$rc" -ne 0 ] || ok=false
    grep -q 'UNREACHABLE\|Gathering Facts' <<<"$out" && ok=false
  else
    [ "$rc" -eq 0 ] || ok=false
  fi
  grep -q -- "$pattern" <<<"$out" || ok=false
  if $ok; then
    passed=$((passed + 1)); echo "PASSED  $want: deploy.yml $*"
  else
    failed=$((failed + 1)); echo "FAILED  $want: deploy.yml $* (rc=$rc)"; echo "$out" | tail -n 25
  fi
}

expect refuse "no --limit given"
expect refuse "spans the environments prod, staging" -l redis
expect refuse "spans the environments prod, staging" -l 'prod:staging'
expect refuse "spans the environments prod, staging" -l 'db1.prod.example.com,staging1.example.com'
expect refuse "no --limit given" -i tests/guard-inventory.yml
expect refuse "spans the environments alpha, beta" -i tests/guard-inventory.yml -l all
expect refuse "belong to no environment group" -i tests/guard-inventory.yml -l stray1
expect accept "Deploying to environment alpha: alpha1, alpha2" -i tests/guard-inventory.yml -l alpha
expect accept "Deploying to environment beta: beta1" -i tests/guard-inventory.yml -l beta1

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
