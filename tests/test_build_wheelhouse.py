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
