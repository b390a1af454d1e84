#!/usr/bin/env bash
# Run one molecule scenario end to end:
#   destroy, syntax, create, converge, idempotence, verify (molecule's test sequence, step
#   by step), then `converge -- --check --diff` on the converged host, which must report
#   changed=0, and finally destroy (also on failure).
# Idempotence is checked twice: with the converged-role skip off (QUEUEFLEET_CONVERGED_SKIP=false:
# every task of every role runs and must change nothing) and on, as users run it (each role must
# find the host as its full run left it and end after its probe). The check-mode run turns it off.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SCENARIO="${1:-default}"
LOG="$ROOT/.state/molecule-$SCENARIO-check.log"
export PATH="$ROOT/.venv/bin:$PATH" PY_COLORS=0 ANSIBLE_FORCE_COLOR=0 NO_COLOR=1

cleanup() { molecule destroy -s "$SCENARIO" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== molecule -s $SCENARIO: syntax, create, converge, idempotence (every task), verify"
molecule destroy -s "$SCENARIO" >/dev/null 2>&1 || true
molecule syntax -s "$SCENARIO"
molecule create -s "$SCENARIO"
molecule converge -s "$SCENARIO"
QUEUEFLEET_CONVERGED_SKIP=false molecule idempotence -s "$SCENARIO"
echo "== idempotence with the converged-role skip on"
molecule idempotence -s "$SCENARIO"
molecule verify -s "$SCENARIO"

echo "== check mode on the converged host: ansible-playbook --check --diff must change nothing"
QUEUEFLEET_CONVERGED_SKIP=false molecule converge -s "$SCENARIO" -- --check --diff >"$LOG" 2>&1 || { cat "$LOG"; exit 1; }
recaps="$(grep -A1 '^PLAY RECAP' "$LOG" | grep -E 'ok=[0-9]+' || true)"
echo "$recaps"
if [ -z "$recaps" ] || echo "$recaps" | grep -Eq 'changed=[1-9]|failed=[1-9]|unreachable=[1-9]'; then
  echo "check mode reported changes or failures on a converged host (full log: $LOG):" >&2
  grep -E '^(changed|failed|fatal)' -B3 "$LOG" >&2 || true
  exit 1
fi
echo "== check mode: no changes"
