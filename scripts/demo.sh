#!/usr/bin/env bash
# The demo: deploy.yml onto a local disposable systemd container.
#   scripts/demo.sh up     create/start the container, deploy, print the report
#   scripts/demo.sh down   remove the container (and its generated secrets)
#   scripts/demo.sh start  only create/start the container and wait for systemd (bench/deploy)
# `make demo` runs setup and scripts/engine.sh first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
NAME="${QUEUEFLEET_DEMO_NAME:-queuefleet-demo}"
IMAGE="${QUEUEFLEET_BASE_IMAGE:-queuefleet/debian-systemd:trixie}"
LOG="$ROOT/.state/demo-deploy.log"
export PATH="$ROOT/.venv/bin:$PATH" ANSIBLE_CONFIG="$ROOT/ansible.cfg" ANSIBLE_FORCE_COLOR=0 NO_COLOR=1
log() { printf '[demo] %s\n' "$*" >&2; }

start() {
  mkdir -p "$ROOT/.state"
  if [ "$(docker inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null || true)" != true ]; then
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    log "starting container $NAME from $IMAGE"
    # systemd without --privileged: SYS_ADMIN, no seccomp filter, host cgroup namespace.
    docker run -d --name "$NAME" --hostname "$NAME" \
      --cap-add SYS_ADMIN --security-opt seccomp=unconfined --cgroupns host \
      -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock \
      "$IMAGE" /lib/systemd/systemd >/dev/null
  fi
  for _ in $(seq 1 60); do
    state="$(docker exec "$NAME" systemctl is-system-running 2>/dev/null || true)"
    case "$state" in running|degraded) break ;; esac
    sleep 1
  done
  log "systemd in $NAME: ${state:-unknown}"
}

up() {
  start

  log "ansible-playbook -i inventories/demo deploy.yml -l demo (full log: $LOG)"
  start=$(date +%s)
  if ! ansible-playbook -i inventories/demo deploy.yml -l demo >"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    log "deploy FAILED (full log: $LOG)"
    exit 1
  fi
  took=$(( $(date +%s) - start ))
  recap="$(grep -A1 '^PLAY RECAP' "$LOG" | grep -E 'ok=' | tail -n1 | tr -s ' ')"
  echo
  echo "deploy.yml finished in ${took}s: ${recap}"
  echo
  cat "$ROOT/.state/reports/$NAME.txt"
  log "pushing sample jobs (20 fast, 1 high priority, 2 slow, 1 failing) and waiting for the workers"
  docker exec -i "$NAME" /opt/queuefleet/current/bin/python - <"$ROOT/scripts/demo_jobs.py" 2>/dev/null \
    || { log "sample jobs FAILED"; docker exec -i "$NAME" /opt/queuefleet/current/bin/python - <"$ROOT/scripts/demo_jobs.py"; exit 1; }
  echo
  ip="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$NAME" | awk '{print $1}')"
  echo "Dashboard: open http://${ip:-<container address>}:9819/ on this machine; to retry or forget, log in with"
  echo "           the token in .state/demo-secrets/dashboard (cat it; it stays out of URLs)"
  echo "Explore: docker exec -it $NAME bash   |   Re-run: make demo (idempotent)   |   Remove: make demo-down"
}

down() {
  if docker rm -f "$NAME" >/dev/null 2>&1; then log "removed $NAME"; else log "$NAME was not running"; fi
  rm -rf "$ROOT/.state/demo-secrets" "$ROOT/.state/reports/$NAME.txt"
}

case "${1:-up}" in
  up) up ;;
  start) start ;;
  down) down ;;
  *) echo "usage: $0 up|down|start" >&2; exit 2 ;;
esac
