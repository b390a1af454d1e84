"""The release id of roles/queue_worker/files/build_wheelhouse.py (runs on the controller)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "roles/queue_worker/files/build_wheelhouse.py"


@pytest.fixture(scope="module")
def builder():
    spec = importlib.util.spec_from_file_location("build_wheelhouse", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def source(tmp_path: Path) -> Path:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "jobs.py").write_text("def run(data):\n    return data\n")
    return tmp_path / "app"


def test_a_python_point_update_is_not_a_new_release(builder, source):
    key = builder.release_key
    platform = "manylinux_2_28_x86_64"
    assert key([source], [], "3.11.2", platform) == key([source], [], "3.11.9", platform)


def test_what_changes_the_wheels_or_the_code_is_a_new_release(builder, source):
    key = builder.release_key
    base = key([source], [], "3.11.2", "manylinux_2_28_x86_64")
    assert key([source], [], "3.13.5", "manylinux_2_28_x86_64") != base
    assert key([source], [], "3.11.2", "manylinux_2_28_aarch64") != base
    assert key([source], ["requests==2.32.3"], "3.11.2", "manylinux_2_28_x86_64") != base
    (source / "jobs.py").write_text("def run(data):\n    return None\n")
    assert key([source], [], "3.11.2", "manylinux_2_28_x86_64") != base


def test_the_archive_holds_every_wheel_root_owned_and_is_written_once(builder, tmp_path):
    import tarfile

    house = tmp_path / "abc123"
    house.mkdir()
    for name in ("b-1.0-py3-none-any.whl", "a-2.0-py3-none-any.whl"):
        (house / name).write_bytes(name.encode() * 100)
    archive = builder.write_archive(house, ["b-1.0-py3-none-any.whl", "a-2.0-py3-none-any.whl"])
    assert archive == tmp_path / "abc123.tar"
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["a-2.0-py3-none-any.whl", "b-1.0-py3-none-any.whl"]
        assert all(m.uid == 0 and m.mode == 0o644 and m.isfile() for m in members)
        assert tar.extractfile("a-2.0-py3-none-any.whl").read() == b"a-2.0-py3-none-any.whl" * 100
    stamp = archive.stat().st_mtime_ns
    assert builder.write_archive(house, ["a-2.0-py3-none-any.whl"]) == archive
    assert archive.stat().st_mtime_ns == stamp, "an existing archive is reused, not rewritten"
    assert not list(tmp_path.glob(".abc123-*")), "no temporary file is left behind"
