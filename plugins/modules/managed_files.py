#!/usr/bin/python
"""Write several small files in one call, remove the ones no longer wanted, and say which changed."""

from __future__ import annotations

DOCUMENTATION = r"""
module: managed_files
short_description: Write several files rendered on the controller in one call, and remove the unwanted ones
description:
  - Writes each file of O(files) whose content, mode, owner or group differs from the host's, atomically (a
    temporary file in the same directory, then a rename), and leaves the others untouched.
  - Removes the paths of O(absent), and the files of O(prune_dir) that match O(prune_patterns) and are not in
    O(files).
  - One module run for what would be a C(template) task per file (two module runs each, a stat and then a file
    or a copy), so a role that writes many small files pays one round trip instead of two per file. Render the
    contents on the controller, for example with the C(ansible.builtin.template) lookup.
  - Check mode reports what would change without writing; C(--diff) shows each changed file.
version_added: 1.1.0
author: queuefleet (@queuefleet)
options:
  files:
    description: The files to write.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path of the file; its directory must exist.
        type: path
        required: true
      content:
        description: The whole content of the file.
        type: str
        required: true
      mode:
        description: Octal mode, as a string such as C("0640").
        type: str
        default: "0644"
      owner:
        description: Owning user.
        type: str
        default: root
      group:
        description: Owning group.
        type: str
        default: root
  absent:
    description: Paths to remove where they exist.
    type: list
    elements: path
    default: []
  prune_dir:
    description: A directory whose files matching O(prune_patterns) and not in O(files) are removed.
    type: path
  prune_patterns:
    description: Shell patterns of the file names O(prune_dir) prunes (only files directly in it).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Render one supervisor program per pool on the controller
  ansible.builtin.set_fact:
    program_files: >-
      {{ program_files | default([]) + [{'path': '/etc/supervisor/conf.d/app-' ~ pool.name ~ '.conf',
          'content': lookup('ansible.builtin.template', 'program.conf.j2', template_vars={'pool': pool}), 'mode': '0640'}] }}
  loop: "{{ pools }}"
  loop_control:
    loop_var: pool

- name: Write them in one run, remove the files of pools that are gone and an old program
  queuefleet.fleet.managed_files:
    files: "{{ program_files }}"
    absent: [/etc/supervisor/conf.d/old-exporter.conf]
    prune_dir: /etc/supervisor/conf.d
    prune_patterns: ["app-*.conf"]
"""

RETURN = r"""
written:
  description: The files written (or that would be, in check mode), content or attributes changed.
  type: list
  elements: str
  returned: always
removed:
  description: The files removed (or that would be, in check mode).
  type: list
  elements: str
  returned: always
"""

import fnmatch
import grp
import os
import pwd
import tempfile

from ansible.module_utils.basic import AnsibleModule


def _ids(module: AnsibleModule, spec: dict) -> tuple[int, int]:
    try:
        return pwd.getpwnam(spec["owner"]).pw_uid, grp.getgrnam(spec["group"]).gr_gid
    except KeyError:
        if module.check_mode:  # a user the run would create first: the file would change
            return -1, -1
        module.fail_json(msg=f"managed_files: {spec['path']}: no user {spec['owner']!r} or no group {spec['group']!r} on this host")
    return -1, -1  # not reached: fail_json exits


def _mode(module: AnsibleModule, spec: dict) -> int:
    try:
        mode = int(str(spec["mode"]), 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        module.fail_json(msg=f"managed_files: {spec['path']}: mode {spec['mode']!r} is not an octal mode such as \"0640\"")
    return mode


def _current(path: str) -> tuple[str | None, os.stat_result | None]:
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return handle.read(), os.stat(path)
    except FileNotFoundError:
        return None, None
    except UnicodeDecodeError:
        return "", os.stat(path)


def _write(path: str, content: str, mode: int, uid: int, gid: int) -> None:
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".managed_files-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chown(tmp, uid, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "files": {"type": "list", "elements": "dict", "default": [], "options": {
                "path": {"type": "path", "required": True},
                "content": {"type": "str", "required": True},
                "mode": {"type": "str", "default": "0644"},
                "owner": {"type": "str", "default": "root"},
                "group": {"type": "str", "default": "root"},
            }},
            "absent": {"type": "list", "elements": "path", "default": []},
            "prune_dir": {"type": "path"},
            "prune_patterns": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    files = module.params["files"]
    paths = [spec["path"] for spec in files]
    if len(set(paths)) != len(paths):
        module.fail_json(msg=f"managed_files: a path is listed twice: {sorted(p for p in set(paths) if paths.count(p) > 1)}")
    for spec in files:
        if not os.path.isabs(spec["path"]):
            module.fail_json(msg=f"managed_files: {spec['path']!r} is not an absolute path")
        if not os.path.isdir(os.path.dirname(spec["path"])) and not module.check_mode:
            module.fail_json(msg=f"managed_files: the directory of {spec['path']} does not exist")

    # Every file is checked before any is written: a bad mode or owner changes nothing.
    plan = []
    for spec in files:
        mode = _mode(module, spec)
        uid, gid = _ids(module, spec)
        plan.append((spec["path"], spec["content"], mode, uid, gid))

    written: list[str] = []
    diffs: list[dict] = []
    for path, content, mode, uid, gid in plan:
        before, stat = _current(path)
        same_content = before == content
        same_attrs = stat is not None and (stat.st_mode & 0o7777, stat.st_uid, stat.st_gid) == (mode, uid, gid)
        if same_content and same_attrs:
            continue
        written.append(path)
        if not same_content:
            diffs.append({"before_header": path, "after_header": path, "before": before or "", "after": content})
        if module.check_mode:
            continue
        try:
            _write(path, content, mode, uid, gid)
        except OSError as err:
            module.fail_json(msg=f"managed_files: could not write {path}: {err}", written=written[:-1], removed=[])

    unwanted = list(module.params["absent"])
    prune_dir = module.params["prune_dir"]
    if prune_dir and module.params["prune_patterns"] and os.path.isdir(prune_dir):
        for name in sorted(os.listdir(prune_dir)):
            path = os.path.join(prune_dir, name)
            if (os.path.isfile(path) and path not in paths
                    and any(fnmatch.fnmatchcase(name, pattern) for pattern in module.params["prune_patterns"])):
                unwanted.append(path)
    removed: list[str] = []
    for path in dict.fromkeys(unwanted):
        if path in paths or not os.path.lexists(path):
            continue
        removed.append(path)
        diffs.append({"before_header": path, "after_header": path + " (removed)", "before": _current(path)[0] or "", "after": ""})
        if not module.check_mode:
            try:
                os.unlink(path)
            except OSError as err:
                module.fail_json(msg=f"managed_files: could not remove {path}: {err}", written=written, removed=removed[:-1])

    result = {"changed": bool(written or removed), "written": written, "removed": removed}
    if module._diff and diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
