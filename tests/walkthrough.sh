#!/usr/bin/env bash
# docs/first-deploy.md, followed literally (issue 27), from a controller set up by that page alone.
#
# The harness only stands in for what the page assumes exists: three fresh Debian 13 servers
# (redis1, db1, worker1: systemd containers with sshd, a `deploy` user with sudo and our SSH key,
# at the page's private addresses 10.77.0.11-13 on a Docker network), and GitHub (the page's
# `git clone` copies this working tree). Then tests/walkthrough.py turns the page into a script:
# every ```sh block runs as written, every ```yaml file=... block is written to its file, in a clean
# environment: as a user of its own (qfwalk, created here: no root, no Docker group), with an empty
# home, a PATH without this project's venv, nothing from `make setup`.
# After the page's own steps (which include the post-deploy checks and a second deploy), it checks:
# the second deploy changed nothing, the first job ran, and the controller, which is not in the
# fleet, is refused by the firewall at Redis and MariaDB while SSH still answers.
#
# Also the collection as users get it (it was tests/consumer.sh): the built artifact holds the roles,
# playbooks, plugins and docs and none of the development material, and roles/redis/README.md's
# example playbook, a role used alone, runs on a fresh server.
#
#   bash tests/walkthrough.sh          # QUEUEFLEET_WALKTHROUGH_KEEP=1 keeps the containers
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGS="$ROOT/.state/walkthrough"
# Outside the checkout, so the walkthrough's own user can reach it whatever the checkout's path.
WORK="$(mktemp -d /tmp/queuefleet-walkthrough.XXXXXX)"
USER_NAME=qfwalk
NET=qf-walk
BASE="${QUEUEFLEET_BASE_IMAGE:-queuefleet/debian-systemd:trixie}"
IMAGE=queuefleet/walkthrough-server:trixie
declare -A ADDRESS=([redis1]=10.77.0.11 [db1]=10.77.0.12 [worker1]=10.77.0.13)
log() { printf '[walkthrough] %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
container() { echo "qfw-$1"; }

remove_servers() {
  for host in "${!ADDRESS[@]}" alone; do docker rm -f "$(container "$host")" >/dev/null 2>&1 || true; done
  docker network rm "$NET" >/dev/null 2>&1 || true
}
cleanup() {
  mkdir -p "$LOGS" && cp -f "$WORK"/*.log "$WORK"/*.sh "$LOGS"/ 2>/dev/null || true
  if [ "${QUEUEFLEET_WALKTHROUGH_KEEP:-0}" != 1 ]; then
    rm -rf "$WORK"
    remove_servers
  fi
}
trap cleanup EXIT
remove_servers

chmod 0755 "$WORK"
# ssh reads ~/.ssh from the user's passwd entry, not $HOME: the user's home is this run's.
id "$USER_NAME" >/dev/null 2>&1 || useradd --no-create-home --shell /bin/bash "$USER_NAME"
usermod -d "$WORK/home" "$USER_NAME"
mkdir -p "$WORK/home/.ssh"
ssh-keygen -q -t ed25519 -N '' -C walkthrough -f "$WORK/home/.ssh/id_ed25519"
chown -R "$USER_NAME:" "$WORK/home"
# GitHub, stood in for: this working tree (without what git ignores), as the page's clone gets it.
git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
  | tar -C "$ROOT" --null -T - --ignore-failed-read -czf "$WORK/github.tar.gz" 2>/dev/null
chmod 0644 "$WORK/github.tar.gz"

# --- stand-in servers --------------------------------------------------------------------------
# One image with what a fresh VPS has and the base image lacks (sshd, sudo), built once per base,
# and the one thing a container cannot do that a VM can (a drop-in, below).
base_id="$(docker image inspect -f '{{.Id}}' "$BASE")"
if [ "$(docker image inspect -f '{{index .Config.Labels "queuefleet.base"}}' "$IMAGE" 2>/dev/null || true)" != "$base_id" ]; then
  log "building $IMAGE (openssh-server and sudo on $BASE)"
  docker rm -f qfw-build >/dev/null 2>&1 || true
  docker run -d --name qfw-build "$BASE" sleep infinity >/dev/null
  docker exec qfw-build bash -c 'export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null &&
    apt-get install -y -q --no-install-recommends openssh-server sudo >/dev/null &&
    mkdir -p /etc/systemd/system/redis-server.service.d &&
    printf "%s\n" "# Stand-in servers are containers: there, systemd cannot mount the hidepid /proc of" \
      "# ProtectProc=invisible inside the user namespace of PrivateUsers=true (on a VM it can)." \
      "# The redis role keeps its default (PrivateUsers=true); this lifts only the /proc option." \
      "[Service]" "ProtectProc=default" >/etc/systemd/system/redis-server.service.d/zz-stand-in-container.conf' \
    || { docker rm -f qfw-build >/dev/null; fail "could not install openssh-server"; }
  docker commit -c "LABEL queuefleet.base=$base_id" -c 'CMD ["/lib/systemd/systemd"]' qfw-build "$IMAGE" >/dev/null
  docker rm -f qfw-build >/dev/null
fi

start_server() {  # NAME [ADDRESS]
  local name="$1" c
  c="$(container "$1")"
  docker run -d --name "$c" --hostname "$name" ${2:+--network "$NET" --ip "$2"} \
    --cap-add SYS_ADMIN --cap-add NET_ADMIN --security-opt seccomp=unconfined --cgroupns host \
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock --stop-signal SIGRTMIN+3 \
    "$IMAGE" /lib/systemd/systemd >/dev/null
}

prepare_server() {  # NAME: the deploy user, our key, sshd running
  local c
  c="$(container "$1")"
  for _ in $(seq 1 60); do
    case "$(docker exec "$c" systemctl is-system-running 2>/dev/null || true)" in running|degraded) break ;; esac
    sleep 1
  done
  docker exec -i "$c" bash -c 'useradd -m -s /bin/bash deploy && install -d -m 0700 -o deploy -g deploy ~deploy/.ssh &&
    cat > ~deploy/.ssh/authorized_keys && chown deploy: ~deploy/.ssh/authorized_keys &&
    echo "deploy ALL=(ALL) NOPASSWD:ALL" > /etc/sudoers.d/deploy && chmod 0440 /etc/sudoers.d/deploy &&
    systemctl enable --now ssh >/dev/null 2>&1' <"$WORK/home/.ssh/id_ed25519.pub"
}

log "servers redis1, db1, worker1 at ${ADDRESS[*]} on network $NET"
docker network create --subnet 10.77.0.0/24 "$NET" >/dev/null
for host in "${!ADDRESS[@]}"; do start_server "$host" "${ADDRESS[$host]}"; done
for host in "${!ADDRESS[@]}"; do prepare_server "$host"; done

# --- the page, as a script ---------------------------------------------------------------------
python3 "$ROOT/tests/walkthrough.py" "$ROOT/docs/first-deploy.md" >"$WORK/steps.sh"
cat >"$WORK/run.sh" <<EOF
set -euo pipefail
# GitHub, stood in for: the page's clone unpacks this working tree.
git() {
  if [ "\$1 \$2" = "clone https://github.com/queuefleet/queuefleet.git" ]; then
    mkdir -p "\$3" && tar -C "\$3" -xzf "$WORK/github.tar.gz"
  else
    command git "\$@"
  fi
}
cd "\$HOME"
. "$WORK/steps.sh"
EOF
# The page's last command is its second deploy: keep its output for the checks.
python3 - "$WORK/steps.sh" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
last = text.rfind("\nansible-playbook site.yml -l prod")
if last < 0:
    sys.exit("the page has no second `ansible-playbook site.yml -l prod`")
text = text[:last] + "\nansible-playbook site.yml -l prod 2>&1 | tee \"$WALK/last-deploy.log\"" + text[last + len("\nansible-playbook site.yml -l prod"):]
open(path, "w").write(text)
PY

log "following docs/first-deploy.md (log: $WORK/walkthrough.log)"
chmod 0644 "$WORK/run.sh" "$WORK/steps.sh"
touch "$WORK/walkthrough.log" "$WORK/last-deploy.log" && chown "$USER_NAME:" "$WORK/walkthrough.log" "$WORK/last-deploy.log"
runuser -u "$USER_NAME" -- env -i HOME="$WORK/home" USER="$USER_NAME" PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
  TERM=dumb WALK="$WORK" PIP_DISABLE_PIP_VERSION_CHECK=1 ANSIBLE_FORCE_COLOR=0 NO_COLOR=1 \
  bash --noprofile --norc "$WORK/run.sh" >"$WORK/walkthrough.log" 2>&1 \
  || { tail -n 60 "$WORK/walkthrough.log"; fail "a step of docs/first-deploy.md failed (log: $WORK/walkthrough.log)"; }

# --- what the page promised ----------------------------------------------------------------------
recap="$(grep -A4 'PLAY RECAP' "$WORK/last-deploy.log" | grep -E 'ok=')"
[ "$(grep -c 'ok=' <<<"$recap")" = 3 ] || fail "the second deploy's recap does not list the 3 servers: $recap"
if grep -Eq 'changed=[1-9]|failed=[1-9]|unreachable=[1-9]' <<<"$recap"; then fail "the second deploy changed something: $recap"; fi
executed="$(docker exec "$(container worker1)" bash -c \
  'set -a; . /opt/queuefleet/shared/queuefleet.env; /opt/queuefleet/current/bin/python -c "
import os, redis; print(b\"first-job\" in b\" \".join(redis.Redis.from_url(os.environ[\"QUEUEFLEET_REDIS_URL\"]).lrange(\"demo:executed\", 0, -1)))"')"
[ "$executed" = True ] || fail "the page's first job did not run"
grep -Eq 'QUEUEFLEET_REDIS_URL=redis://:[A-Za-z0-9%._~-]+@10\.77\.0\.11:6379/0' \
  <<<"$(docker exec "$(container worker1)" cat /opt/queuefleet/shared/queuefleet.env)" || fail "the Redis URL is not fully percent-encoded"
for probe in "10.77.0.11 6379" "10.77.0.12 3306"; do
  set -- $probe
  out="$(timeout 5 bash -c "exec 3<>/dev/tcp/$1/$2" 2>&1 && echo OPEN || true)"
  grep -qi refused <<<"$out" || fail "the controller (not in the fleet) reached $1:$2: $out"
done
timeout 5 bash -c 'exec 3<>/dev/tcp/10.77.0.11/22' || fail "SSH on redis1 no longer answers the controller"
log "the page works: 3 servers deployed over SSH, checks passed, the second deploy changed nothing, the first job ran, the firewall refuses the controller"

# --- the collection as users get it: its contents, and a role alone -------------------------------
artifact="$(ls "$WORK"/home/ops/dist/queuefleet-fleet-*.tar.gz)"
members="$(tar tzf "$artifact")"
for wanted in MANIFEST.json meta/runtime.yml playbooks/deploy.yml roles/redis/README.md roles/firewall/tasks/main.yml \
              plugins/action/converged.py plugins/modules/host_state.py templates/supervisor/service.conf.j2 docs/first-deploy.md; do
  grep -qx "$wanted" <<<"$members" || grep -qx "./$wanted" <<<"$members" || fail "$wanted is missing from $(basename "$artifact")"
done
for unwanted in worker/ tests/ molecule/ bench/ collections/ inventories/ .venv/ .state/ scripts/; do
  if grep -q "^\(\./\)\?$unwanted" <<<"$members"; then fail "$unwanted is in $(basename "$artifact")"; fi
done
log "the redis role alone (roles/redis/README.md's example) on a fresh server"
start_server alone && prepare_server alone
awk '/^```yaml/{on=1; next} /^```/{if (on) exit} on' "$ROOT/roles/redis/README.md" >"$WORK/home/ops/redis-alone.yml"
grep -q "queuefleet.fleet.redis" "$WORK/home/ops/redis-alone.yml" || fail "no example playbook in roles/redis/README.md"
password="$(openssl rand -base64 18)"
env -i HOME="$WORK/home" PATH="$WORK/home/.venvs/queuefleet/bin:/usr/bin:/bin" LANG=C.UTF-8 ANSIBLE_FORCE_COLOR=0 \
  bash -c "cd ~/ops && printf '[redis]\\n%s ansible_connection=community.docker.docker\\n' $(container alone) >alone.ini &&
           ansible-playbook -i alone.ini redis-alone.yml -e redis_alone_password='$password'" >"$WORK/redis-alone.log" 2>&1 \
  || { tail -n 30 "$WORK/redis-alone.log"; fail "the redis role alone"; }
pong="$(docker exec "$(container alone)" env REDISCLI_AUTH="$password" redis-cli ping)"
[ "$pong" = PONG ] || fail "redis after the role alone answered '$pong'"
log "passed"
