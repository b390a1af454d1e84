#!/usr/bin/env python3
"""Build, or reuse, the wheelhouse of one release on the controller.

The release id is a hash of everything that goes into it: the source trees of
the local packages, the extra requirements, and the target's Python version and
platform. The same code therefore always gives the same release id, on any
controller, and a re-run with no code change builds nothing.

Local packages are built with `pip wheel --no-deps`; their dependencies are
then fetched as binary wheels for the *target's* Python and platform, so a
controller with another Python or OS still produces a wheelhouse the targets
can install offline (`pip install --no-index`).

Prints one JSON object: {"release", "path", "archive", "changed", "wheels"}; the archive is
the wheelhouse as one tar file, what the role ships.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

BUILDER_VERSION = "2"
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "build", "dist", ".venv", ".git", ".tox"}


def source_files(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = Path(dirpath) / name
            yield path.relative_to(root).as_posix(), path


def release_key(sources: list[Path], requirements: list[str], python_version: str, platform: str) -> str:
    """The release id: the builder, the target's Python *minor* version (wheels are built per
    cpXY tag; a point update of python3 on the hosts is not a new release and restarts nothing),
    the platform, the requirements and every source file."""
    minor = ".".join(python_version.split(".")[:2])
    digest = hashlib.sha256()
    digest.update(f"builder={BUILDER_VERSION}\npython={minor}\nplatform={platform}\n".encode())
    for req in sorted(requirements):
        digest.update(f"req={req}\n".encode())
    for source in sources:
        digest.update(f"source={source.name}\n".encode())
        for rel, path in source_files(source):
            digest.update(f"file={rel}\n".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]


def _marker_module():
    try:
        from packaging.markers import Marker, default_environment
        from packaging.requirements import Requirement
    except ImportError:  # pip always vendors packaging
        from pip._vendor.packaging.markers import Marker, default_environment  # type: ignore[no-redef]
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    return Marker, default_environment, Requirement


def target_only_requirements(wheel_dir: Path, python_version: str) -> set[str]:
    """Dependencies whose markers hold for the target's Python but not the controller's.

    `pip download --python-version` checks wheel tags for the target but still
    evaluates environment markers against the running interpreter, so e.g.
    redis' `async-timeout; python_full_version < "3.11.3"` is skipped on a 3.11.7
    controller for a 3.11.2 target. These are fetched explicitly.
    """
    Marker, default_environment, Requirement = _marker_module()
    here = default_environment()
    target = dict(here, python_full_version=python_version, python_version=".".join(python_version.split(".")[:2]),
                  implementation_version=python_version)
    wanted: set[str] = set()
    for wheel in wheel_dir.glob("*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            meta = next((n for n in zf.namelist() if n.endswith(".dist-info/METADATA")), None)
            if meta is None:
                continue
            for line in zf.read(meta).decode("utf-8", "replace").splitlines():
                if not line.startswith("Requires-Dist:"):
                    continue
                req = Requirement(line.split(":", 1)[1].strip())
                if req.marker is None or "extra" in str(req.marker):
                    continue
                if req.marker.evaluate(target) and not req.marker.evaluate(here):
                    req.marker = None
                    wanted.add(str(req))
    return wanted


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(f"{' '.join(cmd)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}\n")
        sys.exit(result.returncode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, type=Path, help="Controller directory holding one wheelhouse per release")
    parser.add_argument("--source", action="append", default=[], type=Path, help="Local package source tree (repeat)")
    parser.add_argument("--requirement", action="append", default=[], help="Extra requirement spec from the index (repeat)")
    parser.add_argument("--python-version", required=True, help="Target Python version, e.g. 3.11.2 (the micro version matters for markers)")
    parser.add_argument("--platform", required=True, help="Target wheel platform, e.g. manylinux_2_28_x86_64")
    args = parser.parse_args()

    sources = [s.resolve() for s in args.source]
    for source in sources:
        if not (source / "pyproject.toml").is_file() and not (source / "setup.py").is_file():
            sys.exit(f"{source} is not a Python package source tree (no pyproject.toml or setup.py)")
    release = release_key(sources, args.requirement, args.python_version, args.platform)
    out = args.cache / release
    changed = False
    if not (out / ".complete").is_file():
        args.cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{release}-", dir=args.cache))
        try:
            if sources:
                pip("wheel", "--no-deps", "--wheel-dir", str(tmp), *map(str, sources))
            names = sorted({w.name.split("-")[0].replace("_", "-") for w in tmp.glob("*.whl")})
            tag = "".join(args.python_version.split(".")[:2])
            download = [
                "download", "--dest", str(tmp), "--find-links", str(tmp), "--only-binary=:all:",
                "--python-version", args.python_version, "--implementation", "cp", "--abi", f"cp{tag}",
                "--abi", "abi3", "--abi", "none", "--platform", args.platform, "--platform", "any",
            ]
            pip(*download, *names, *args.requirement)
            fetched: set[str] = set()
            for _ in range(3):
                extra = target_only_requirements(tmp, args.python_version) - fetched
                if not extra:
                    break
                fetched |= extra
                pip(*download, *sorted(extra))
            wheels = sorted(w.name for w in tmp.glob("*.whl"))
            (tmp / ".complete").write_text("\n".join(wheels) + "\n")
            if out.exists():
                shutil.rmtree(out)
            tmp.rename(out)
            changed = True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    wheels = (out / ".complete").read_text().split()
    archive = write_archive(out, wheels)
    print(json.dumps({"release": release, "path": str(out), "archive": str(archive), "changed": changed, "wheels": wheels}))


def write_archive(wheelhouse: Path, wheels: list[str]) -> Path:
    """<release>.tar beside the wheelhouse: one file to ship instead of one per wheel.

    Written once (to a temporary name, then renamed), root-owned 0644 members, sorted."""
    archive = wheelhouse.with_name(wheelhouse.name + ".tar")
    if archive.is_file():
        return archive
    fd, tmp = tempfile.mkstemp(prefix=f".{wheelhouse.name}-", suffix=".tar", dir=wheelhouse.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(wheels):
                info = tar.gettarinfo(str(wheelhouse / name), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mode = 0o644
                info.mtime = 0
                with open(wheelhouse / name, "rb") as f:
                    tar.addfile(info, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, archive)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return archive


if __name__ == "__main__":
    main()
