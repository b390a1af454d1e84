#!/usr/bin/env bash
# Release pruning keeps the release `current` points at even when queue_worker_root lies
# behind a symlink (find reports paths through the link, stat resolves current's target).
# Runs roles/queue_worker/tasks/prune.yml on the controller against a scratch tree; then the
# rollback's choice and switch (rollback_target.yml, switch.yml) against the same tree.
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

# An automatic rollback inside a deploy: current was r3 before the deploy switched it to r4; the
# rollback must move it back to r3 (the deploy's own earlier reading of current says r3 already,
# so a switch that trusted it would stay on r4), then a plain rollback goes on to r1, the release
# installed before r3 that pruning left.
rm -f "$tmp/real/queuefleet/current"
ln -s "$tmp/link/queuefleet/releases/r3" "$tmp/real/queuefleet/current"
for r in r1 r3 r4; do touch "$tmp/real/queuefleet/releases/$r/.complete"; done
touch -d "2026-01-01" "$tmp/real/queuefleet/releases/r1/.complete"
touch -d "2026-01-03" "$tmp/real/queuefleet/releases/r3/.complete"
touch -d "2026-01-04" "$tmp/real/queuefleet/releases/r4/.complete"
out="$(ansible-playbook -i localhost, -c local tests/rollback-release.yml -e "queue_worker_root=$tmp/link/queuefleet" \
       -e ansible_python_interpreter="$ROOT/.venv/bin/python" -v 2>&1)" || { echo "$out" | tail -n 30; echo "FAILED  rollback playbook failed"; exit 1; }
now="$(basename "$(readlink "$tmp/real/queuefleet/current")")"
# The switches, in order, from the -v output: the deploy's, the automatic rollback's, the plain one's.
switched="$(echo "$out" | grep -oE '^ +src: .*releases/r[0-9]+$' | grep -oE 'r[0-9]+$' | tr '\n' ' ')"
if [ "$switched" = "r4 r3 r1 " ] && [ "$now" = "r1" ]; then
  echo "PASSED  an automatic rollback inside the deploy switched r4 back to r3, and a plain rollback went on to r1"
else
  echo "FAILED  current moved through: '$switched' and ends on $now (expected r4 r3 r1, ending on r1)"
  exit 1
fi
