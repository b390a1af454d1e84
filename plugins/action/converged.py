"""queuefleet.fleet.converged: skip a role whose last full run still holds on a host.

A role asks, before it changes anything: "did my last full run on this host have the same
inputs, and is what it left behind still there, byte for byte?" If both hold, a re-run would
change nothing, and the role ends there (``meta: end_role``): no package check, no template,
no service call. That is what makes a no-op deploy cheap; everything else is a full run.

* inputs: every variable of the role's argument specs (``meta/argument_specs.yml``, its
  documented inputs) as this run resolves them, plus ``inputs`` given to the task, the role's
  own files (tasks, templates, defaults, vars), the collection's plugins (this one, the filters
  and modules the roles call), the ansible-core version
  and the host facts the roles read (OS release, architecture, Python, node name). Hashed on
  the controller: the host only ever sees the digest. ``role_variables: false`` leaves the
  argument-spec variables out, for a part of a role that depends on a few of them only (given
  in ``inputs``).
* host state: one shell command over the connection, no module upload: the content, mode and
  owner of the files the role manages, the version and status of its packages, whether its
  services are enabled and active, and the output of read-only commands (database accounts,
  say), each as one line.

``state: check`` compares both with the marker in ``/var/lib/queuefleet/converged/<name>``
and returns ``converged`` (and, when not, what differs). ``state: record`` writes the marker
after a full run, once the role's handlers have run; it never counts as a change. Nothing is
written in check mode. ``enabled: false`` (a role's ``<role>_converged_skip``), or the fleet-wide
``queuefleet_converged_skip: false`` in the inventory or with ``-e``, forces a full run (and
still records).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import time

import yaml

from ansible import __version__ as ANSIBLE_VERSION
from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

MARKER_DIR = "/var/lib/queuefleet/converged"
FORMAT = "queuefleet-converged v1"
# The collection's plugins/ (this file's grandparent): the filters and modules the roles call
# are inputs as much as the roles' own files.
PLUGINS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATE_SEPARATOR = "@@queuefleet-state@@"
# The host facts a role's templates and OS variables may read; volatile ones (uptime, free
# memory, addresses that DHCP may change) are left out on purpose.
STABLE_FACTS = ("architecture", "distribution", "distribution_release", "distribution_version",
                "os_family", "nodename", "processor_vcpus", "memtotal_mb")

ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "default": "check", "choices": ["check", "record"]},
    "enabled": {"type": "bool", "default": True},
    "inputs": {"type": "raw", "default": None},
    "role_variables": {"type": "bool", "default": True},
    "paths": {"type": "list", "elements": "str", "default": []},
    "globs": {"type": "list", "elements": "str", "default": []},
    "packages": {"type": "list", "elements": "str", "default": []},
    "services": {"type": "list", "elements": "str", "default": []},
    "commands": {"type": "dict", "default": {}},
}

# One line per file: kind, path, mode, owner and content digest (a link: its target).
_PROBE_FUNCTION = (
    "qf_path() { "
    "if [ -L \"$1\" ]; then printf 'link %s %s\\n' \"$1\" \"$(readlink \"$1\")\"; "
    "elif [ -f \"$1\" ]; then printf 'file %s %s %s\\n' \"$1\" \"$(stat -c '%a %U:%G' \"$1\")\" "
    "\"$(sha256sum < \"$1\" | cut -d' ' -f1)\"; "
    "elif [ -d \"$1\" ]; then printf 'dir %s %s\\n' \"$1\" \"$(stat -c '%a %U:%G' \"$1\")\"; "
    "else printf 'absent %s\\n' \"$1\"; fi; }"
)


def tree_digest(root: str) -> str:
    """sha256 over every file under root (relative path and bytes), in a stable order."""
    digest = hashlib.sha256()
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(directory, name)
            digest.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as handle:
                digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def probe_script(paths: list[str], globs: list[str], packages: list[str], services: list[str],
                 commands: dict[str, str]) -> str:
    """A POSIX shell script printing one line per piece of host state, in a stable order."""
    quote = shlex.quote
    lines = [_PROBE_FUNCTION]
    lines += [f"qf_path {quote(path)}" for path in paths]
    # Every file a glob matches; an unmatched glob (left literal by the shell) adds no line.
    lines += [f"for qf_f in {pattern}; do if [ -e \"$qf_f\" ] || [ -L \"$qf_f\" ]; then qf_path \"$qf_f\"; fi; done"
              for pattern in globs]
    # One line per package and per service, also when it does not exist (then a stable word).
    for package in packages:
        lines.append(f"dpkg-query -W -f='package ${{Package}} ${{Version}} ${{db:Status-Abbrev}}\\n' {quote(package)} "
                     f"2>/dev/null || printf 'package %s absent\\n' {quote(package)}")
    for service in services:
        lines.append(f"printf 'service %s %s %s\\n' {quote(service)} "
                     f"\"$(systemctl is-enabled {quote(service)} 2>/dev/null | head -n1)\" "
                     f"\"$(systemctl is-active {quote(service)} 2>/dev/null | head -n1)\"")
    for label in sorted(commands):
        lines.append(f"printf 'command %s %s\\n' {quote(label)} "
                     f"\"$( ( {commands[label]} ) 2>&1 | sha256sum | cut -d' ' -f1)\"")
    lines.append("true")  # the probe's own status: every line above records, none decides
    return "\n".join(lines)


PATH_KINDS = ("file", "dir", "link", "absent")


def differences(recorded: list[str], current: list[str]) -> list[str]:
    """What changed between two probes, each item named once: "file /etc/x.conf" whether it was
    edited, removed or created, "package redis-server", "service redis-server", "command accounts"."""
    def keyed(lines: list[str]) -> dict[tuple[str, str], str]:
        items = {}
        for line in lines:
            kind, _, rest = line.partition(" ")
            if rest:
                name = rest.split(" ")[0]
                items[("path" if kind in PATH_KINDS else kind, name)] = line
        return items

    def label(key: tuple[str, str]) -> str:
        kinds = [line.split(" ")[0] for line in (now.get(key), before.get(key)) if line]
        present = [kind for kind in kinds if kind != "absent"]
        return f"{(present or kinds)[0]} {key[1]}"

    before, now = keyed(recorded), keyed(current)
    return sorted(label(key) for key in set(before) | set(now) if before.get(key) != now.get(key))


class ActionModule(ActionBase):
    """Compare a host with the last full run of a role (check), or record that run (record)."""

    TRANSFERS_FILES = False
    _requires_connection = True
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        validation = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        if validation.error_messages:
            raise AnsibleActionFail("queuefleet.fleet.converged: " + "; ".join(validation.error_messages))
        args = validation.validated_parameters
        name = args["name"]
        if not name.replace("_", "").replace("-", "").isalnum():
            raise AnsibleActionFail(f"queuefleet.fleet.converged: name must be a plain word, got {name!r}")
        marker = f"{MARKER_DIR}/{name}"
        inputs = self._inputs_digest(args["inputs"], task_vars or {}, args["role_variables"])
        probe = probe_script(args["paths"], args["globs"], args["packages"], args["services"],
                             args["commands"])
        result.update(changed=False, converged=False, inputs=inputs)

        if args["state"] == "record":
            if self._task.check_mode:
                result["msg"] = f"{name}: check mode, nothing recorded"
                return result
            header = f"{FORMAT} {inputs} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
            script = (f"umask 077; mkdir -p {MARKER_DIR} && "
                      f"{{ printf '%s\\n' {shlex.quote(header)}; {probe}\n}} > {marker}.tmp "
                      f"&& mv {marker}.tmp {marker}")
            self._execute(script)
            result["msg"] = f"{name}: recorded this run's inputs and host state"
            return result

        fleet_wide = boolean(self._templar.template((task_vars or {}).get("queuefleet_converged_skip", True)), strict=False)
        if not (args["enabled"] and fleet_wide):
            knob = "queuefleet_converged_skip" if not fleet_wide else "the role's converged skip"
            result["msg"] = f"{name}: {knob} is off, full run"
            return result
        output = self._execute(f"cat {marker} 2>/dev/null; echo {STATE_SEPARATOR}\n{probe}")
        recorded_text, _, current_text = output.partition(STATE_SEPARATOR + "\n")
        recorded_lines = recorded_text.splitlines()
        current_lines = current_text.splitlines()
        header = recorded_lines[0].split() if recorded_lines else []
        if len(header) != 4 or " ".join(header[:2]) != FORMAT:
            result["msg"] = f"{name}: no record of a full run on this host, full run"
            return result
        if header[2] != inputs:
            result["msg"] = (f"{name}: inputs differ from the full run of {header[3]} "
                             "(variables, role files or host facts), full run")
            return result
        changed = differences(recorded_lines[1:], current_lines)
        if changed:
            result["differs"] = changed
            result["msg"] = f"{name}: host state differs from the full run of {header[3]} ({', '.join(changed)}), full run"
            return result
        result["converged"] = True
        result["msg"] = (f"{name}: inputs and host state ({len(current_lines)} items) unchanged since the full "
                         f"run of {header[3]}: nothing to do")
        return result

    def _inputs_digest(self, inputs, task_vars: dict, role_variables: bool) -> str:
        facts = task_vars.get("ansible_facts", {})
        role = self._task._role
        document = {
            "inputs": inputs,
            "role_variables": self._role_variables(task_vars) if role_variables else None,
            "facts": {key: facts.get(key) for key in STABLE_FACTS},
            "python": (facts.get("python") or {}).get("version"),
            "role_files": tree_digest(role._role_path) if role else None,
            "plugins": tree_digest(PLUGINS_DIR),
            "ansible": ANSIBLE_VERSION,
        }
        blob = json.dumps(document, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    def _role_variables(self, task_vars: dict) -> dict:
        """The role's documented inputs (its argument specs' options), resolved for this host."""
        role = self._task._role
        if role is None:
            return {}
        spec_path = os.path.join(role._role_path, "meta", "argument_specs.yml")
        try:
            with open(spec_path, encoding="utf-8") as handle:
                specs = yaml.safe_load(handle) or {}
        except FileNotFoundError:
            return {}
        names = sorted((specs.get("argument_specs", {}).get("main", {}).get("options") or {}))
        return {name: self._templar.template(task_vars[name]) for name in names if name in task_vars}

    def _execute(self, script: str) -> str:
        run = self._low_level_execute_command(script, sudoable=True)
        if run.get("rc", 1) != 0:
            raise AnsibleActionFail(f"queuefleet.fleet.converged: the host state probe failed (rc {run.get('rc')}): "
                                    f"{(run.get('stderr') or run.get('stdout') or '')[-500:]}")
        return run.get("stdout", "")
