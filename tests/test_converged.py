"""The queuefleet.fleet.converged action (plugins/action/converged.py): its host probe and its comparisons.

The probe is a POSIX shell script; these tests run it with the real shell and coreutils on
real files (the molecule scenario runs it through Ansible on a real host: test_operations
test_13). A probe that missed a change would let a deploy skip a role that has work to do.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[1] / "plugins/action/converged.py"
spec = importlib.util.spec_from_file_location("queuefleet_converged", PLUGIN)
converged = importlib.util.module_from_spec(spec)
spec.loader.exec_module(converged)


def probe(**kwargs) -> list[str]:
    args = {"paths": [], "globs": [], "packages": [], "services": [], "commands": {}, **kwargs}
    script = converged.probe_script(**args)
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "conf").write_text("a = 1\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "conf")
    (tmp_path / "prog-a.conf").write_text("[program:a]\n")
    return tmp_path


def test_one_line_per_path_by_kind(tree: Path):
    lines = probe(paths=[str(tree / n) for n in ("conf", "dir", "link", "missing")])
    kinds = [line.split()[0] for line in lines]
    assert kinds == ["file", "dir", "link", "absent"], lines
    assert lines[2].endswith(str(tree / "conf")), "a link is recorded by its target"


@pytest.mark.parametrize("change", ["content", "mode", "remove", "new_glob_match", "relink"])
def test_every_kind_of_change_shows_and_is_named(tree: Path, change: str):
    kwargs = {"paths": [str(tree / "conf"), str(tree / "link")], "globs": [f"{tree}/prog-*.conf"]}
    before = probe(**kwargs)
    if change == "content":
        (tree / "conf").write_text("a = 2\n")
        expected = f"file {tree}/conf"
    elif change == "mode":
        os.chmod(tree / "conf", 0o600)
        expected = f"file {tree}/conf"
    elif change == "remove":
        (tree / "prog-a.conf").unlink()
        expected = f"file {tree}/prog-a.conf"
    elif change == "new_glob_match":
        (tree / "prog-b.conf").write_text("[program:b]\n")
        expected = f"file {tree}/prog-b.conf"
    else:
        (tree / "link").unlink()
        (tree / "link").symlink_to(tree / "dir")
        expected = f"link {tree}/link"
    after = probe(**kwargs)
    assert converged.differences(before, after) == [expected]
    assert converged.differences(after, after) == []


def test_a_removed_or_created_path_is_named_once_as_a_file(tree: Path):
    kwargs = {"paths": [str(tree / "conf"), str(tree / "new")]}
    before = probe(**kwargs)
    (tree / "conf").unlink()
    (tree / "new").write_text("x")
    assert converged.differences(before, probe(**kwargs)) == [f"file {tree}/conf", f"file {tree}/new"]


def test_a_package_and_a_service_of_the_same_name_are_two_items():
    before = ["package supervisor 4.2.5-3 ii", "service supervisor enabled active"]
    now = ["package supervisor 4.2.5-3 ii", "service supervisor enabled inactive"]
    assert converged.differences(before, now) == ["service supervisor"]


def test_commands_are_compared_by_their_output(tree: Path):
    command = {"accounts": f"cat {tree}/conf"}
    before = probe(commands=command)
    assert before == probe(commands=command)
    (tree / "conf").write_text("a = 3\n")
    assert converged.differences(before, probe(commands=command)) == ["command accounts"]


def test_a_missing_package_or_unit_is_a_stable_line_not_an_error():
    lines = probe(packages=["queuefleet-no-such-package"], services=["queuefleet-no-such.service"])
    assert lines == probe(packages=["queuefleet-no-such-package"], services=["queuefleet-no-such.service"])
    assert [line.split()[0] for line in lines] == ["package", "service"], lines
    assert lines[0] == "package queuefleet-no-such-package absent"


def test_paths_with_shell_characters_are_quoted(tmp_path: Path):
    odd = tmp_path / "it's; $(touch pwned)"
    odd.write_text("x")
    assert probe(paths=[str(odd)])[0].startswith(f"file {odd} ")
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_the_role_digest_follows_every_file_but_not_bytecode(tmp_path: Path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "main.yml").write_text("---\n")
    first = converged.tree_digest(str(tmp_path))
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert converged.tree_digest(str(tmp_path)) == first
    (tmp_path / "tasks" / "main.yml").write_text("--- # changed\n")
    assert converged.tree_digest(str(tmp_path)) != first
