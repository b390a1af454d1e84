"""The findings of the post-deploy checks (roles/postdeploy_check), computed from what the checks read.

A finding is a line, or a list of lines (a headline, then details such as the last lines of a
program's stderr). Each check records failures (the deploy fails), warnings and, for the fleet,
what passed; ``postdeploy_summary`` puts every host's findings into one result and its text.
Pool processes are told apart by the program-name rule of module_utils/programs.py, the one home
of ``<prefix><pool>-<generation>_<NN>``. Each filter is documented in the YAML file of its name
beside this one.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Union

from ansible.errors import AnsibleFilterError
from ansible_collections.queuefleet.fleet.plugins.module_utils.programs import parse_program_name

Finding = Union[str, list]
SETTLED_OK = ("RUNNING", "STOPPING")  # STOPPING: a replaced or surplus pool process finishing its job


def _truncate(text: str, length: int) -> str:
    """Jinja's truncate: at most about ``length`` characters, cut at a word, with '...'."""
    if len(text) <= length + 5:
        return text
    return text[: length - 3].rsplit(" ", 1)[0] + "..."


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise AnsibleFilterError(f"{what} must be a whole number (got {json.dumps(value)})")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"{what} must be a whole number (got {json.dumps(value, default=str)})") from exc


def _indent(lines: list) -> list:
    return ["  " + str(line) for line in lines]


# --- supervisor ----------------------------------------------------------------------------------

def postdeploy_supervisor_findings(status: dict, pools: Optional[list] = None, prefix: str = "queuefleet-",
                                   stderr_lines: int = 15, config: Optional[dict] = None,
                                   config_path: str = "/etc/supervisor/supervisord.conf") -> dict:
    """{"failures", "warnings"} of one worker host from queuefleet.fleet.supervisor_status's result.

    ``pools`` are the host's inventory pools (name, numprocs or autoscale min/max: an autoscaled pool
    may run anywhere in its range, its STOPPED processes are the ones its autoscaler stopped); ``config`` is the ``config`` of
    queuefleet.fleet.supervisor_settle's result (settings of supervisord.conf it has not loaded)."""
    name = "postdeploy_supervisor_findings"
    if not isinstance(status, dict) or not isinstance(status.get("programs"), list):
        raise AnsibleFilterError(f"{name}: expected the result of queuefleet.fleet.supervisor_status (with programs)")
    if not isinstance(pools, list) or not all(isinstance(pool, dict) and "name" in pool for pool in pools):
        raise AnsibleFilterError(f"{name}: pools must be a list of pools, each with a name (got {json.dumps(pools, default=str)})")
    if not isinstance(prefix, str) or not prefix:
        raise AnsibleFilterError(f"{name}: prefix must be the pools' program prefix, e.g. queuefleet- (got {json.dumps(prefix)})")
    tail_lines = _count(stderr_lines, f"{name}: stderr_lines")
    failures: list[Finding] = []
    warnings: list[Finding] = []
    programs = status["programs"]

    if status.get("running") is False:
        failures.append(f"supervisord does not answer: {status.get('error') or 'no answer'}")

    def pool_of(program: dict) -> Optional[str]:
        parsed = parse_program_name(program["name"])
        return parsed.pool(prefix) if parsed else None

    scaled = {pool["name"]: pool["autoscale"] for pool in pools if isinstance(pool.get("autoscale"), dict)}
    for program in programs:
        state = program.get("state", "UNKNOWN")
        if state in SETTLED_OK:
            continue
        if state == "STOPPED" and program.get("autostart") is False and pool_of(program) is not None:
            continue  # an autoscaled pool's process, stopped by its autoscaler: the pool's count is checked below
        info = program.get("info") or ""
        headline = f"program {program['name']} is {state}" + (f" ({info})" if info else "")
        tail = [line for line in program.get("stderr") or [] if line != ""]
        if tail_lines <= 0:
            failures.append(headline)
        elif tail:
            failures.append([headline, "last lines of its stderr:"] + _indent(tail[-tail_lines:]))
        else:
            failures.append([headline, "(its stderr is empty)"])

    live = [program for program in programs if program.get("state") != "STOPPING"]
    for pool in pools:
        mine = [program for program in live if pool_of(program) == pool["name"]]
        running = sum(1 for program in mine if program.get("state") == "RUNNING")
        if pool["name"] in scaled:
            low = _count(scaled[pool["name"]].get("min"), f"{name}: autoscale.min of pool {pool['name']}")
            high = _count(scaled[pool["name"]].get("max"), f"{name}: autoscale.max of pool {pool['name']}")
            if not low <= running <= high:
                failures.append(f"pool {pool['name']}: {running} processes RUNNING, outside its autoscale range {low}..{high}")
            continue
        wanted = _count(pool.get("numprocs", 1), f"{name}: numprocs of pool {pool['name']}")
        if running != wanted:
            known = f" (supervisor knows {len(mine)} processes of pool {pool['name']})" if len(mine) != wanted else ""
            failures.append(f"pool {pool['name']}: {running} of {wanted} processes RUNNING{known}")

    config = config or {}
    if config.get("deferred"):
        warnings.append(f"{config_path} changed after supervisord started: the change waits for its next restart: "
                        f"{', '.join(config['deferred'])} (a restart stops every worker: systemctl restart supervisor at a quiet time)")
    if config.get("note") and status.get("running") is not False:
        warnings.append(f"{config_path}: {config['note']}")
    if config.get("restart"):
        warnings.append(f"{config_path} differs from what supervisord runs in {', '.join(config['restart'])}, which need "
                        f"its restart (it stops every worker: systemctl restart supervisor at a quiet time)")

    inventory = {pool["name"] for pool in pools}
    strays: list[str] = []
    for program in live:
        parsed = parse_program_name(program["name"])
        pool = parsed.pool(prefix) if parsed else None
        if pool is not None and pool not in inventory and parsed.family not in strays:
            strays.append(parsed.family)
    warnings += [f"programs of pool {family} run but it is not a pool in the inventory" for family in strays]
    return {"failures": failures, "warnings": warnings}


# --- fleet ---------------------------------------------------------------------------------------

def postdeploy_expected_workers(pools: Any) -> int:
    """Workers a host must run at least: numprocs of each fixed pool, autoscale.min of each autoscaled one."""
    if not isinstance(pools, list) or not all(isinstance(pool, dict) for pool in pools):
        raise AnsibleFilterError(f"postdeploy_expected_workers: expected the inventory pools (got {json.dumps(pools, default=str)})")
    total = 0
    for pool in pools:
        scale = pool.get("autoscale")
        value = scale.get("min") if isinstance(scale, dict) else pool.get("numprocs", 1)
        total += _count(value, f"postdeploy_expected_workers: pool {pool.get('name', '?')}")
    return total


def _ran(result: Any) -> bool:
    return isinstance(result, dict) and not result.get("skipped")


def postdeploy_fleet_findings(workers: list, releases: list, heartbeats: Optional[dict] = None,
                              canary: Optional[dict] = None, backlog: Optional[dict] = None,
                              heartbeat_timeout: int = 30, backlog_fatal: bool = False) -> dict:
    """{"failures", "warnings", "passed"} of the fleet from the registered results of the heartbeat
    (queue await-release), canary (canary.py) and backlog (queue monitor) commands."""
    name = "postdeploy_fleet_findings"
    if not isinstance(workers, list) or not isinstance(releases, list) or len(workers) != len(releases):
        raise AnsibleFilterError(f"{name}: expected the worker hosts and, in the same order, the release each runs "
                                 f"(got {json.dumps(workers, default=str)} and {json.dumps(releases, default=str)})")
    for label, result in (("heartbeats", heartbeats), ("canary", canary), ("backlog", backlog)):
        if result is not None and not isinstance(result, dict):
            raise AnsibleFilterError(f"{name}: {label} must be the registered result of its task (got {json.dumps(result, default=str)})")
    heartbeats, canary, backlog = heartbeats or {"skipped": True}, canary or {"skipped": True}, backlog or {"skipped": True}
    failures: list[Finding] = []
    warnings: list[Finding] = []
    passed: list[str] = []

    runs = [str(release or "") for release in releases]
    distinct = sorted(set(runs))
    if len(distinct) != 1 or not distinct[0]:
        failures.append("worker hosts do not run one release: "
                        + ", ".join(f"{host}={release or '(none)'}" for host, release in zip(workers, runs)))
    elif _ran(heartbeats) and heartbeats.get("rc", 0) != 0:
        details = [line.strip() for line in heartbeats.get("stderr_lines") or []]
        details = [line for line in details if line and not line.startswith("queue: workers not on")]
        failures.append([f"heartbeats: not every worker reports release {distinct[0]} within {heartbeat_timeout}s:"]
                        + _indent(details)[-20:])

    results = None
    if _ran(canary):
        out = (canary.get("stdout") or "").strip()
        if out.startswith("{"):
            try:
                results = json.loads(out).get("results")
            except ValueError:
                results = None
        if results is None:
            why = canary.get("stderr") or canary.get("msg") or ""
            failures.append(f"canary: could not run: {_truncate(str(why).strip(), 400)}")
    for entry in results or []:
        where = f"pool {entry.get('pool')}: canary {entry.get('job')} on queue {entry.get('queue')}"
        if entry.get("result") in ("failed", "timeout"):
            failures.append(f"{where} {entry['result']}: {entry.get('error') or ''}")
        elif entry.get("result") == "skipped":
            warnings.append(f"pool {entry.get('pool')}: canary skipped: {entry.get('error')}"
                            " (set postdeploy_check_canary_job(s) to a harmless job of your app)")
        elif entry.get("result") == "done":
            passed.append(f"{where} processed in {entry.get('seconds')}s")

    over = [line for line in (backlog.get("stdout_lines") or []) if line.startswith("OVER")] if _ran(backlog) else []
    if over:
        (failures if backlog_fatal else warnings).append(["backlog over threshold:"] + _indent(over))

    if _ran(heartbeats) and (heartbeats.get("stdout") or "").strip():
        passed.insert(0, heartbeats["stdout"].strip())
    return {"failures": failures, "warnings": warnings, "passed": passed}


# --- summary -------------------------------------------------------------------------------------

def _tagged(tag: str, finding: Finding) -> list:
    if isinstance(finding, str):
        return [f"{tag}: {finding}"]
    if isinstance(finding, list) and finding:
        return [f"{tag}: {finding[0]}"] + [str(line) for line in finding[1:]]
    raise AnsibleFilterError(f"postdeploy_summary: a finding is a line or a non-empty list of lines (got {json.dumps(finding, default=str)})")


def _per_host(hosts: list, given: Any, what: str) -> list:
    given = [] if given is None else given
    if not isinstance(given, list) or len(given) != len(hosts) or not all(isinstance(entry, list) for entry in given):
        raise AnsibleFilterError(f"postdeploy_summary: {what} must hold one list of findings per host, in the hosts' order "
                                 f"({len(hosts)} hosts, got {json.dumps(given, default=str)})")
    return given


def _lines(items: list) -> list:
    out = []
    for finding in items:
        out += [("  - " if index == 0 else "      ") + line for index, line in enumerate(finding)]
    return out


def postdeploy_summary(hosts: list, failures: Optional[list] = None, warnings: Optional[list] = None,
                       fleet: Optional[dict] = None) -> dict:
    """Every host's findings in one result: {"ok", "hosts", "failures", "warnings", "passed", "summary"}.

    ``failures`` and ``warnings`` hold one list of findings per host; ``fleet`` is
    postdeploy_fleet_findings' result (or None). Each finding is tagged with its host, or "fleet"."""
    if not isinstance(hosts, list) or not all(isinstance(host, str) for host in hosts):
        raise AnsibleFilterError(f"postdeploy_summary: expected the checked hosts' names (got {json.dumps(hosts, default=str)})")
    fleet = fleet or {}
    if not isinstance(fleet, dict):
        raise AnsibleFilterError(f"postdeploy_summary: fleet must be postdeploy_fleet_findings' result (got {json.dumps(fleet, default=str)})")
    failed = [_tagged(host, finding) for host, found in zip(hosts, _per_host(hosts, failures, "failures")) for finding in found]
    warned = [_tagged(host, finding) for host, found in zip(hosts, _per_host(hosts, warnings, "warnings")) for finding in found]
    failed += [_tagged("fleet", finding) for finding in fleet.get("failures") or []]
    warned += [_tagged("fleet", finding) for finding in fleet.get("warnings") or []]
    passed = [str(line) for line in fleet.get("passed") or []]

    if failed:
        text = [f"post-deploy checks FAILED: {len(failed)} problem(s) on {', '.join(hosts)}"] + _lines(failed)
    else:
        note = f" ({len(warned)} warning(s))" if warned else ""
        text = [f"post-deploy checks passed on {len(hosts)} host(s): {', '.join(hosts)}{note}"]
    if warned:
        text += ["warnings:"] + _lines(warned)
    if passed:
        text += ["fleet:"] + ["  - " + line for line in passed]
    return {"ok": not failed, "hosts": hosts, "failures": failed, "warnings": warned, "passed": passed, "summary": "\n".join(text)}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "postdeploy_supervisor_findings": postdeploy_supervisor_findings,
            "postdeploy_fleet_findings": postdeploy_fleet_findings,
            "postdeploy_expected_workers": postdeploy_expected_workers,
            "postdeploy_summary": postdeploy_summary,
        }
