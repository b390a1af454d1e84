#!/usr/bin/env bash
# Make a container engine and the systemd base image available for the
# molecule scenario and the demo.
#
#   1. If no Docker engine answers and we are root on Debian: install docker.io
#      (if missing) and start dockerd in the background, logging to
#      .state/dockerd.log, then wait until it answers.
#   2. For each supported Debian suite (QUEUEFLEET_SUITES, default "trixie
#      bookworm": Debian 13 and 12), if its base image
#      queuefleet/debian-systemd:<suite> is missing, build it: FROM debian:<suite>
#      when a registry is reachable, else debootstrap a minimal rootfs (cached as
#      .state/<suite>-rootfs.tar) and `docker import` it.
#
# Idempotent and quick when everything is already there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/.state"
SUITES="${QUEUEFLEET_SUITES:-trixie bookworm}"
# Set per suite by ensure_image.
SUITE=""
IMAGE=""
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Packages the base image needs to behave like a freshly installed server.
BASE_PACKAGES="systemd,systemd-sysv,dbus,python3,python3-apt,sudo,ca-certificates,procps,iproute2,gnupg"

mkdir -p "$STATE"
log() { printf '[engine] %s\n' "$*" >&2; }
die() { printf '[engine] ERROR: %s\n' "$*" >&2; exit 1; }

engine_answers() { docker info >/dev/null 2>&1; }

is_root_debian() { [ "$(id -u)" = 0 ] && [ -r /etc/debian_version ]; }

ensure_engine() {
  if engine_answers; then
    return 0
  fi
  is_root_debian || die "no Docker engine answers and this is not root on Debian: start Docker yourself"
  if ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >"$STATE/apt-docker.log" 2>&1 \
      || { apt-get update -q >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >"$STATE/apt-docker.log" 2>&1; } \
      || die "apt-get install docker.io failed, see $STATE/apt-docker.log"
  fi
  if pgrep -x dockerd >/dev/null 2>&1; then
    log "dockerd is running but not answering yet; waiting"
  else
    log "starting dockerd (log: $STATE/dockerd.log)"
    # setsid + nohup: dockerd outlives this script and the make process.
    setsid nohup dockerd >>"$STATE/dockerd.log" 2>&1 </dev/null &
  fi
  for _ in $(seq 1 90); do
    if engine_answers; then
      log "engine ready"
      return 0
    fi
    sleep 1
  done
  tail -n 30 "$STATE/dockerd.log" >&2 || true
  die "dockerd did not become ready within 90s (see $STATE/dockerd.log)"
}

registry_reachable() {
  # A pull with a short deadline: succeeds only where Docker Hub (or a mirror) answers.
  timeout 60 docker pull -q "debian:$SUITE" >/dev/null 2>&1
}

build_from_registry() {
  log "building $IMAGE FROM debian:$SUITE"
  docker build -q -t "$IMAGE" -f - "$ROOT/scripts" >/dev/null <<EOF
FROM debian:$SUITE
ENV container=docker
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    systemd systemd-sysv dbus python3 python3-apt sudo ca-certificates procps iproute2 gnupg \
 && apt-get clean && rm -rf /var/lib/apt/lists/* && touch -d @0 /var/lib/apt/lists \
 && systemctl mask getty.target console-getty.service systemd-logind.service \
    systemd-remount-fs.service dev-hugepages.mount sys-fs-fuse-connections.mount \
 && rm -f /etc/machine-id && touch /etc/machine-id
STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
EOF
}

build_rootfs_tarball() {
  local tarball="$STATE/$SUITE-rootfs.tar" dir="$STATE/$SUITE-rootfs"
  if [ -s "$tarball" ]; then
    log "using cached rootfs $tarball"
    return 0
  fi
  is_root_debian || die "debootstrap needs root on Debian"
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
  fi
  rm -rf "$dir"
  log "debootstrap $SUITE (a few minutes, log: $STATE/debootstrap-$SUITE.log)"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$dir" "$MIRROR" \
    >"$STATE/debootstrap-$SUITE.log" 2>&1 || { tail -n 30 "$STATE/debootstrap-$SUITE.log" >&2; die "debootstrap $SUITE failed"; }
  # Make the rootfs behave like the registry-built image.
  cat >"$dir/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
  for unit in getty.target console-getty.service systemd-logind.service \
              systemd-remount-fs.service dev-hugepages.mount sys-fs-fuse-connections.mount; do
    ln -sf /dev/null "$dir/etc/systemd/system/$unit"
  done
  rm -f "$dir/etc/machine-id" && touch "$dir/etc/machine-id"
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  # Empty package lists with a fresh mtime would make apt's cache_valid_time
  # skip the first `apt-get update`: date the (empty) lists as old.
  touch -d @0 "$dir/var/lib/apt/lists"
  tar -C "$dir" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
  rm -rf "$dir"
}

build_from_debootstrap() {
  build_rootfs_tarball
  log "importing $IMAGE from $STATE/$SUITE-rootfs.tar"
  docker import \
    --change 'ENV container=docker' \
    --change 'CMD ["/lib/systemd/systemd"]' \
    "$STATE/$SUITE-rootfs.tar" "$IMAGE" >/dev/null
}

ensure_image() {
  SUITE="$1"
  IMAGE="queuefleet/debian-systemd:$SUITE"
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    return 0
  fi
  if [ "${QUEUEFLEET_IMAGE_SOURCE:-auto}" != debootstrap ] && registry_reachable; then
    build_from_registry
  else
    log "no registry reachable: building from debootstrap"
    build_from_debootstrap
  fi
  log "image $IMAGE ready"
}

ensure_engine
for suite in $SUITES; do
  ensure_image "$suite"
done
