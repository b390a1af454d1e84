#!/usr/bin/env bash
# The collection as its users get it: build queuefleet.fleet with `ansible-galaxy collection
# build`, install the artifact into an empty project directory, and from there, with nothing of
# this repository on any Ansible path:
#   1. run roles/redis/README.md's example playbook (a role used alone, with only its own
#      variables) against a fresh Debian 13 container, and check that Redis answers;
#   2. deploy the whole stack onto that container from a small playbook that only imports
#      queuefleet.fleet.deploy, with the worker package and the app given as built wheels; the
#      deploy includes the post-deploy checks (canary job per pool), so it fails if they fail;
#   3. check the running release holds those very wheels, and that a second deploy, run as
#      `ansible-playbook queuefleet.fleet.deploy` (the collection's playbook by its name),
#      changes nothing.
# The container is removed at the end (QUEUEFLEET_CONSUMER_KEEP=1 keeps it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME="${QUEUEFLEET_CONSUMER_NAME:-queuefleet-consumer}"
IMAGE="${QUEUEFLEET_BASE_IMAGE:-queuefleet/debian-systemd:trixie}"
WORK="$ROOT/.state/consumer"
PROJECT="$WORK/project"
export PATH="$ROOT/.venv/bin:$PATH" ANSIBLE_FORCE_COLOR=0 NO_COLOR=1
unset ANSIBLE_CONFIG ANSIBLE_COLLECTIONS_PATH ANSIBLE_COLLECTIONS_PATHS ANSIBLE_ROLES_PATH
log() { printf '[consumer] %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

cleanup() {
  [ "${QUEUEFLEET_CONSUMER_KEEP:-0}" = 1 ] || docker rm -f "$NAME" >/dev/null 2>&1 || true
}
trap cleanup EXIT

rm -rf "$WORK" && mkdir -p "$WORK/dist" "$PROJECT"

log "building the collection and the two wheels (the worker package, the demo app)"
(cd "$ROOT" && ansible-galaxy collection build --force --output-path "$WORK/dist" >/dev/null)
artifact="$(ls "$WORK"/dist/queuefleet-fleet-*.tar.gz)"
members="$(tar tzf "$artifact")"
for wanted in galaxy.yml MANIFEST.json meta/runtime.yml playbooks/deploy.yml roles/redis/README.md \
              roles/queue_worker/tasks/main.yml plugins/action/converged.py plugins/filter/pools.py \
              plugins/modules/config_backup.py templates/supervisor/service.conf.j2; do
  grep -qx "$wanted" <<<"$members" || grep -qx "./$wanted" <<<"$members" || [ "$wanted" = galaxy.yml ] \
    || fail "$wanted is missing from $(basename "$artifact")"
done
for unwanted in worker/ tests/ molecule/ bench/ collections/ inventories/ .venv/ .state/ scripts/; do
  if grep -q "^\(\./\)\?$unwanted" <<<"$members"; then fail "$unwanted is in $(basename "$artifact")"; fi
done
python -m pip wheel -q --no-deps --wheel-dir "$WORK/dist" "$ROOT/worker" "$ROOT/examples/demo-app" 2>/dev/null
worker_wheel="$(ls "$WORK"/dist/queuefleet-[0-9]*.whl)"
app_wheel="$(ls "$WORK"/dist/queuefleet_demo-*.whl)"

log "installing $(basename "$artifact") into an empty project directory"
cd "$PROJECT"
cat >ansible.cfg <<'EOF'
[defaults]
collections_path = ./collections
inventory = hosts.yml
interpreter_python = auto_silent
[connection]
pipelining = True
EOF
# --no-deps: its one dependency, community.mysql, comes with the ansible package (no Galaxy here).
ansible-galaxy collection install --no-deps -p ./collections "$artifact" >/dev/null
secret() { python -c 'import secrets; print(secrets.token_urlsafe(18))'; }
redis_password="$(secret)" mysql_password="$(secret)"
cat >"$PROJECT/hosts.yml" <<EOF
all:
  vars:
    queuefleet_environments: [shop]
  children:
    shop:
      hosts:
        $NAME:
          ansible_connection: community.docker.docker
    redis:
      hosts:
        $NAME:
    mysql:
      hosts:
        $NAME:
    workers:
      hosts:
        $NAME:
EOF
mkdir -p "$PROJECT/group_vars"
cat >"$PROJECT/group_vars/all.yml" <<EOF
redis_requirepass: "$redis_password"
redis_maxmemory: 96mb
redis_systemd_private_users: false  # containers have no user namespaces
mysql_innodb_buffer_pool_size: 64M
mysql_databases: [{name: shop}]
mysql_users:
  - {name: shop, host: 127.0.0.1, password: "$mysql_password", priv: "shop.*:SELECT,INSERT,UPDATE,DELETE,CREATE,INDEX,ALTER"}
queue_worker_package_src: "$worker_wheel"
queue_worker_app_packages:
  - {name: queuefleet-demo, src: "$app_wheel"}
queue_worker_jobs: [queuefleet_demo.jobs]
queue_worker_redis_url: "redis://:$redis_password@127.0.0.1:6379/0"
queue_worker_database_url: "mysql+pymysql://shop:$mysql_password@127.0.0.1:3306/shop"
queue_worker_pools:
  - {name: default, queues: [high, default], numprocs: 2}
  - {name: slow, queues: [slow], numprocs: 1, timeout: 120}
queuefleet_report_dir: "$WORK/reports"
EOF
cat >"$PROJECT/site.yml" <<'EOF'
---
- name: Deploy queuefleet with the installed collection
  ansible.builtin.import_playbook: queuefleet.fleet.deploy
EOF
# The README's example of the redis role used alone, as written there.
awk '/^```yaml/{on=1; next} /^```/{if (on) exit} on' "$ROOT/roles/redis/README.md" >"$PROJECT/redis-alone.yml"
grep -q "queuefleet.fleet.redis" "$PROJECT/redis-alone.yml" || fail "no example playbook in roles/redis/README.md"

found="$(ansible-galaxy collection list queuefleet.fleet 2>/dev/null | grep -E '^# ' || true)"
[ "$found" = "# $PROJECT/collections/ansible_collections" ] || fail "queuefleet.fleet must come from the project alone, found in: $found"

log "starting container $NAME from $IMAGE"
docker rm -f "$NAME" >/dev/null 2>&1 || true
docker run -d --name "$NAME" --hostname "$NAME" \
  --cap-add SYS_ADMIN --security-opt seccomp=unconfined --cgroupns host \
  -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock \
  "$IMAGE" /lib/systemd/systemd >/dev/null
for _ in $(seq 1 60); do
  case "$(docker exec "$NAME" systemctl is-system-running 2>/dev/null || true)" in running|degraded) break ;; esac
  sleep 1
done

log "1. the redis role alone (roles/redis/README.md's example)"
ansible-playbook redis-alone.yml -e redis_alone_password="$redis_password" >"$WORK/redis-alone.log" 2>&1 \
  || { tail -n 30 "$WORK/redis-alone.log"; fail "the redis role alone"; }
pong="$(docker exec "$NAME" redis-cli --no-auth-warning -a "$redis_password" ping)"
[ "$pong" = PONG ] || fail "redis after the role alone answered '$pong'"

log "2. ansible-playbook site.yml -l shop (imports queuefleet.fleet.deploy)"
ansible-playbook site.yml -l shop >"$WORK/deploy.log" 2>&1 || { tail -n 40 "$WORK/deploy.log"; fail "the deploy"; }
grep -q "Run the post-deploy checks\|postdeploy_check" "$WORK/deploy.log" || fail "the deploy ran no post-deploy checks"
grep -qE "^$NAME +: .*failed=0" "$WORK/deploy.log" || fail "the deploy's recap has failures"

log "3. the release holds the wheels given; ansible-playbook queuefleet.fleet.deploy -l shop changes nothing"
version="$(docker exec "$NAME" /opt/queuefleet/current/bin/python -c 'import importlib.metadata as m; print(m.version("queuefleet"))')"
[[ "$(basename "$worker_wheel")" == "queuefleet-$version-"* ]] || fail "release runs queuefleet $version, not $(basename "$worker_wheel")"
running="$(docker exec "$NAME" supervisorctl status | grep -c RUNNING)"
[ "$running" -ge 3 ] || fail "$running supervisor programs run, expected the 3 pool processes at least"
ansible-playbook -v queuefleet.fleet.deploy -l shop >"$WORK/redeploy.log" 2>&1 || { tail -n 40 "$WORK/redeploy.log"; fail "the second deploy"; }
grep -qE "^$NAME +: .*changed=0 .*failed=0" "$WORK/redeploy.log" || { grep -A3 "PLAY RECAP" "$WORK/redeploy.log"; fail "the second deploy changed something"; }
# The installed collection's roles skip themselves when converged, as the clone's do.
skipped="$(grep -c "End the role, a full run would change nothing" "$WORK/redeploy.log" || true)"
[ "$skipped" -eq 5 ] || fail "the second deploy skipped $skipped of the 5 roles (redis, mysql, supervisor, queue_worker, logrotate)"
[ -s "$WORK/reports/$NAME.txt" ] || fail "no report in queuefleet_report_dir"
log "passed: built, installed, the redis role alone, deploy with checks, release $version, re-deploy changed=0 with every role skipped"
