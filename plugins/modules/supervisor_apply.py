#!/usr/bin/python
"""Apply changed supervisor program files: start new programs before stopping the ones they replace."""

from __future__ import annotations

DOCUMENTATION = r"""
module: supervisor_apply
short_description: Apply supervisor program changes, new programs first, old ones drained in the background
description:
  - Runs C(supervisorctl reread) and applies the result in an order that never leaves a worker pool without
    a process, unlike a plain C(supervisorctl update), which stops removed programs first and restarts a
    changed group as a whole.
  - Added and changed programs are applied first (C(supervisorctl update NAME...)); the module then waits
    until none of them is STARTING or BACKOFF. If one ends FATAL, EXITED or still BACKOFF the module fails and
    leaves every removed program running, so a bad change never takes the old processes away.
  - Removed programs are then stopped and removed in a detached background process, one C(supervisorctl
    update NAME) each in parallel, so a stop that waits for a running job (up to the program's stopwaitsecs)
    never blocks the play. Their output goes to O(drain_log).
  - A removed program named C(<family>-<6 hex>_<NN>) (a worker pool's process, see the queue_worker role) is
    held back, not stopped, while another program of the same family is FATAL, EXITED or BACKOFF.
  - Every program named in O(programs) must then run. One that is STOPPED, EXITED, FATAL or BACKOFF (stopped
    by hand, say, or given up on by supervisor) is started, and the module says which ones and why (the last
    lines of their stderr) in RV(started). One that still does not run fails the module within O(start_timeout)
    seconds, naming it with its stderr; nothing waits for a process nobody starts.
  - A program whose process started before the newest of O(stale_after) (the env file it reads at start, say) runs
    on settings it no longer has. Those named in O(restart_stale) are restarted (side programs that hold no job);
    those named in O(report_stale) are only returned in RV(stale), for the caller to restart them gracefully (workers
    that finish their job first). Read from the processes' start times, not from whether this run wrote the file, so a
    run interrupted after the write leaves the next run the same restart to do.
  - In check mode nothing is reread or applied; RV(started) lists the programs a real run would start.
options:
  stale_after:
    description: Files the programs read at start; a process older than the newest of them is stale.
    type: list
    elements: path
    default: []
  restart_stale:
    description: Programs restarted at once when stale.
    type: list
    elements: str
    default: []
  report_stale:
    description: Programs returned in RV(stale) when stale, not restarted.
    type: list
    elements: str
    default: []
  programs:
    description:
      - Programs (supervisor group names) that must be running afterwards, such as a queue_worker pool's processes
        or the supervisor role's programs with autostart.
    type: list
    elements: str
    default: []
  stderr_lines:
    description: Lines of a program's stderr shown when it is started or fails.
    type: int
    default: 5
  config:
    description: supervisord.conf passed to supervisorctl -c.
    type: path
    required: true
  start_timeout:
    description: Seconds to wait for added and changed programs to leave STARTING and BACKOFF.
    type: int
    default: 60
  drain_log:
    description: File the background stops append their output to.
    type: path
    default: /var/log/supervisor/queuefleet-drain.log
author: queuefleet (@queuefleet)
"""

RETURN = r"""
added:
  description: Programs added and started.
  type: list
  returned: always
replaced:
  description: Programs whose config changed, restarted.
  type: list
  returned: always
draining:
  description: Removed programs being stopped and removed in the background.
  type: list
  returned: always
held:
  description: Removed pool programs kept running because their pool has a failed process.
  type: list
  returned: always
stale:
  description: Programs of O(report_stale) whose process started before the newest of O(stale_after).
  type: list
  elements: str
  returned: always
refreshed:
  description: Programs of O(restart_stale) restarted because they were stale.
  type: list
  elements: str
  returned: always
started:
  description: Programs of O(programs) that were not running and were started, each with the state it was in and the last lines of its stderr.
  type: list
  elements: dict
  returned: always
  sample: [{"name": "queuefleet-default-3f2a1c_01", "was": "STOPPED", "stderr": ["Traceback ...", "..."]}]
"""

EXAMPLES = r"""
- name: Apply the program files and make sure every pool process runs
  queuefleet.fleet.supervisor_apply:
    config: /etc/supervisor/supervisord.conf
    programs: [queuefleet-default-3f2a1c_00, queuefleet-default-3f2a1c_01]
"""

import os
import re
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.queuefleet.fleet.plugins.module_utils.programs import parse_program_name
from ansible_collections.queuefleet.fleet.plugins.module_utils.service_config import process_start_time

REREAD_LINE = re.compile(r"^(?P<name>\S+): (?P<what>available|changed|disappeared)$")
STATUS_LINE = re.compile(r"^(?P<name>\S+)\s+(?P<state>[A-Z]+)\b\s*(?P<info>.*)$")
UNSETTLED = {"STARTING", "BACKOFF"}
FAILED = {"FATAL", "EXITED", "BACKOFF", "UNKNOWN"}


def family(group: str) -> str | None:
    parsed = parse_program_name(group)
    return parsed.family if parsed else None


class Supervisor:
    def __init__(self, module: AnsibleModule, config: str) -> None:
        self.module = module
        self.config = config

    def ctl(self, *args: str) -> str:
        """Run supervisorctl; exit codes are not errors here (status exits 3 when a program is not running)."""
        rc, out, err = self.module.run_command(["supervisorctl", "-c", self.config, *args])
        if "refused connection" in out or "no such file" in out.lower() or (rc != 0 and not out and err):
            self.module.fail_json(msg=f"supervisorctl {' '.join(args)} failed: {(out or err).strip()}")
        return out

    def reread(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {"available": [], "changed": [], "disappeared": []}
        out = self.ctl("reread")
        for line in out.splitlines():
            match = REREAD_LINE.match(line.strip())
            if match:
                found[match.group("what")].append(match.group("name"))
            elif line.strip().startswith("ERROR"):
                self.module.fail_json(msg=f"supervisorctl reread: {line.strip()}")
        return found

    def processes(self) -> dict[str, str]:
        """{process name as supervisorctl shows it: state}."""
        return {name: entry[0] for name, entry in self.status().items()}

    def status(self) -> dict[str, tuple[str, str]]:
        """{process name: (state, supervisor's note such as "Exited too quickly")}."""
        found = {}
        for line in self.ctl("status").splitlines():
            match = STATUS_LINE.match(line)
            if match:
                found[match.group("name")] = (match.group("state"), match.group("info").strip())
        return found

    def note(self, group: str) -> str:
        notes = [info for name, (state, info) in self.status().items() if name.split(":", 1)[0] == group and state != "RUNNING"]
        return f" ({notes[0]})" if notes and notes[0] else ""

    def states(self) -> dict[str, str]:
        """{group: worst state among its processes}, from `supervisorctl status`."""
        result: dict[str, str] = {}
        for name, state in self.processes().items():
            group = name.split(":", 1)[0]
            if result.get(group) in (None, "RUNNING", "STOPPED"):
                result[group] = state
        return result

    def settle(self, groups: list[str], timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            states = self.states()
            mine = {group: states.get(group, "UNKNOWN") for group in groups}
            if not UNSETTLED & set(mine.values()) or time.monotonic() >= deadline:
                return mine
            time.sleep(0.5)

    def stderr_tail(self, group: str, lines: int) -> list[str]:
        """The last lines of the stderr of the group's first process that does not run."""
        members = {name: state for name, state in self.processes().items() if name.split(":", 1)[0] == group}
        process = next((name for name, state in sorted(members.items()) if state != "RUNNING"), next(iter(sorted(members)), group))
        out = self.ctl("tail", f"-{max(lines, 1) * 300}", process, "stderr")
        return [line for line in out.splitlines() if line.strip()][-lines:] if lines > 0 else []

    def ensure_running(self, programs: list[str], timeout: float, lines: int, check_mode: bool) -> tuple[list[dict], dict]:
        """Start the programs that do not run; ([{name, was, stderr}], {name: state still not RUNNING})."""
        states = self.states()
        down = [name for name in programs if states.get(name, "UNKNOWN") not in ("RUNNING", "STARTING")]
        started = [{"name": name, "was": states.get(name, "UNKNOWN"), "stderr": self.stderr_tail(name, lines)}
                   for name in down]
        if not down or check_mode:
            return started, {}
        unknown = [name for name in down if name not in states]
        if unknown:
            return started, {name: "UNKNOWN (supervisor has no such program)" for name in unknown}
        for name in down:
            self.ctl("start", f"{name}:*")
        settled = self.settle(down, timeout)
        return started, {name: state for name, state in settled.items() if state != "RUNNING"}

    def stale(self, groups: list[str], files: list[str]) -> list[str]:
        """The groups with a RUNNING process that started before the newest of the files."""
        mtimes = [os.stat(path).st_mtime for path in files if os.path.exists(path)]
        if not groups or not mtimes:
            return []
        newest = max(mtimes)
        found = []
        for name, (state, info) in self.status().items():
            group = name.split(":", 1)[0]
            match = re.search(r"pid (\d+)", info)
            if group in groups and state == "RUNNING" and match:
                started = process_start_time(int(match.group(1)))
                if started is not None and started < newest and group not in found:
                    found.append(group)
        return sorted(found)

    def drain_in_background(self, groups: list[str], log_path: str) -> None:
        """One `supervisorctl update GROUP` per group, in parallel, detached from this module."""
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        script = (
            'conf="$1"; shift; echo "$(date -u +%FT%TZ) draining: $*"; '
            # The second update re-adds a program whose config came back while it drained
            # (a change reverted within a job's time); otherwise it does nothing.
            'for g in "$@"; do (supervisorctl -c "$conf" update "$g"; '
            'supervisorctl -c "$conf" update "$g" 2>&1 | grep -v "no such group") & done; wait; '
            'echo "$(date -u +%FT%TZ) drained: $*"'
        )
        # setsid -f: the drain runs in a session of its own and outlives this module; its output
        # goes to the log, so run_command returns as soon as it is forked.
        launcher = 'log="$1"; shift; exec setsid -f /bin/sh -c "$QF_DRAIN" sh "$@" >>"$log" 2>&1 </dev/null'
        rc, out, err = self.module.run_command(["/bin/sh", "-c", launcher, "launcher", log_path, self.config, *groups],
                                               environ_update={"QF_DRAIN": script})
        if rc != 0:
            self.module.fail_json(msg=f"could not start the background drain of {', '.join(groups)}: {(err or out).strip()}")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "config": {"type": "path", "required": True},
            "start_timeout": {"type": "int", "default": 60},
            "drain_log": {"type": "path", "default": "/var/log/supervisor/queuefleet-drain.log"},
            "programs": {"type": "list", "elements": "str", "default": []},
            "stderr_lines": {"type": "int", "default": 5},
            "stale_after": {"type": "list", "elements": "path", "default": []},
            "restart_stale": {"type": "list", "elements": "str", "default": []},
            "report_stale": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    result = {"changed": False, "added": [], "replaced": [], "draining": [], "held": [], "started": [], "stale": [],
              "refreshed": []}
    supervisor = Supervisor(module, module.params["config"])
    params = module.params
    if module.check_mode:
        result["started"] = supervisor.ensure_running(module.params["programs"], 0, module.params["stderr_lines"], True)[0]
        result["refreshed"] = supervisor.stale(params["restart_stale"], params["stale_after"])
        result["stale"] = supervisor.stale(params["report_stale"], params["stale_after"])
        result["changed"] = bool(result["started"] or result["refreshed"])
        module.exit_json(msg="check mode: supervisor rereads and applies the program files on a real run"
                         + (f"; would start {', '.join(p['name'] for p in result['started'])}" if result["started"] else ""),
                         **result)

    found = supervisor.reread()
    result["added"], result["replaced"] = found["available"], found["changed"]
    starting = found["changed"] + found["available"]
    if starting:
        supervisor.ctl("update", *starting)
        result["changed"] = True
        settled = supervisor.settle(starting, module.params["start_timeout"])
        failed = {group: state for group, state in settled.items() if state in FAILED}
        if failed:
            module.fail_json(
                msg="these programs did not start: "
                + "; ".join(f"{group} is {state}{supervisor.note(group)}"
                            + "".join(f"\n    {line}" for line in supervisor.stderr_tail(group, module.params["stderr_lines"]))
                            for group, state in sorted(failed.items()))
                + (f"; the programs they replace keep running: {', '.join(sorted(found['disappeared']))}"
                   if found["disappeared"] else "")
                + " (see `supervisorctl tail -f NAME stderr`)",
                **result,
            )

    wanted = [name for name in module.params["programs"] if name not in found["disappeared"]]
    result["started"], failing = supervisor.ensure_running(wanted, module.params["start_timeout"],
                                                           module.params["stderr_lines"], False)
    if result["started"]:
        result["changed"] = True
        module.warn("started programs that were not running: " + "; ".join(
            f"{p['name']} was {p['was']}" + (f" (stderr: {' | '.join(p['stderr'][-2:])})" if p["stderr"] else "")
            for p in result["started"]))
    if failing:
        module.fail_json(
            msg="these programs do not run: " + "; ".join(
                f"{name} is {state}{supervisor.note(name)}"
                + "".join(f"\n    {line}" for line in supervisor.stderr_tail(name, module.params["stderr_lines"]))
                for name, state in sorted(failing.items()))
            + "\n(see `supervisorctl tail -f NAME stderr`)",
            **result)

    result["refreshed"] = supervisor.stale(params["restart_stale"], params["stale_after"])
    for name in result["refreshed"]:
        supervisor.ctl("restart", f"{name}:*")
    if result["refreshed"]:
        result["changed"] = True
        module.warn("restarted onto their new settings: " + ", ".join(result["refreshed"]))
    result["stale"] = supervisor.stale(params["report_stale"], params["stale_after"])

    removed = found["disappeared"]
    if removed:
        states = supervisor.states()
        broken = {family(group) for group, state in states.items() if state in FAILED and group not in removed}
        result["held"] = sorted(group for group in removed if family(group) is not None and family(group) in broken)
        result["draining"] = sorted(group for group in removed if group not in result["held"])
        if result["draining"]:
            supervisor.drain_in_background(result["draining"], module.params["drain_log"])
            result["changed"] = True
        if result["held"]:
            module.warn("kept running because their pool has a failed process: " + ", ".join(result["held"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
