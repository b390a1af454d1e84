# Sourced by bench/run and bench/faults: Debian's redis-server, bench/.venv with the pinned
# peers (requirements.txt) and the local worker package, each reinstalled only when it changed.
# Expects HERE, ROOT, VENV, PY, REQ, WORKER and log() from the caller.

# 1. redis-server from Debian's package
if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
    log "redis-server missing: installing Debian's redis-server"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y redis-server || { $SUDO apt-get update && $SUDO apt-get install -y redis-server; }
fi

# 2. the bench venv
if [ ! -x "$VENV/bin/python" ] || [ ! -x "$VENV/bin/pip" ]; then
    log "creating $VENV"
    rm -rf "$VENV"
    if ! "$PY" -m venv "$VENV"; then
        # Debian's python3 needs python3-venv for ensurepip
        log "python3 -m venv failed: installing Debian's python3-venv"
        rm -rf "$VENV"
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get install -y python3-venv || { $SUDO apt-get update && $SUDO apt-get install -y python3-venv; }
        "$PY" -m venv "$VENV"
    fi
fi
pyver="$("$VENV/bin/python" -c 'import sys; print(sys.version)')"

req_hash="$( { cat "$REQ"; echo "$pyver"; } | sha256sum | cut -d' ' -f1)"
req_stamp="$VENV/.bench-requirements.sha256"
if [ "$(cat "$req_stamp" 2>/dev/null || true)" != "$req_hash" ]; then
    log "installing pinned peers from bench/requirements.txt"
    rm -f "$req_stamp" "$VENV/.bench-worker.sha256"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
    echo "$req_hash" > "$req_stamp"
else
    log "peers up to date (requirements.txt unchanged)"
fi

# 3. the local queuefleet package, rebuilt whenever its sources change. Built from a
#    copy so that nothing (build/, egg-info) is written into worker/.
worker_stamp="$VENV/.bench-worker.sha256"
if [ -f "$WORKER/pyproject.toml" ]; then
    worker_hash="$(cd "$WORKER" && find . -path ./tests -prune -o -type f \
        \( -name '*.py' -o -name '*.lua' -o -name '*.toml' -o -name '*.cfg' -o -name '*.md' -o -name '*.typed' \) \
        -not -path '*egg-info*' -not -path './build/*' -print | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$worker_stamp" 2>/dev/null || true)" != "$worker_hash" ]; then
        log "installing the local worker package (worker/)"
        rm -f "$worker_stamp"
        build="$(mktemp -d)"
        trap 'rm -rf "$build" "$build.constraints.txt"' EXIT
        (cd "$WORKER" && tar --exclude='./build' --exclude='*.egg-info' --exclude='__pycache__' \
            --exclude='./.venv' --exclude='./tests' -cf - .) | tar -xf - -C "$build"
        # constraints = the pins without extras (pip refuses extras in a constraints file)
        sed -e 's/\[[^]]*\]//' "$REQ" > "$build.constraints.txt"
        # The worker's dependencies are the extras `worker` and `mysql` (the core is the producer only).
        if "$VENV/bin/pip" install --quiet --disable-pip-version-check -c "$build.constraints.txt" "$build[worker,mysql]" \
           && "$VENV/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps "$build"; then
            echo "$worker_hash" > "$worker_stamp"
            # which sources were built, for RESULTS.md
            src="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
            if [ -n "$(git -C "$ROOT" status --porcelain -- worker 2>/dev/null)" ]; then
                src="$src plus uncommitted changes in worker/"
            fi
            echo "commit $src (installed $(date -u '+%Y-%m-%d %H:%M UTC'))" > "$VENV/.bench-worker-source"
        else
            log "WARNING: pip install ./worker failed; the queuefleet row will error"
            "$VENV/bin/pip" uninstall -y --quiet queuefleet >/dev/null 2>&1 || true
            rm -f "$VENV/.bench-worker-source"
        fi
    else
        log "queuefleet up to date (worker/ unchanged)"
    fi
else
    log "WARNING: $WORKER/pyproject.toml not found; the queuefleet row will error"
    "$VENV/bin/pip" uninstall -y --quiet queuefleet >/dev/null 2>&1 || true
    rm -f "$worker_stamp"
fi

