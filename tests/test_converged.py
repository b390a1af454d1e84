"""The converged skip (plugins/action/converged.py and plugins/modules/host_state.py): what it reads on
a host, how it names a difference, and what goes into the digest of a role's inputs.

The host side reads real files, users and commands here; the molecule scenario runs it through
Ansible on a real host with its services (molecule/default/tests/test_converge.py). A probe that
missed a change would let a deploy skip a role that has work to do.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "collections"))


def load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


host_state = load("plugins/modules/host_state.py", "queuefleet_host_state")
converged = load("plugins/action/converged.py", "queuefleet_converged")
SPEC = {"paths": [], "meta_paths": [], "globs": [], "packages": [], "services": [], "users": [], "groups": [],
        "commands": {}, "programs": {}, "owed": []}


def probe(**kwargs) -> dict:
    return host_state.read_items({**SPEC, **kwargs})[0]


def differs(before: dict, after: dict) -> list[str]:
    return host_state.compare(before, after)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "conf").write_text("a = 1\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "conf")
    (tmp_path / "prog-a.conf").write_text("[program:a]\n")
    return tmp_path


def test_one_item_per_path_by_kind(tree: Path):
    items = probe(paths=[str(tree / n) for n in ("conf", "dir", "link", "missing")])
    assert [items[f"path {tree}/{n}"].split()[0] for n in ("conf", "dir", "link", "missing")] == ["file", "dir", "link", "absent"]
    assert items[f"path {tree}/link"] == f"link {tree}/conf", "a link is recorded by its target"


@pytest.mark.parametrize("change", ["content", "mode", "remove", "new_glob_match", "relink"])
def test_every_kind_of_change_shows_and_is_named_by_its_full_path(tree: Path, change: str):
    kwargs = {"paths": [str(tree / "conf"), str(tree / "link")], "globs": [f"{tree}/prog-*.conf"]}
    before = probe(**kwargs)
    if change == "content":
        (tree / "conf").write_text("a = 2\n")
        expected = f"path {tree}/conf"
    elif change == "mode":
        os.chmod(tree / "conf", 0o600)
        expected = f"path {tree}/conf"
    elif change == "remove":
        (tree / "prog-a.conf").unlink()
        expected = f"path {tree}/prog-a.conf"
    elif change == "new_glob_match":
        (tree / "prog-b.conf").write_text("[program:b]\n")
        expected = f"path {tree}/prog-b.conf"
    else:
        (tree / "link").unlink()
        (tree / "link").symlink_to(tree / "dir")
        expected = f"path {tree}/link"
    after = probe(**kwargs)
    assert differs(before, after) == [expected]
    assert differs(after, after) == []


def test_two_paths_under_a_directory_with_a_space_do_not_shadow_each_other(tmp_path: Path):
    # The shell probe keyed lines by their first word: "/srv/my app/a.conf" and "/srv/my app/b.conf"
    # were one key, and a change to either could be missed.
    spaced = tmp_path / "my app"
    spaced.mkdir()
    (spaced / "a.conf").write_text("a\n")
    (spaced / "b.conf").write_text("b\n")
    kwargs = {"paths": [str(spaced / "a.conf"), str(spaced / "b.conf")]}
    before = probe(**kwargs)
    assert len(before) == 2
    (spaced / "b.conf").write_text("changed\n")
    assert differs(before, probe(**kwargs)) == [f"path {spaced}/b.conf"]


def test_mode_only_paths_ignore_their_bytes(tree: Path):
    before = probe(meta_paths=[str(tree / "conf")])
    (tree / "conf").write_text("the database grew\n")
    assert differs(before, probe(meta_paths=[str(tree / "conf")])) == []
    os.chmod(tree / "conf", 0o600)
    assert differs(before, probe(meta_paths=[str(tree / "conf")])) == [f"path {tree}/conf"]


def test_commands_run_as_argv_and_are_compared_by_their_output(tree: Path):
    command = {"accounts": ["cat", str(tree / "conf")]}
    before = probe(commands=command)
    assert before == probe(commands=command)
    (tree / "conf").write_text("a = 3\n")
    assert differs(before, probe(commands=command)) == ["command accounts"]


def test_paths_and_commands_with_shell_characters_run_no_shell(tmp_path: Path):
    odd = tmp_path / "it's; $(touch pwned)"
    odd.write_text("x")
    items = probe(paths=[str(odd)], commands={"odd": ["cat", str(odd)]})
    assert items[f"path {odd}"].startswith("file ")
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_a_missing_package_unit_user_or_group_is_a_stable_item_not_an_error():
    kwargs = {"packages": ["queuefleet-no-such-package"], "services": ["queuefleet-no-such.service"],
              "users": ["queuefleet-no-such-user"], "groups": ["queuefleet-no-such-group"]}
    items = probe(**kwargs)
    assert items == probe(**kwargs)
    assert items["package queuefleet-no-such-package"] == "absent"
    assert items["user queuefleet-no-such-user"] == "absent" and items["group queuefleet-no-such-group"] == "absent"


def test_users_are_read_with_their_groups():
    items = probe(users=["root"], groups=["root"])
    assert items["user root"].startswith("0 root /root ") and "root" in items["user root"].split()[-1]


def test_controller_inputs_leave_out_controller_paths_but_keep_the_rest():
    variables = {"queue_worker_package_src": "/home/alice/queuefleet/worker", "queue_worker_jobs": ["shop.jobs"],
                 "supervisor_programs": [{"name": "clock", "template": "/home/alice/site/service.conf.j2", "user": "nobody"}]}
    other_checkout = {"queue_worker_package_src": "/srv/ci/build-17/worker", "queue_worker_jobs": ["shop.jobs"],
                      "supervisor_programs": [{"name": "clock", "template": "/srv/ci/build-17/site/service.conf.j2", "user": "nobody"}]}
    names = ["queue_worker_package_src", "supervisor_programs[].template"]
    mine = converged.without_controller_inputs(variables, names)
    assert mine == converged.without_controller_inputs(other_checkout, names)
    assert mine == {"queue_worker_jobs": ["shop.jobs"], "supervisor_programs": [{"name": "clock", "user": "nobody"}]}


def test_the_libraries_that_render_the_output_are_inputs():
    assert converged.collection_version("community.mysql") not in ("absent", "unknown", "None")
    assert converged.collection_version("queuefleet.no_such_collection") == "absent"
    assert converged.JINJA2_VERSION != "?"


def test_the_role_digest_follows_every_file_but_not_bytecode(tmp_path: Path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "main.yml").write_text("---\n")
    first = converged.tree_digest(str(tmp_path))
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert converged.tree_digest(str(tmp_path)) == first
    (tmp_path / "tasks" / "main.yml").write_text("--- # changed\n")
    assert converged.tree_digest(str(tmp_path)) != first
