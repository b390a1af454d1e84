"""What a running service still owes its config file: a restart, a live change, or nothing.

The answer comes from the host, never from "did this run change the file":

* the config the running process loaded is the copy systemd made when it started it (each
  role's unit drop-in runs ``ExecStartPre=+cp <config> <running copy>``), so a run interrupted
  between writing the file and restarting leaves the next run a difference to act on;
* the values of settings the service takes live (Redis ``CONFIG GET``, MariaDB ``SHOW GLOBAL
  VARIABLES``) are read from the running service, so a hand-made ``CONFIG SET`` or ``SET GLOBAL``
  is drift, repaired live;
* unit drop-ins are loaded at start: one written after the process started is owed a restart;
* Prometheus reloads its files: one written after its last successful reload is owed a reload.

``pending()`` is shared by the roles' ``queuefleet.fleet.service_config`` module (which repairs)
and ``queuefleet.fleet.converged`` (which refuses to certify a host that still owes something).
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
from typing import Dict, List, Optional

KINDS = ("redis", "mysql", "supervisord", "prometheus")
RUNNING_COPY_DIR = "/run/queuefleet/running"

# Redis: k/m/g are powers of 1000, kb/mb/gb of 1024 (redis.conf); MariaDB K/M/G/T of 1024.
_REDIS_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000 ** 2, "mb": 1024 ** 2, "g": 1000 ** 3, "gb": 1024 ** 3}
_MYSQL_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}
_REDIS_SIZE = re.compile(r"^([0-9]+)(b|k|kb|m|mb|g|gb)$")
_MYSQL_SIZE = re.compile(r"^([0-9]+)([kmgt])$")
_MYSQL_BOOL = {"on": "on", "1": "on", "true": "on", "yes": "on", "off": "off", "0": "off", "false": "off", "no": "off"}


def running_copy_path(service: str) -> str:
    """Where the unit drop-in copies the config at each start of ``service``."""
    return f"{RUNNING_COPY_DIR}/{service}.conf"


# --- parsers ---------------------------------------------------------------------------------

def _redis_words(value: str) -> str:
    """A redis.conf value as Redis reads it (quotes and escapes resolved), words joined by one space."""
    try:
        return " ".join(shlex.split(value)) if value not in ('""', "''") else ""
    except ValueError:
        return value.strip()


def parse_redis_conf(text: str) -> Dict[str, str]:
    """{directive: value} of a redis.conf; a repeated directive (save, user) is joined in order."""
    settings: Dict[str, List[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, value = (line.split(" ", 1) + [""])[:2]
        settings.setdefault(key.lower(), []).append(value.strip())
    return {key: " ".join(values) for key, values in settings.items()}


def parse_mysqld_section(text: str) -> Dict[str, str]:
    """{option: value} of the [mysqld] section of a .cnf file; '-' and '_' are the same in option names."""
    settings: Dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
            continue
        if section not in ("mysqld", "mariadb", "server"):
            continue
        key, sep, value = line.partition("=")
        settings[key.strip().lower().replace("-", "_")] = value.strip() if sep else ""
    return settings


def parse_supervisord_conf(text: str) -> Dict[str, str]:
    """{"section.key": value} of a supervisord.conf (sections and keys as supervisord reads them)."""
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise ValueError(f"cannot parse supervisord.conf: {exc}") from exc
    return {f"{section}.{key}": value.strip() for section in parser.sections() for key, value in parser.items(section)}


PARSERS = {"redis": parse_redis_conf, "mysql": parse_mysqld_section, "supervisord": parse_supervisord_conf}


# --- live values --------------------------------------------------------------------------------

def normalize_redis_user(value: str) -> str:
    """The default user of a ``user`` directive or an ``ACL LIST`` line, as on/off and its password digests."""
    words = value.split()
    if words and words[0] == "user":
        words = words[1:]
    state = "off" if "off" in words else "on"
    digests = sorted(word.lower() for word in words if word.startswith("#"))
    return " ".join([state] + digests)


# Redis settings whose value is case-sensitive text (a password): compared as Redis reads them.
_REDIS_VERBATIM = ("masterauth", "masteruser")
# Redis settings that always go live, even when redis_live_settings leaves them out: the default user's
# passwords (ACL SETUSER) and replication (REPLICAOF), which a restart would only lose.
REDIS_ALWAYS_LIVE = ("user", "replicaof")


def normalize_redis(value: str) -> str:
    """A Redis setting as CONFIG GET shows it: sizes in bytes, words lower-case and single-spaced."""
    words = _redis_words(value).lower().split()
    out = []
    for word in words:
        size = _REDIS_SIZE.match(word)
        out.append(str(int(size.group(1)) * _REDIS_UNITS[size.group(2)]) if size else word)
    return " ".join(out)


def normalize_mysql(value: str) -> str:
    """A server option as SHOW GLOBAL VARIABLES shows it: sizes in bytes, booleans as on/off."""
    text = value.strip().strip("'\"").lower()
    size = _MYSQL_SIZE.match(text)
    if size:
        return str(int(size.group(1)) * _MYSQL_UNITS[size.group(2)])
    return _MYSQL_BOOL.get(text, text)


NORMALIZERS = {"redis": normalize_redis, "mysql": normalize_mysql}


def live_value_for_set(kind: str, value: str) -> str:
    """The value to hand to CONFIG SET / SET GLOBAL for a setting as the config file writes it."""
    if kind == "redis":
        return _redis_words(value)
    return value.strip().strip("'\"")


# --- what is owed -------------------------------------------------------------------------------

def pending(kind: str, desired_text: str, running_text: Optional[str], *, live_keys: List[str],
            live_values: Optional[Dict[str, str]] = None, deferred_keys: List[str] = (),
            ignore_keys: List[str] = ()) -> Dict[str, object]:
    """What the running service owes the desired config.

    ``running_text`` is the config the running process loaded (None: unknown, so every setting
    is owed a restart). ``live_values`` are the values the running service reports (as it
    reports them: CONFIG GET, SHOW GLOBAL VARIABLES, an ACL LIST line) for ``live_keys`` (None
    when it could not be asked: the live keys then count as the running copy says). Returns
    ``{"restart": [keys], "live": {key: value to set}, "was": {key: its running value},
    "deferred": [keys]}``:

    * a setting outside ``live_keys`` that differs from the running copy needs a restart, unless
      it is in ``deferred_keys`` (it waits for the service's next start, on purpose);
    * a live setting whose running value differs from the desired one is set live; a live
      setting that disappears from the file needs a restart (only a start brings its default back).
    """
    parse = PARSERS[kind]
    desired = parse(desired_text)
    if running_text is None:
        return {"restart": ["(config the running service loaded is unknown)"], "live": {}, "was": {}, "deferred": []}
    running = parse(running_text)
    live_set = {_key(kind, key) for key in live_keys}
    if kind == "redis":
        live_set.update(REDIS_ALWAYS_LIVE)
        # A master has no replicaof line: compared as "" with what the server reports.
        desired.setdefault("replicaof", "")
        running.setdefault("replicaof", "")
    deferred_set = {_key(kind, key) for key in deferred_keys}
    ignored = {_key(kind, key) for key in ignore_keys}
    restart: List[str] = []
    live: Dict[str, str] = {}
    was: Dict[str, str] = {}
    deferred: List[str] = []
    for key in sorted(set(desired) | set(running)):
        if key in ignored:
            continue
        if key in live_set and key in desired:
            now = (live_values or {}).get(key)
            if now is None:
                now = running.get(key)
                if now is None:
                    restart.append(key)
                    continue
            now = _normalized(kind, key, now)
            want = _normalized(kind, key, desired[key])
            if want != now:
                live[key] = live_value_for_set(kind, desired[key])
                was[key] = now
            continue
        if desired.get(key) == running.get(key):
            continue
        (deferred if key in deferred_set else restart).append(key)
    return {"restart": restart, "live": live, "was": was, "deferred": deferred}


def _normalized(kind: str, key: str, value: str) -> str:
    if (kind, key) == ("redis", "user"):
        return normalize_redis_user(value)
    if kind == "redis" and key in _REDIS_VERBATIM:
        return _redis_words(value)
    return NORMALIZERS.get(kind, lambda text: text.strip())(value)


def _key(kind: str, key: str) -> str:
    return key.lower().replace("-", "_") if kind == "mysql" else key.lower() if kind == "redis" else key


# --- process facts --------------------------------------------------------------------------------

def process_start_time(pid: int) -> Optional[float]:
    """When a process started, in seconds since the epoch (1/100 s resolution), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/stat", encoding="ascii") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
    except (OSError, IndexError, StopIteration, ValueError):
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def newer_than(paths: List[str], started: Optional[float]) -> List[str]:
    """The paths modified after ``started`` (all existing ones when it is unknown)."""
    found = []
    for path in paths:
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            continue
        if started is None or mtime > started:
            found.append(path)
    return found
