#!/usr/bin/python
"""Snapshots of the configuration files queuefleet manages (see roles/config_backup)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: config_backup
short_description: Stage, commit, list and restore snapshots of managed config files
description:
  - C(stage) tars the files matching O(paths) into a staging area (not a snapshot yet). A staged tarball left
    by an earlier run that stopped half-way is first promoted to a snapshot when the files changed since.
  - C(commit) compares the files with the staged checksums; if anything differs the staged tarball becomes
    O(dir)/<UTC time>-<release>.tar.gz (mode 0600) and the oldest snapshots beyond O(keep) are removed;
    otherwise the staged tarball is deleted. A run that changed nothing therefore leaves no snapshot.
  - C(list) returns the snapshots, newest first. C(restore) writes back every file of a snapshot whose bytes,
    mode or owner differ, removes files matching a wildcard pattern of the snapshot that it did not hold, and
    returns the paths it touched.
options:
  action:
    description: What to do.
    type: str
    required: true
    choices: [stage, commit, list, restore]
  dir:
    description: Directory of the snapshots (created with mode 0700).
    type: path
    default: /var/backups/queuefleet
  paths:
    description: Files or glob patterns to snapshot (stage).
    type: list
    elements: str
    default: []
  release:
    description: Release id written into the snapshot name (stage).
    type: str
    default: ""
  keep:
    description: Snapshots kept by commit (newest first).
    type: int
    default: 10
  name:
    description: Snapshot to restore, a file name (with or without .tar.gz) or C(latest).
    type: str
    default: latest
version_added: 1.0.0
author: queuefleet (@queuefleet)
notes:
  - Needs root to read and restore the files; the snapshots hold passwords (mode 0600, O(dir) mode 0700).
  - Check mode writes nothing; C(commit) and C(restore) report what they would do.
"""

EXAMPLES = r"""
- name: Stage a snapshot before a change
  queuefleet.fleet.config_backup:
    action: stage
    paths: [/etc/nginx/nginx.conf, /etc/nginx/sites-enabled/*]
    release: "{{ current_release }}"

- name: Keep it if the run changed one of the files
  queuefleet.fleet.config_backup:
    action: commit
    keep: 10
  register: snapshot

- name: Put back the newest snapshot
  queuefleet.fleet.config_backup:
    action: restore
    name: latest
  register: restored
  diff: false  # the files hold passwords
"""

RETURN = r"""
staged:
  description: The staged tarball (C(stage)).
  type: str
  returned: when O(action=stage), outside check mode
files:
  description: The files the staged tarball holds (C(stage)).
  type: list
  elements: str
  returned: when O(action=stage), outside check mode
promoted:
  description: The snapshot an unfinished earlier run's staged tarball was kept as (C(stage)), else null.
  type: str
  returned: when O(action=stage)
snapshot:
  description: The snapshot kept (C(commit); null when nothing changed) or restored (C(restore)).
  type: str
  returned: when O(action=commit) or O(action=restore)
  sample: 20261123T014836Z-b004d8e441bb.tar.gz
differs:
  description: The files that changed since the stage (C(commit)).
  type: list
  elements: str
  returned: when O(action=commit)
pruned:
  description: The oldest snapshots removed beyond O(keep).
  type: list
  elements: str
  returned: when O(action=stage) or O(action=commit)
snapshots:
  description: The snapshots, newest first, each with its name, size in bytes, release and files (C(list)).
  type: list
  elements: dict
  returned: when O(action=list)
release:
  description: The release that ran when the restored snapshot was taken (C(restore)).
  type: str
  returned: when O(action=restore)
restored:
  description: The files written back (C(restore)).
  type: list
  elements: str
  returned: when O(action=restore)
removed:
  description: Files matching a wildcard pattern of the snapshot that it did not hold, removed (C(restore)).
  type: list
  elements: str
  returned: when O(action=restore)
touched:
  description: RV(restored) and RV(removed) together, sorted (C(restore)); what the caller reloads.
  type: list
  elements: str
  returned: when O(action=restore)
"""

import fnmatch
import glob
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

MANIFEST = "queuefleet-manifest.json"
SUFFIX = ".tar.gz"
NAME_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z(-[0-9]+)?-[A-Za-z0-9_.-]+\.tar\.gz$")


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(65536), b""):
            digest.update(block)
    return digest.hexdigest()


def scan(patterns):
    """path -> {sha256, mode, uid, gid} of every regular file matching the patterns."""
    files = {}
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]:
            if os.path.isfile(path) and not os.path.islink(path):
                st = os.stat(path)
                files[path] = {"sha256": sha256(path), "mode": "%04o" % (st.st_mode & 0o7777), "uid": st.st_uid, "gid": st.st_gid}
    return files


def differences(old, new):
    return sorted(p for p in set(old) | set(new) if old.get(p) != new.get(p))


def staging_paths(root):
    staging = os.path.join(root, ".staging")
    return staging, os.path.join(staging, "snapshot" + SUFFIX), os.path.join(staging, "manifest.json")


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


def snapshots(root):
    if not os.path.isdir(root):
        return []
    return sorted((n for n in os.listdir(root) if NAME_RE.match(n)), reverse=True)


def promote(root, tarball, manifest, keep):
    """Move a staged tarball into place as a snapshot; return its name and the pruned names."""
    release = re.sub(r"[^A-Za-z0-9_.-]", "_", manifest.get("release") or "") or "none"
    base = manifest["created"]
    name, n = "%s-%s%s" % (base, release, SUFFIX), 1
    while os.path.exists(os.path.join(root, name)):
        n += 1
        name = "%s-%d-%s%s" % (base, n, release, SUFFIX)
    os.chmod(tarball, 0o600)
    os.replace(tarball, os.path.join(root, name))
    pruned = snapshots(root)[keep:]
    for old in pruned:
        os.unlink(os.path.join(root, old))
    return name, pruned


def ensure_dir(module, path, mode):
    if os.path.isdir(path):
        if os.stat(path).st_mode & 0o7777 != mode and not module.check_mode:
            os.chmod(path, mode)
        return False
    if not module.check_mode:
        os.makedirs(path, mode)
        os.chmod(path, mode)
    return True


def do_stage(module, p):
    root = p["dir"]
    result = {"changed": ensure_dir(module, root, 0o700), "promoted": None, "pruned": []}
    staging, tarball, manifest_path = staging_paths(root)
    if module.check_mode:
        return result
    if os.path.exists(manifest_path) and os.path.exists(tarball):
        old = read_json(manifest_path)
        if old["files"] and differences(old["files"], scan(old["patterns"])):
            # An earlier run staged, changed files and stopped before its commit:
            # its staged tarball is the state before those changes. Keep it.
            result["promoted"], result["pruned"] = promote(root, tarball, old, p["keep"])
            result["changed"] = True
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging, 0o700)
    files = scan(p["paths"])
    manifest = {"created": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), "release": p["release"],
                "patterns": p["paths"], "files": files}
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    with tarfile.open(tarball, "w:gz") as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime, info.mode = len(data), time.time(), 0o600
        tar.addfile(info, io.BytesIO(data))
        for path in files:
            tar.add(path, arcname=path.lstrip("/"), recursive=False)
    os.chmod(tarball, 0o600)
    with open(manifest_path, "w") as handle:
        handle.write(data.decode())
    result.update(staged=tarball, files=sorted(files))
    return result


def do_commit(module, p):
    root = p["dir"]
    staging, tarball, manifest_path = staging_paths(root)
    result = {"changed": False, "snapshot": None, "pruned": [], "differs": []}
    if not (os.path.exists(manifest_path) and os.path.exists(tarball)):
        result["msg"] = "nothing staged"
        return result
    manifest = read_json(manifest_path)
    result["differs"] = differences(manifest["files"], scan(manifest["patterns"]))
    if module.check_mode:
        return result
    if result["differs"] and manifest["files"]:
        result["snapshot"], result["pruned"] = promote(root, tarball, manifest, p["keep"])
        result["changed"] = True
    elif result["differs"]:
        result["msg"] = "none of the files existed before this run: nothing to snapshot"
    shutil.rmtree(staging, ignore_errors=True)
    return result


def open_snapshot(module, root, name):
    names = snapshots(root)
    if not names:
        module.fail_json(msg="no snapshots in %s" % root)
    if name in ("", "latest"):
        name = names[0]
    elif not name.endswith(SUFFIX):
        name += SUFFIX
    if name not in names:
        module.fail_json(msg="no snapshot %s in %s; available: %s" % (name, root, ", ".join(names)))
    path = os.path.join(root, name)
    tar = tarfile.open(path, "r:gz")
    manifest = json.load(tar.extractfile(MANIFEST))
    return name, tar, manifest


def do_list(module, p):
    items = []
    for name in snapshots(p["dir"]):
        path = os.path.join(p["dir"], name)
        try:
            with tarfile.open(path, "r:gz") as tar:
                manifest = json.load(tar.extractfile(MANIFEST))
            files = sorted(manifest["files"])
            release = manifest.get("release") or ""
        except Exception as exc:  # a damaged file is listed, not fatal
            files, release = [], "unreadable: %s" % exc
        items.append({"name": name, "bytes": os.path.getsize(path), "release": release, "files": files})
    return {"changed": False, "snapshots": items}


def do_restore(module, p):
    name, tar, manifest = open_snapshot(module, p["dir"], p["name"])
    live = scan(manifest["patterns"])
    restored, removed = [], []
    with tar:
        for path, meta in sorted(manifest["files"].items()):
            if live.get(path) == meta:
                continue
            restored.append(path)
            if module.check_mode:
                continue
            member = tar.getmember(path.lstrip("/"))
            directory = os.path.dirname(path)
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o755)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".queuefleet-restore-")
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(tar.extractfile(member), out)
                os.chown(tmp, meta["uid"], meta["gid"])
                os.chmod(tmp, int(meta["mode"], 8))
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
    # A program config added after the snapshot goes too, so the programs match it.
    for path in sorted(live):
        if path not in manifest["files"] and any(glob.has_magic(pat) for pat in manifest["patterns"] if fnmatch.fnmatch(path, pat)):
            removed.append(path)
            if not module.check_mode:
                os.unlink(path)
    return {"changed": bool(restored or removed), "snapshot": name, "release": manifest.get("release"),
            "restored": restored, "removed": removed, "touched": sorted(restored + removed)}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            action=dict(type="str", required=True, choices=["stage", "commit", "list", "restore"]),
            dir=dict(type="path", default="/var/backups/queuefleet"),
            paths=dict(type="list", elements="str", default=[]),
            release=dict(type="str", default=""),
            keep=dict(type="int", default=10),
            name=dict(type="str", default="latest"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["keep"] < 1:
        module.fail_json(msg="keep must be at least 1")
    action = {"stage": do_stage, "commit": do_commit, "list": do_list, "restore": do_restore}[p["action"]]
    module.exit_json(**action(module, p))


if __name__ == "__main__":
    main()
