#!/usr/bin/env bash
# Run one molecule scenario end to end:
#   molecule test (destroy, syntax, create, converge, idempotence, verify)
#   then `converge -- --check --diff` on the converged host, which must report
#   changed=0, and finally destroy (also on failure).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SCENARIO="${1:-default}"
LOG="$ROOT/.state/molecule-$SCENARIO-check.log"
export PATH="$ROOT/.venv/bin:$PATH" PY_COLORS=0 ANSIBLE_FORCE_COLOR=0 NO_COLOR=1

cleanup() { molecule destroy -s "$SCENARIO" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== molecule test -s $SCENARIO (converge, idempotence, verify)"
molecule destroy -s "$SCENARIO" >/dev/null 2>&1 || true
molecule test -s "$SCENARIO" --destroy never

echo "== check mode on the converged host: ansible-playbook --check --diff must change nothing"
molecule converge -s "$SCENARIO" -- --check --diff >"$LOG" 2>&1 || { cat "$LOG"; exit 1; }
recaps="$(grep -A1 '^PLAY RECAP' "$LOG" | grep -E 'ok=[0-9]+' || true)"
echo "$recaps"
if [ -z "$recaps" ] || echo "$recaps" | grep -Eq 'changed=[1-9]|failed=[1-9]|unreachable=[1-9]'; then
  echo "check mode reported changes or failures on a converged host (full log: $LOG):" >&2
  grep -E '^(changed|failed|fatal)' -B3 "$LOG" >&2 || true
  exit 1
fi
echo "== check mode: no changes"
