"""roles/queue_worker/files/build_wheelhouse.py (runs on the controller): the release id, one
wheelhouse per target interpreter, the archive. The build test fetches real wheels from PyPI."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tarfile
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


def test_the_release_is_the_code_not_the_interpreter(builder, source):
    """One id for a mixed fleet: the target's Python and platform choose a wheelhouse, not a release."""
    assert builder.release_key([source], []) == builder.release_key([source], [])
    assert builder.wheelhouse_tag("3.11.2", "manylinux_2_28_x86_64") == builder.wheelhouse_tag("3.11.9", "manylinux_2_28_x86_64")
    assert builder.wheelhouse_tag("3.13.5", "manylinux_2_28_x86_64") == "cp313-manylinux_2_28_x86_64"


def test_what_changes_the_code_is_a_new_release(builder, source):
    key = builder.release_key
    base = key([source], [])
    assert key([source], ["requests==2.32.3"]) != base
    assert key([source], [], {"queuefleet": ["worker"]}) != base
    assert key([source], [], {"queuefleet": ["mysql", "worker"]}) != key([source], [], {"queuefleet": ["worker"]})
    assert key([source], [], {}) == base
    (source / "jobs.py").write_text("def run(data):\n    return None\n")
    assert key([source], []) != base


@pytest.mark.parametrize("bad", ["3.11", "3.11.2", "3.11.x:manylinux_2_28_x86_64", ":manylinux_2_28_x86_64", "3.11.2:"])
def test_a_malformed_target_is_refused(builder, bad):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="PYTHON_VERSION:PLATFORM"):
        builder.parse_target(bad)


def build(cache: Path, *targets: str) -> dict:
    """The worker tree as the role builds it: with the worker's extra."""
    worker = Path(__file__).resolve().parents[1] / "worker"
    argv = [sys.executable, str(SCRIPT), "--cache", str(cache), "--source", str(worker), "--extras=queuefleet[worker]"]
    out = subprocess.run(argv + [f"--target={t}" for t in targets], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_mixed_fleet_gets_one_release_and_a_wheelhouse_per_python(tmp_path):
    """Debian 12 (3.11) and Debian 13 (3.13) hosts: compiled wheels for each ABI, markers of the
    exact micro version (redis-py wants async-timeout below 3.11.3), and a new micro version later
    tops up its minor's wheelhouse under the same release id."""
    platform = "manylinux_2_28_x86_64"
    first = build(tmp_path, f"3.11.9:{platform}", f"3.13.5:{platform}")
    assert first["changed"] is True
    houses = first["wheelhouses"]
    assert sorted(houses) == [f"cp311-{platform}", f"cp313-{platform}"]
    # Each target as given names its wheelhouse: the role looks its host's archive up by it.
    assert first["targets"] == {f"3.11.9:{platform}": f"cp311-{platform}", f"3.13.5:{platform}": f"cp313-{platform}"}
    for tag, house in houses.items():
        sqlalchemy = [w for w in house["wheels"] if w.startswith("sqlalchemy-")]
        assert len(sqlalchemy) == 1 and f"-{tag[:5]}-{tag[:5]}-" in sqlalchemy[0], (tag, sqlalchemy)
        assert any(w.startswith("queuefleet-") for w in house["wheels"])
        with tarfile.open(house["archive"]) as tar:
            assert sorted(tar.getnames()) == sorted(house["wheels"])
    assert not any(w.startswith("async_timeout-") for w in houses[f"cp311-{platform}"]["wheels"])

    again = build(tmp_path, f"3.13.5:{platform}", f"3.11.9:{platform}")
    assert again["changed"] is False and again["release"] == first["release"]

    older = build(tmp_path, f"3.11.2:{platform}")
    assert older["release"] == first["release"], "a micro version is not a new release"
    house = older["wheelhouses"][f"cp311-{platform}"]
    assert older["changed"] is True and house["pythons"] == ["3.11.2", "3.11.9"]
    assert any(w.startswith("async_timeout-") for w in house["wheels"])
    with tarfile.open(house["archive"]) as tar:
        assert any(n.startswith("async_timeout-") for n in tar.getnames()), "the archive is rewritten after a top-up"


def test_the_archive_holds_every_wheel_root_owned_and_is_written_once(builder, tmp_path):
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


def test_a_built_artifact_is_a_release_of_its_bytes(builder, tmp_path):
    """A wheel or sdist stands for its code: the same bytes are the same release, other bytes a
    new one, and its name (which carries the version) is part of it too."""
    wheel = tmp_path / "queuefleet-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"one")
    base = builder.release_key([wheel], [])
    assert builder.release_key([wheel], []) == base
    wheel.write_bytes(b"two")
    assert builder.release_key([wheel], []) != base
    renamed = tmp_path / "queuefleet-0.2.0-py3-none-any.whl"
    renamed.write_bytes(b"two")
    assert builder.release_key([renamed], []) != builder.release_key([wheel], [])


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("missing", "does not exist on the controller"),
        ("notes.txt", "neither a wheel (.whl) nor an sdist"),
        ("emptydir", "not a Python package source tree"),
    ],
)
def test_what_is_not_a_package_is_refused_by_name(builder, tmp_path, name, problem):
    if name == "notes.txt":
        (tmp_path / name).write_text("x")
    elif name == "emptydir":
        (tmp_path / name).mkdir()
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--cache", str(tmp_path / "cache"), "--source", str(tmp_path / name),
         "--target=3.11.2:manylinux_2_28_x86_64"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert problem in out.stderr and name in out.stderr
    assert not (tmp_path / "cache").exists()


def test_a_wheel_goes_into_the_wheelhouse_as_built(tmp_path):
    """The worker as a built wheel (what the collection's users pass) gives a wheelhouse with that
    very wheel, its version in the name, and the dependencies fetched for the target."""
    worker = Path(__file__).resolve().parents[1] / "worker"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(worker)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("queuefleet-*.whl")
    argv = [sys.executable, str(SCRIPT), "--cache", str(tmp_path / "cache"), "--source", str(wheel),
            "--target=3.11.2:manylinux_2_28_x86_64"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    (house,) = json.loads(out.stdout)["wheelhouses"].values()
    assert wheel.name in house["wheels"]
    assert (Path(house["path"]) / wheel.name).read_bytes() == wheel.read_bytes()
    assert any(w.startswith("redis-") for w in house["wheels"])
    assert not any(w.startswith(("sqlalchemy-", "click-", "pymysql-")) for w in house["wheels"]), \
        "without --extras, the core's dependencies only"


def test_extras_fill_the_wheelhouse_and_a_release_installs_offline_with_them(tmp_path):
    """What the role does for a worker host with a mysql+pymysql:// URL: --extras queuefleet[worker,mysql],
    then `pip install --no-index 'queuefleet[mysql,worker]'` from the wheelhouse alone into a fresh venv,
    and the worker's command line runs there."""
    import platform as host
    import venv

    python = ".".join(map(str, sys.version_info[:3]))
    target = f"{python}:manylinux_2_28_{host.machine()}"
    worker = Path(__file__).resolve().parents[1] / "worker"
    argv = [sys.executable, str(SCRIPT), "--cache", str(tmp_path / "cache"), "--source", str(worker),
            "--extras=queuefleet[worker]", "--extras=queuefleet[mysql]", f"--target={target}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    built = json.loads(out.stdout)
    assert built["extras"] == {"queuefleet": ["mysql", "worker"]}
    (house,) = built["wheelhouses"].values()
    for dist in ("sqlalchemy-", "click-", "rich-", "cronsim-", "prometheus_client-", "pymysql-", "redis-", "hiredis-"):
        assert any(w.lower().startswith(dist) for w in house["wheels"]), (dist, house["wheels"])

    venv.create(tmp_path / "release", with_pip=True)
    spec = f"queuefleet[{','.join(built['extras']['queuefleet'])}]"
    pip = [str(tmp_path / "release/bin/pip"), "install", "--no-index", "--disable-pip-version-check", "--no-cache-dir",
           "--find-links", house["path"], spec]
    installed = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    queue = subprocess.run([str(tmp_path / "release/bin/queue"), "--version"], capture_output=True, text=True, timeout=60)
    assert queue.returncode == 0 and "0.1.0" in queue.stdout, queue.stderr
    driver = subprocess.run([str(tmp_path / "release/bin/python"), "-c", "import pymysql, sqlalchemy, prometheus_client"],
                            capture_output=True, text=True, timeout=60)
    assert driver.returncode == 0, driver.stderr


@pytest.mark.parametrize(("extras", "problem"), [
    ("queuefleet", "is not NAME[EXTRA,...]"),
    ("queuefleet[worker]>=1", "is not NAME[EXTRA,...]"),
    ("other[worker]", "--extras names other, which no --source builds (built: queuefleet)"),
])
def test_extras_must_name_a_built_package(tmp_path, extras, problem):
    worker = Path(__file__).resolve().parents[1] / "worker"
    argv = [sys.executable, str(SCRIPT), "--cache", str(tmp_path / "cache"), "--source", str(worker),
            f"--extras={extras}", "--target=3.11.2:manylinux_2_28_x86_64"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert problem in out.stderr
