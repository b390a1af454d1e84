#!/usr/bin/env bash
# `ansible-playbook deploy.yml --check --diff` against a fresh host of each supported Debian
# release (issue 11): it must complete, list what a deploy would change (the packages of every
# role), and change nothing on the host. A converged host's check run (changed=0) is covered by
# scripts/molecule-test.sh. The host is a throwaway container, not the demo's: the demo
# inventory is pointed at it with ansible_host.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH" ANSIBLE_CONFIG="$ROOT/ansible.cfg" ANSIBLE_FORCE_COLOR=0 NO_COLOR=1
NAME=queuefleet-checkfresh
passed=0 failed=0
trap 'docker rm -f "$NAME" >/dev/null 2>&1 || true' EXIT

check() {  # check <description> <command...>: one assertion
  local what="$1"; shift
  if "$@" >/dev/null 2>&1; then passed=$((passed + 1)); echo "PASSED  $what"
  else failed=$((failed + 1)); echo "FAILED  $what"; fi
}

for suite in ${QUEUEFLEET_SUITES:-trixie bookworm}; do
  docker rm -f "$NAME" >/dev/null 2>&1 || true
  QUEUEFLEET_DEMO_NAME="$NAME" QUEUEFLEET_BASE_IMAGE="queuefleet/debian-systemd:$suite" bash scripts/demo.sh start
  log="$ROOT/.state/check-fresh-$suite.log"
  ansible-playbook -i inventories/demo deploy.yml -l demo -e ansible_host="$NAME" --check --diff >"$log" 2>&1
  rc=$?
  recap="$(grep -A1 '^PLAY RECAP' "$log" | grep -E 'ok=[0-9]+' | tail -n1)"
  echo "[$suite] $recap"
  check "[$suite] --check --diff on a fresh host completes (log: $log)" test "$rc" -eq 0
  check "[$suite] it reports changes, no failure" grep -Eq 'changed=[1-9][0-9]* .*failed=0' <<<"$recap"
  for what in "redis-server, redis-tools would be installed" "mariadb-server, mariadb-client, python3-pymysql would be installed" \
              "supervisor would be installed" "check mode: a deploy would install python3, python3-venv" "logrotate would be installed"; do
    check "[$suite] it says: $what" grep -qF "$what" "$log"
  done
  check "[$suite] the diff shows the redis unit drop-in it would write" grep -qF "+PrivateUsers=false" "$log"
  check "[$suite] nothing was installed" bash -c "! docker exec $NAME dpkg-query -W redis-server mariadb-server supervisor"
  check "[$suite] no user, layout or drop-in was created" \
    docker exec "$NAME" sh -c '! getent passwd queuefleet && ! test -e /opt/queuefleet && ! test -e /etc/systemd/system/redis-server.service.d'
  if [ "$rc" -ne 0 ]; then grep -E 'fatal|ERROR' -A8 "$log" | head -n 30; fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
