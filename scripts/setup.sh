#!/usr/bin/env bash
# One-command setup for a fresh Debian 12 controller (root, python3, git, make).
#   - system packages: docker.io, debootstrap, redis-server, mariadb-server,
#     mariadb-client (the worker test suite runs its own redis-server/mariadbd)
#   - .venv with the pinned controller toolchain (requirements-controller.txt)
#     and, when present, the worker package with its test extras
#   - the collections in requirements.yml
#   - .venv/bin/promtool, taken from Debian's prometheus package without
#     installing it (make test-rules)
# Idempotent; quick when nothing changed (stamp files under .state/).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STATE="$ROOT/.state"
VENV="$ROOT/.venv"
mkdir -p "$STATE"
log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

APT_PACKAGES=(docker.io debootstrap redis-server mariadb-server mariadb-client python3-venv chromium openssh-client)

# --- system packages ---------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing system packages (${missing[*]}); run as root or install them"
  log "apt-get install ${missing[*]} (log: $STATE/apt.log)"
  export DEBIAN_FRONTEND=noninteractive
  {
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  } >"$STATE/apt.log" 2>&1 || { tail -n 40 "$STATE/apt.log" >&2; die "apt-get failed"; }
fi

# --- controller venv ---------------------------------------------------------
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  log "creating $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  rm -f "$STATE"/pip-*.stamp "$STATE"/collections-*.stamp  # a new venv has nothing installed
fi

hash_inputs=(requirements-controller.txt requirements-deploy.txt)
if [ -f worker/pyproject.toml ]; then hash_inputs+=(worker/pyproject.toml); fi
stamp="$(cat "${hash_inputs[@]}" | sha256sum | cut -c1-16)"
stamp_file="$STATE/pip-$stamp.stamp"
if [ ! -f "$stamp_file" ] || [ ! -x "$VENV/bin/molecule" ]; then
  log "pip install -r requirements-controller.txt (log: $STATE/pip.log)"
  {
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -r requirements-controller.txt
    if [ -f worker/pyproject.toml ]; then
      "$VENV/bin/python" -m pip install -q -e './worker[test]'
    fi
  } >"$STATE/pip.log" 2>&1 || { grep -v '^WARNING: Location' "$STATE/pip.log" | tail -n 40 >&2; die "pip install failed"; }
  rm -f "$STATE"/pip-*.stamp
  touch "$stamp_file"
fi

# --- collections ----------------------------------------------------------------
coll_stamp="$STATE/collections-$( (cat requirements.yml; cat "$stamp_file") | sha256sum | cut -c1-16).stamp"
if [ ! -f "$coll_stamp" ]; then
  log "ansible-galaxy collection install -r requirements.yml"
  "$VENV/bin/ansible-galaxy" collection install -r requirements.yml >"$STATE/galaxy.log" 2>&1 \
    || { cat "$STATE/galaxy.log" >&2; die "ansible-galaxy collection install failed"; }
  rm -f "$STATE"/collections-*.stamp
  touch "$coll_stamp"
fi

# The repository is the collection queuefleet.fleet. ansible-lint and molecule (ansible-compat)
# build and install it into .ansible/collections/ unless a link to this checkout is already
# there, and then run that copy: a copy from an earlier run would test stale code. Link it.
own_link="$ROOT/.ansible/collections/ansible_collections/queuefleet/fleet"
if [ "$(readlink "$own_link" 2>/dev/null || true)" != "$ROOT" ]; then
  rm -rf "$own_link"
  mkdir -p "$(dirname "$own_link")"
  ln -s "$ROOT" "$own_link"
fi

# --- promtool (make test-rules) ------------------------------------------------
# Only the binary from Debian's prometheus package: installing the package would
# start a Prometheus server. Lives in the venv, so a new venv fetches it again.
if [ ! -x "$VENV/bin/promtool" ]; then
  log "promtool from the prometheus .deb into $VENV/bin (log: $STATE/promtool.log)"
  tmp="$(mktemp -d)"
  (
    cd "$tmp" &&
      { apt-get download prometheus || { apt-get update -q && apt-get download prometheus; }; } &&
      dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool &&
      install -m 0755 usr/bin/promtool "$VENV/bin/promtool"
  ) >"$STATE/promtool.log" 2>&1 || { rm -rf "$tmp"; tail -n 40 "$STATE/promtool.log" >&2; die "could not get promtool from the prometheus package"; }
  rm -rf "$tmp"
  "$VENV/bin/promtool" --version >>"$STATE/promtool.log" 2>&1 \
    || { rm -f "$VENV/bin/promtool"; tail -n 40 "$STATE/promtool.log" >&2; die "promtool does not run"; }
fi

log "ok ($("$VENV/bin/ansible" --version | awk 'NR==1'))"
