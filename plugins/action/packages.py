"""queuefleet.fleet.packages: install a role's packages, and say when check mode cannot go further.

The check-mode guard every role that installs packages needs, in one place (documentation:
plugins/modules/packages.py). In check mode on a fresh host, apt cannot say what it would install
until the package lists exist, and the rest of the role (users, directories, units of those
packages) cannot be evaluated before the packages are there. So in check mode this action first
refreshes the package lists (not managed state, never a change), asks apt what it would install,
and returns ``pending`` with a message saying so; the role then ends with one line:

    - ansible.builtin.meta: end_role
      when: __role_install.pending
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

ARGUMENT_SPEC = {
    "name": {"type": "list", "elements": "str", "required": True},
    "then": {"type": "str", "required": True},
    "users": {"type": "list", "elements": "str", "default": []},
    "install_recommends": {"type": "bool"},
    "cache_valid_time": {"type": "int", "default": 3600},
}


def pending_message(names, then, users, missing_users):
    """What check mode cannot evaluate, in the words the roles have always used."""
    packages = ", ".join(names)
    if users:
        return (f"check mode: a deploy would install {packages} if missing, create the user(s) "
                f"{', '.join(missing_users or users)}, {then}; none of it is evaluated in this run.")
    them = "it is" if len(names) == 1 else "they are"
    return f"check mode: {packages} would be installed first; {then} follow once {them}, and are not evaluated in this run."


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True
    _supports_check_mode = True
    _supports_async = False

    def _apt(self, args, task_vars, check_mode):
        """Run ansible.builtin.apt, in check mode or not whatever this task's mode is."""
        saved = self._task.check_mode
        self._task.check_mode = check_mode
        try:
            return self._execute_module(module_name="ansible.builtin.apt", module_args=args, task_vars=task_vars)
        finally:
            self._task.check_mode = saved

    def _missing_users(self, users, task_vars):
        missing = []
        for user in users:
            found = self._execute_module(module_name="ansible.builtin.getent",
                                         module_args={"database": "passwd", "key": user, "fail_key": False}, task_vars=task_vars)
            if found.get("failed"):
                raise AnsibleActionFail(f"cannot look up user {user}: {found.get('msg', '')}")
            if (found.get("ansible_facts", {}).get("getent_passwd") or {}).get(user) is None:
                missing.append(user)
        return missing

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        del validation
        if not args["name"]:
            raise AnsibleActionFail("name must list at least one package")
        check_mode = bool(self._task.check_mode)
        result.update(changed=False, pending=False, msg="", packages=args["name"], missing_users=[], cache_refreshed=False)

        if check_mode:
            # Without package lists apt cannot tell what it would install. Refreshing them
            # changes no managed state, so it is done for real and never counts as a change.
            refresh = self._apt({"update_cache": True, "cache_valid_time": args["cache_valid_time"]}, task_vars, check_mode=False)
            if refresh.get("failed"):
                raise AnsibleActionFail(f"check mode: cannot refresh the package lists: {refresh.get('msg', '')}")
            result["cache_refreshed"] = bool(refresh.get("cache_updated"))

        install_args = {"name": args["name"], "state": "present", "update_cache": True, "cache_valid_time": args["cache_valid_time"]}
        if args["install_recommends"] is not None:
            install_args["install_recommends"] = args["install_recommends"]
        install = self._apt(install_args, task_vars, check_mode=check_mode)
        for key in ("warnings", "deprecations"):
            if install.get(key):
                result[key] = install[key]
        if install.get("failed"):
            result.update(failed=True, msg=install.get("msg", "apt failed"),
                          **{key: install[key] for key in ("stdout", "stderr", "rc") if key in install})
            return result
        result["changed"] = bool(install.get("changed"))

        if check_mode:
            result["missing_users"] = self._missing_users(args["users"], task_vars) if args["users"] else []
            if result["changed"] or result["missing_users"]:
                result["pending"] = True
                result["msg"] = pending_message(args["name"], args["then"], args["users"], result["missing_users"])
                result["_ansible_verbose_always"] = True  # shown like a debug message, without -v
        return result
