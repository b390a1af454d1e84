"""queuefleet.fleet.converged: skip a role whose last full run still holds on a host.

A role asks, before it changes anything: "did my last full run on this host have the same
inputs, is what it left behind still there, byte for byte, and does every service it runs still
run what it was given?" If all three hold, a re-run would change nothing, and the role ends there
(``meta: end_role``): no package check, no template, no service call. That is what makes a no-op
deploy cheap; everything else is a full run.

* inputs (hashed here, on the controller; the host only ever sees the digest): every variable of
  the role's argument specs as this run resolves them, except the controller-side ones named in
  ``controller_inputs`` (a path on this machine is not an input: another checkout or operator
  must get the same skip; the role gives their content's digest in ``inputs`` instead); plus
  ``inputs``, the role's own files, the collection's plugins, and the versions of what renders the
  output (ansible-core, Jinja2, the collections the roles call); and the host facts the roles read.
* host state (read on the host by the queuefleet.fleet.host_state module, one item per full path
  or name, no shell): files, packages, units, users, groups, read-only commands, the supervisor
  programs that must run, and what each running service still owes its config file (a restart,
  a reload, a live setting: plugins/module_utils/service_config.py).

``state: check`` compares both with the marker the last full run wrote and returns
``converged`` (and, when not, what differs). ``state: record`` writes the marker after a full
run, once its handlers have run; it refuses while a service still owes its config, so a run
never certifies a host whose restart was lost. It never counts as a change and writes nothing in
check mode. ``enabled: false`` (a role's ``<role>_converged_skip``) or the fleet-wide
``queuefleet_converged_skip: false`` forces a full run (which still records).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os

import yaml

from ansible import __version__ as ANSIBLE_VERSION
from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

try:
    from jinja2 import __version__ as JINJA2_VERSION
except ImportError:  # pragma: no cover - ansible-core requires Jinja2
    JINJA2_VERSION = "?"

# The collection's plugins/ (this file's grandparent): the filters and modules the roles call
# are inputs as much as the roles' own files.
PLUGINS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Collections whose modules shape what the roles do (galaxy.yml's dependencies).
LIBRARY_COLLECTIONS = ("community.mysql",)
# The host facts a role's templates and OS variables may read; volatile ones (uptime, free
# memory, addresses that DHCP may change) are left out on purpose.
STABLE_FACTS = ("architecture", "distribution", "distribution_release", "distribution_version",
                "os_family", "nodename", "processor_vcpus", "memtotal_mb")
# What the host_state module reads, passed through as given.
PROBE_KEYS = ("paths", "meta_paths", "globs", "packages", "services", "users", "groups", "commands", "programs", "owed")

ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "default": "check", "choices": ["check", "record"]},
    "enabled": {"type": "bool", "default": True},
    "inputs": {"type": "raw", "default": None},
    "role_variables": {"type": "bool", "default": True},
    "controller_inputs": {"type": "list", "elements": "str", "default": []},
    "paths": {"type": "list", "elements": "str", "default": []},
    "meta_paths": {"type": "list", "elements": "str", "default": []},
    "globs": {"type": "list", "elements": "str", "default": []},
    "packages": {"type": "list", "elements": "str", "default": []},
    "services": {"type": "list", "elements": "str", "default": []},
    "users": {"type": "list", "elements": "str", "default": []},
    "groups": {"type": "list", "elements": "str", "default": []},
    "commands": {"type": "dict", "default": {}},
    "programs": {"type": "dict", "default": {}},
    "owed": {"type": "list", "elements": "dict", "default": []},
}


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


def without_controller_inputs(variables: dict, names: list[str]) -> dict:
    """The role's variables less the controller-side ones: "var" drops a variable, "var[].key" drops
    that key from every dict of a list variable (a per-item template path, say)."""
    kept = dict(variables)
    for name in names:
        var, key = (name.split("[].", 1) + [""])[:2]
        if not key:
            kept.pop(var, None)
        elif isinstance(kept.get(var), list):
            kept[var] = [{k: v for k, v in item.items() if k != key} if isinstance(item, dict) else item
                         for item in kept[var]]
    return kept


def collection_version(name: str) -> str:
    """The installed version of a collection (its MANIFEST.json or galaxy.yml), or "absent"."""
    try:
        package = importlib.import_module("ansible_collections." + name)
    except ImportError:
        return "absent"
    for root in getattr(package, "__path__", []):
        for meta, key in (("MANIFEST.json", None), ("galaxy.yml", "version")):
            path = os.path.join(root, meta)
            if os.path.exists(path):
                with open(path, encoding="utf-8") as handle:
                    data = json.load(handle) if meta.endswith(".json") else yaml.safe_load(handle)
                return str((data.get("collection_info") or {}).get("version") if key is None else data.get(key))
    return "unknown"


class ActionModule(ActionBase):
    """Compare a host with the last full run of a role (check), or record that run (record)."""

    TRANSFERS_FILES = False
    _requires_connection = True
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        validation = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        if validation.error_messages:
            raise AnsibleActionFail("queuefleet.fleet.converged: " + "; ".join(validation.error_messages))
        args = validation.validated_parameters
        name = args["name"]
        if not name.replace("_", "").replace("-", "").isalnum():
            raise AnsibleActionFail(f"queuefleet.fleet.converged: name must be a plain word, got {name!r}")
        result.update(changed=False, converged=False)

        if args["state"] == "check":
            fleet_wide = boolean(self._templar.template(task_vars.get("queuefleet_converged_skip", True)), strict=False)
            if not (args["enabled"] and fleet_wide):
                knob = "queuefleet_converged_skip" if not fleet_wide else "the role's converged skip"
                result["msg"] = f"{name}: {knob} is off, full run"
                return result
        elif self._task.check_mode:
            result["msg"] = f"{name}: check mode, nothing recorded"
            return result

        inputs = self._inputs_digest(args, task_vars)
        module_args = {key: args[key] for key in PROBE_KEYS}
        module_args.update(name=name, state=args["state"], inputs=inputs)
        found = self._execute_module(module_name="queuefleet.fleet.host_state", module_args=module_args,
                                     task_vars=task_vars)
        found.pop("invocation", None)
        if found.get("failed"):
            result.update(failed=True, msg=f"{name}: {found.get('msg', 'host_state failed')}", owed=found.get("owed", {}))
            return result
        result["inputs"] = inputs
        if args["state"] == "record":
            result["msg"] = f"{name}: recorded this run's inputs and host state ({found.get('items')} items)"
            return result
        result["converged"] = bool(found.get("converged"))
        when = found.get("recorded_at") or "?"
        if result["converged"]:
            result["msg"] = (f"{name}: inputs and host state ({found.get('items')} items) unchanged since the full "
                             f"run of {when}: nothing to do")
        elif found.get("differs"):
            result["differs"] = found["differs"]
            shown = ", ".join(found["differs"][:12]) + (" ..." if len(found["differs"]) > 12 else "")
            owed = "; ".join(f"{service} owes {', '.join(f'{k} {v}' for k, v in what.items())}"
                             for service, what in sorted((found.get("owed") or {}).items()))
            result["msg"] = (f"{name}: host state differs from the full run of {when} ({shown})"
                             + (f"; {owed}" if owed else "") + ", full run")
        else:
            since = f" since the full run of {when}" if found.get("recorded_at") else ""
            result["msg"] = f"{name}: {found.get('reason') or 'not converged'}{since}, full run"
        return result

    def _inputs_digest(self, args: dict, task_vars: dict) -> str:
        facts = task_vars.get("ansible_facts", {})
        role = self._task._role
        variables = self._role_variables(task_vars) if args["role_variables"] else None
        if variables is not None:
            variables = without_controller_inputs(variables, args["controller_inputs"])
        document = {
            "inputs": args["inputs"],
            "role_variables": variables,
            "facts": {key: facts.get(key) for key in STABLE_FACTS},
            "python": (facts.get("python") or {}).get("version"),
            "role_files": tree_digest(role._role_path) if role else None,
            "plugins": tree_digest(PLUGINS_DIR),
            "libraries": {"ansible-core": ANSIBLE_VERSION, "jinja2": JINJA2_VERSION,
                          **{name: collection_version(name) for name in LIBRARY_COLLECTIONS}},
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
