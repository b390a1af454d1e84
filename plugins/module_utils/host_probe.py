"""Readers of a host's state, each returning plain data: files, packages, units, users, supervisor
programs, and what a running service still owes its config (module_utils/service_config.py).

Shared by the modules host_state (the converged check), service_config (the repair) and
supervisor_apply. Every external command runs as an argv list, never through a shell.
"""

from __future__ import annotations

import glob
import grp
import hashlib
import json
import os
import pwd
import stat
import subprocess
from typing import Callable, Dict, List, Optional, Tuple

from ansible.module_utils.urls import open_url
from ansible_collections.queuefleet.fleet.plugins.module_utils import service_config

Runner = Callable[..., Tuple[int, str, str]]


def run(argv: List[str], env: Optional[Dict[str, str]] = None, timeout: float = 30) -> Tuple[int, str, str]:
    """(rc, stdout, stderr) of argv; a missing program is rc 127."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, **(env or {})})
    except FileNotFoundError as exc:
        return 127, "", str(exc)
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]} timed out after {timeout}s"
    return done.returncode, done.stdout, done.stderr


# --- files ---------------------------------------------------------------------------------------

def describe_path(path: str, content: bool = True) -> str:
    """kind, mode, owner and (content=True) the sha256 of a file; a link's target; "absent"."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "absent"
    except OSError as exc:
        return f"unreadable {exc.errno}"
    if stat.S_ISLNK(info.st_mode):
        return f"link {os.readlink(path)}"
    owner = f"{_user(info.st_uid)}:{_group(info.st_gid)}"
    mode = format(stat.S_IMODE(info.st_mode), "o")
    if stat.S_ISDIR(info.st_mode):
        return f"dir {mode} {owner}"
    if not content:
        return f"file {mode} {owner}"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"file {mode} {owner} {digest.hexdigest()}"


def expand_globs(patterns: List[str]) -> List[str]:
    return sorted({path for pattern in patterns for path in glob.glob(pattern)})


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


# --- packages, units, users -------------------------------------------------------------------------

def packages(names: List[str]) -> Dict[str, str]:
    """{name: "version status"} from dpkg, "absent" for a package dpkg does not know."""
    found = {name: "absent" for name in names}
    if not names:
        return found
    out = run(["dpkg-query", "-W", "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n", "--", *names])[1]
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0] in found:
            found[parts[0]] = f"{parts[1]} {parts[2].strip()}"
    return found


def units(names: List[str]) -> Dict[str, Dict[str, str]]:
    """systemd's view of each unit: UnitFileState, ActiveState, MainPID, NeedDaemonReload, LoadState."""
    props = ["Id", "LoadState", "UnitFileState", "ActiveState", "MainPID", "NeedDaemonReload"]
    result = {name: {"LoadState": "not-found"} for name in names}
    if not names:
        return result
    rc, out, unused_err = run(["systemctl", "show", "-p", ",".join(props), "--", *names])
    if rc != 0:
        return result
    blocks = out.strip().split("\n\n")
    for name, block in zip(names, blocks):  # systemctl answers in the order asked
        values = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        result[name] = values
    return result


def describe_unit(values: Dict[str, str]) -> str:
    if values.get("LoadState") == "not-found":
        return "absent"
    reload = " daemon-reload-owed" if values.get("NeedDaemonReload") == "yes" else ""
    return f"{values.get('UnitFileState', '?')} {values.get('ActiveState', '?')}{reload}"


def users(names: List[str]) -> Dict[str, str]:
    """{user: "uid gid home shell groups"} or "absent"."""
    found = {}
    for name in names:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            found[name] = "absent"
            continue
        groups = sorted(_group(gid) for gid in os.getgrouplist(name, entry.pw_gid))
        found[name] = f"{entry.pw_uid} {_group(entry.pw_gid)} {entry.pw_dir} {entry.pw_shell} {','.join(groups)}"
    return found


def groups(names: List[str]) -> Dict[str, str]:
    found = {}
    for name in names:
        try:
            entry = grp.getgrnam(name)
        except KeyError:
            found[name] = "absent"
            continue
        found[name] = f"{entry.gr_gid} {','.join(sorted(entry.gr_mem))}"
    return found


def command_digest(argv: List[str]) -> str:
    """sha256 of a read-only command's output (exit status included)."""
    rc, out, err = run(argv)
    return hashlib.sha256(f"{rc}\n{out}\n{err}".encode()).hexdigest()


# --- supervisor -----------------------------------------------------------------------------------

def supervisor_status(config: str) -> Tuple[Optional[Dict[str, Dict[str, str]]], str]:
    """({program: {"state", "info"}}, error); None when supervisord does not answer."""
    rc, out, err = run(["supervisorctl", "-c", config, "status"])
    text = out or err
    if "refused connection" in text or "no such file" in text.lower() or "SHUTDOWN_STATE" in text \
            or (rc not in (0, 3) and not out.strip()):
        return None, text.strip().splitlines()[0] if text.strip() else f"supervisorctl exited {rc}"
    programs: Dict[str, Dict[str, str]] = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[1].isupper():
            programs[parts[0]] = {"state": parts[1], "info": parts[2].strip() if len(parts) > 2 else ""}
    return programs, ""


def supervisor_autostart(config: str) -> Dict[str, bool]:
    """{process name: autostart} from `supervisorctl avail` ("auto" or "manual"); empty when it does not answer."""
    rc, out, _err = run(["supervisorctl", "-c", config, "avail"])
    found: Dict[str, bool] = {}
    for line in out.splitlines() if rc == 0 else []:
        parts = line.split()
        if len(parts) >= 3 and ("auto" in parts or "manual" in parts):
            found[parts[0]] = "auto" in parts
    return found


def group_states(status: Dict[str, Dict[str, str]]) -> Dict[str, str]:
    """{group: the state of its least healthy process} (a program with numprocs > 1 is one group)."""
    rank = {"RUNNING": 0, "STARTING": 1, "STOPPING": 2, "STOPPED": 3, "EXITED": 4, "BACKOFF": 5, "FATAL": 6, "UNKNOWN": 7}
    groups: Dict[str, str] = {}
    for name, entry in status.items():
        group = name.split(":", 1)[0]
        if rank.get(entry["state"], 7) >= rank.get(groups.get(group, "RUNNING"), 0):
            groups[group] = entry["state"]
    return groups


def program_condition(state: Optional[str]) -> str:
    """"up" for a program that runs or is starting, else its state ("absent" when unknown)."""
    if state is None:
        return "absent"
    return "up" if state in ("RUNNING", "STARTING") else state


# --- what a service owes -----------------------------------------------------------------------------

def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def redis_config(port: int, passwords: List[str], host: str = "127.0.0.1") -> Tuple[Optional[Dict[str, str]], str]:
    """({directive: value} from CONFIG GET *, error); the first password that authenticates is used."""
    error = ""
    for password in (passwords or [""]):
        env = {"REDISCLI_AUTH": password} if password else {}
        rc, out, err = run(["redis-cli", "--no-auth-warning", "--raw", "-h", host, "-p", str(port), "CONFIG", "GET", "*"],
                           env=env, timeout=10)
        if rc == 0 and not out.startswith(("NOAUTH", "WRONGPASS", "ERR", "Could not connect")):
            lines = out.split("\n")
            if lines and lines[-1] == "":
                lines.pop()
            values = {lines[i].lower(): lines[i + 1] for i in range(0, len(lines) - 1, 2)}
            acl = run(["redis-cli", "--no-auth-warning", "--raw", "-h", host, "-p", str(port), "ACL", "LIST"],
                      env=env, timeout=10)[1]
            default = [line for line in acl.splitlines() if line.startswith("user default ")]
            if default:
                values["user"] = default[0]
            info = run(["redis-cli", "--no-auth-warning", "--raw", "-h", host, "-p", str(port), "INFO", "replication"],
                       env=env, timeout=10)[1]
            values["replicaof"] = replica_of(info)
            return values, ""
        error = (out or err).strip().splitlines()[0] if (out or err).strip() else f"redis-cli exited {rc}"
    return None, error


def replica_of(info: str) -> str:
    """"HOST PORT" of the master an INFO replication section names, "" for a master."""
    fields = dict(line.strip().split(":", 1) for line in info.splitlines() if ":" in line)
    if fields.get("role") != "slave":
        return ""
    return f"{fields.get('master_host', '')} {fields.get('master_port', '')}".strip()


def mysql_variables(socket: str) -> Tuple[Optional[Dict[str, str]], str]:
    rc, out, err = run(["mysql", "--protocol=socket", "-S", socket, "-NBe", "SHOW GLOBAL VARIABLES"], timeout=15)
    if rc != 0:
        return None, (err or out).strip()[:300]
    values = {}
    for line in out.splitlines():
        name, value = (line.split("\t", 1) + [""])[:2]
        values[name.lower()] = value.lower()
    return values, ""


def prometheus_reload(url: str) -> Tuple[Optional[Dict[str, float]], str]:
    """Prometheus's own metrics about its last config reload."""
    try:
        text = open_url(url.rstrip("/") + "/metrics", timeout=10).read().decode()
    except (OSError, ValueError) as exc:
        return None, str(exc)
    found = {}
    for line in text.splitlines():
        for name in ("prometheus_config_last_reload_successful", "prometheus_config_last_reload_success_timestamp_seconds"):
            if line.startswith(name + " "):
                found[name] = float(line.split()[1])
    return found, ""


def owed(spec: Dict, unit: Dict[str, str], desired_text: Optional[str] = None) -> Dict[str, object]:
    """What one service owes: {"restart": [...], "live": {...}, "deferred": [...], "reload": [...], "note": str}.

    ``spec`` names the service, its kind, config file, running copy, live and deferred keys,
    drop-ins (``restart_files``) and how to ask it for live values. ``desired_text`` defaults to
    the config file as it is on disk."""
    kind = spec["kind"]
    result: Dict[str, object] = {"restart": [], "live": {}, "was": {}, "deferred": [], "reload": [], "note": ""}
    if unit.get("ActiveState") != "active":
        result["note"] = f"{spec['service']} is {unit.get('ActiveState', 'not installed')}"
        return result
    started = service_config.process_start_time(int(unit.get("MainPID") or 0)) if unit.get("MainPID", "0") != "0" else None
    config = spec.get("config") or ""
    if desired_text is None:
        desired_text = _read(config)
        if desired_text is None:
            result["note"] = f"{config} does not exist"
            return result
    late_files = service_config.newer_than(spec.get("restart_files") or [], started)
    if kind == "prometheus":
        metrics, error = prometheus_reload(spec.get("url") or "http://127.0.0.1:9090")
        if metrics is None:
            result["note"] = f"cannot read Prometheus's reload state: {error}"
            result["reload"] = ["(reload state unknown)"]
            return result
        loaded_at = metrics.get("prometheus_config_last_reload_success_timestamp_seconds", 0.0)
        stale = service_config.newer_than([config] + list(spec.get("reload_files") or []), loaded_at)
        if metrics.get("prometheus_config_last_reload_successful", 1.0) != 1.0 or stale:
            result["reload"] = stale or ["(last reload failed)"]
        result["restart"] = late_files
        return result
    copy = spec.get("running_copy") or service_config.running_copy_path(spec["service"])
    running_text = _read(copy)
    if running_text is None and config and not service_config.newer_than([config], started):
        running_text = _read(config)  # written before the process started: it is what runs
    live_values = None
    if spec.get("live") or kind == "redis":  # Redis's passwords always go live
        if kind == "redis":
            live_values, error = redis_config(int(spec.get("port") or 6379), list(spec.get("passwords") or []))
        elif kind == "mysql":
            live_values, error = mysql_variables(spec.get("socket") or "/run/mysqld/mysqld.sock")
        else:
            error = ""
        if live_values is None and error:
            result["note"] = f"cannot read the live settings: {error}"
    found = service_config.pending(kind, desired_text, running_text, live_keys=list(spec.get("live") or []),
                                   live_values=live_values, deferred_keys=list(spec.get("deferred") or []),
                                   ignore_keys=list(spec.get("ignore") or []))
    result.update(found)
    result["restart"] = list(found["restart"]) + [f"{path} (written after the service started)" for path in late_files]
    return result


def owed_summary(found: Dict[str, object]) -> str:
    """One stable line: empty when nothing is owed."""
    parts = []
    if found.get("restart"):
        parts.append("restart:" + ",".join(found["restart"]))
    if found.get("live"):
        parts.append("live:" + ",".join(sorted(found["live"])))
    if found.get("reload"):
        parts.append("reload:" + ",".join(found["reload"]))
    return " ".join(parts)


def to_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)
