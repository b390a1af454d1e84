#!/usr/bin/env bash
# Release pruning keeps the release `current` points at even when queue_worker_root lies
# behind a symlink (find reports paths through the link, stat resolves current's target).
# Runs roles/queue_worker/tasks/prune.yml on the controller against a scratch tree.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH" ANSIBLE_CONFIG="$ROOT/ansible.cfg" ANSIBLE_FORCE_COLOR=0 NO_COLOR=1
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# /real/queuefleet holds the releases; /link -> /real, and the role is given /link/queuefleet.
mkdir -p "$tmp/real/queuefleet/releases" "$tmp/real/queuefleet/wheelhouse"
ln -s "$tmp/real" "$tmp/link"
for i in 1 2 3 4; do
  mkdir "$tmp/real/queuefleet/releases/r$i" "$tmp/real/queuefleet/wheelhouse/r$i"
  touch -d "2026-01-0$i" "$tmp/real/queuefleet/releases/r$i"
done
ln -s "$tmp/link/queuefleet/releases/r1" "$tmp/real/queuefleet/current"  # current: the oldest

out="$(ansible-playbook -i localhost, -c local tests/prune-release.yml -e "queue_worker_root=$tmp/link/queuefleet" \
       -e ansible_python_interpreter="$ROOT/.venv/bin/python" 2>&1)" || { echo "$out" | tail -n 30; echo "FAILED  prune playbook failed"; exit 1; }
left="$(cd "$tmp/real/queuefleet/releases" && echo *)"
if [ "$left" = "r1 r3 r4" ] && [ ! -e "$tmp/real/queuefleet/wheelhouse/r2" ] && [ -e "$tmp/real/queuefleet/wheelhouse/r1" ]; then
  echo "PASSED  pruning behind a symlinked root kept current (r1) and the 2 newest, removed r2 and its wheelhouse"
else
  echo "FAILED  releases left: $left (expected r1 r3 r4: current and the 2 newest)"
  exit 1
fi
