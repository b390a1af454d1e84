"""queuefleet.fleet.managed_files, the module that writes the queue_worker role's program files in one
run (one round trip instead of a stat and a file or copy per file), run through ansible on this host."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"


def run(args: dict, *flags: str, expect_rc: int = 0) -> dict:
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
           "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
    result = subprocess.run([str(VENV_BIN / "ansible"), "localhost", "-c", "local", "-m", "queuefleet.fleet.managed_files",
                             "-a", json.dumps(args), *flags], capture_output=True, text=True, env=env, check=False, timeout=120)
    assert result.returncode == expect_rc, result.stdout[-3000:] + result.stderr[-2000:]
    return json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (p.read_text(), p.stat().st_mode & 0o7777) for p in sorted(directory.iterdir())}


def test_writes_what_differs_prunes_what_is_gone_and_a_second_run_changes_nothing(tmp_path):
    confd = tmp_path / "conf.d"
    confd.mkdir()
    (confd / "app-gone.conf").write_text("[program:gone]\n")  # a pool no longer in the inventory
    (confd / "other.conf").write_text("[program:other]\n")  # not ours: the patterns do not match it
    (confd / "app-exporter.conf").write_text("[program:exporter]\n")  # a side program now disabled
    files = [{"path": str(confd / "app-default.conf"), "content": "[program:default]\nnumprocs=2\n", "mode": "0640"},
             {"path": str(confd / "app-slow.conf"), "content": "[program:slow]\n"}]
    args = {"files": files, "absent": [str(confd / "app-exporter.conf"), str(confd / "never-there.conf")],
            "prune_dir": str(confd), "prune_patterns": ["app-*.conf"]}

    first = run(args)
    assert first["changed"] and first["written"] == [f["path"] for f in files]
    assert sorted(first["removed"]) == [str(confd / "app-exporter.conf"), str(confd / "app-gone.conf")]
    assert snapshot(confd) == {"app-default.conf": ("[program:default]\nnumprocs=2\n", 0o640),
                               "app-slow.conf": ("[program:slow]\n", 0o644), "other.conf": ("[program:other]\n", 0o644)}
    assert not list(confd.glob(".managed_files-*")), "a temporary file was left behind"

    again = run(args)
    assert not again["changed"] and again["written"] == [] and again["removed"] == []

    # A numprocs change rewrites one file; a mode changed by hand is put back without a content diff.
    (confd / "app-slow.conf").chmod(0o600)
    files[0]["content"] = "[program:default]\nnumprocs=3\n"
    third = run(args, "--diff")
    assert third["written"] == [f["path"] for f in files]
    assert [d["before_header"] for d in third["diff"]] == [files[0]["path"]]
    assert third["diff"][0]["before"].endswith("numprocs=2\n") and third["diff"][0]["after"].endswith("numprocs=3\n")
    assert snapshot(confd)["app-slow.conf"] == ("[program:slow]\n", 0o644)


def test_check_mode_reports_the_changes_and_writes_nothing(tmp_path):
    confd = tmp_path / "conf.d"
    confd.mkdir()
    (confd / "app-old.conf").write_text("old\n")
    (confd / "app-default.conf").write_text("numprocs=2\n")
    before = snapshot(confd)
    result = run({"files": [{"path": str(confd / "app-default.conf"), "content": "numprocs=3\n"},
                            {"path": str(tmp_path / "missing-dir" / "x.conf"), "content": "x\n"}],
                  "prune_dir": str(confd), "prune_patterns": ["app-*.conf"]}, "--check", "--diff")
    assert result["changed"]
    assert result["written"] == [str(confd / "app-default.conf"), str(tmp_path / "missing-dir" / "x.conf")]
    assert result["removed"] == [str(confd / "app-old.conf")]
    assert {d["before_header"] for d in result["diff"]} >= {str(confd / "app-default.conf"), str(confd / "app-old.conf")}
    assert snapshot(confd) == before and not (tmp_path / "missing-dir").exists()


def test_bad_input_is_refused_before_any_file_changes(tmp_path):
    confd = tmp_path / "conf.d"
    confd.mkdir()
    good = {"path": str(confd / "a.conf"), "content": "a\n"}
    cases = [
        ({"files": [good, {"path": str(confd / "b.conf"), "content": "b\n", "mode": "rw-r--r--"}]}, "not an octal mode"),
        ({"files": [good, {"path": str(confd / "b.conf"), "content": "b\n", "owner": "no-such-user-qf"}]}, "no user"),
        ({"files": [good, dict(good)]}, "listed twice"),
        ({"files": [good, {"path": "relative.conf", "content": "r\n"}]}, "not an absolute path"),
        ({"files": [good, {"path": str(tmp_path / "nowhere" / "b.conf"), "content": "b\n"}]}, "does not exist"),
    ]
    for args, message in cases:
        result = run(args, expect_rc=2)
        assert message in result["msg"], (message, result["msg"])
        assert list(confd.iterdir()) == [], f"{message}: a file was written"
