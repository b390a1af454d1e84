"""Build, or reuse, the wheelhouses of one release on the controller.

The release id is a hash of the code that goes into it: the local packages (a
source tree's files, or a wheel's or sdist's bytes) and the extra requirements. The same code therefore always gives
the same release id, on any controller and on every host of a fleet, whatever
Python the hosts run, and a re-run with no code change builds nothing.

The extras a release installs of a local package (`--extras queuefleet[worker,mysql]`: the
worker's dependencies and the failed-jobs database's driver) are part of the release: their
dependencies are fetched into the wheelhouse too, and the role installs the package with them.

One wheelhouse is built per target interpreter, a (Python minor version,
platform) pair given with --target: a fleet of Debian 12 (Python 3.11) and
Debian 13 (Python 3.13) hosts gets two wheelhouses under one release id. Local
packages are built with `pip wheel --no-deps`; their dependencies are then
fetched as binary wheels for each target's Python and platform, so a controller
with another Python or OS still produces wheelhouses the targets can install
offline (`pip install --no-index`).

Environment markers can depend on the micro version (redis-py needs
async-timeout below 3.11.3), so each wheelhouse records the micro versions it
was resolved for, and a host with a new one tops it up with what that version
needs, under the same release id.

Prints one JSON object: {"release", "changed", "wheelhouses": {TAG: {"path",
"archive", "wheels", "pythons"}}, "targets": {TARGET: TAG}, "extras": {NAME: [EXTRA, ...]}}
where TAG is cpXY-<platform>; the archive is that wheelhouse as one tar file, what the role
ships to the hosts of that tag, and "extras" what to install each local package with.
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

BUILDER_VERSION = "3"
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "build", "dist", ".venv", ".git", ".tox"}


def source_files(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = Path(dirpath) / name
            yield path.relative_to(root).as_posix(), path


def release_key(sources: list[Path], requirements: list[str], extras: dict[str, list[str]] | None = None) -> str:
    """The release id: the builder, the requirements, the local packages' extras and every source
    file. Not the target's Python or platform: those choose the wheelhouse, not the release, so a
    mixed fleet runs one release and a python3 update on the hosts is not a new release."""
    digest = hashlib.sha256()
    digest.update(f"builder={BUILDER_VERSION}\n".encode())
    for req in sorted(requirements):
        digest.update(f"req={req}\n".encode())
    for name, wanted in sorted((extras or {}).items()):
        digest.update(f"extras={name}[{','.join(sorted(wanted))}]\n".encode())
    for source in sources:
        digest.update(f"source={source.name}\n".encode())
        if source.is_file():  # a built artifact: its bytes are the code
            digest.update(hashlib.sha256(source.read_bytes()).digest())
            continue
        for rel, path in source_files(source):
            digest.update(f"file={rel}\n".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]


ARTIFACT_SUFFIXES = (".whl", ".tar.gz", ".zip")


def source_problem(source: Path) -> str | None:
    """Why `source` cannot go into a release, or None: a package source tree, a wheel or an sdist."""
    if source.is_dir():
        if (source / "pyproject.toml").is_file() or (source / "setup.py").is_file():
            return None
        return f"{source} is not a Python package source tree (no pyproject.toml or setup.py)"
    if source.is_file():
        if source.name.endswith(ARTIFACT_SUFFIXES):
            return None
        return f"{source} is neither a wheel (.whl) nor an sdist (.tar.gz, .zip)"
    return f"{source} does not exist on the controller"


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them: `Queue_Fleet` and `queue-fleet` are one."""
    return "-".join(name.replace("_", "-").replace(".", "-").lower().split("-"))


def parse_extras(text: str) -> tuple[str, list[str]]:
    """`queuefleet[worker,mysql]` -> ("queuefleet", ["mysql", "worker"])."""
    Requirement = _marker_module()[2]
    try:
        req = Requirement(text)
    except Exception:  # noqa: BLE001 - packaging's InvalidRequirement, vendored or not
        req = None
    if req is None or not req.extras or req.specifier or req.marker or req.url:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME[EXTRA,...], e.g. queuefleet[worker,mysql]")
    return canonical(req.name), sorted(req.extras)


def parse_target(text: str) -> tuple[str, str]:
    """`3.11.2:manylinux_2_28_x86_64` -> ("3.11.2", "manylinux_2_28_x86_64")."""
    version, sep, platform = text.partition(":")
    parts = version.split(".")
    if not sep or not platform or len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not PYTHON_VERSION:PLATFORM, e.g. 3.11.2:manylinux_2_28_x86_64")
    return version, platform


def wheelhouse_tag(python_version: str, platform: str) -> str:
    """The wheelhouse a target installs from: its CPython tag and platform, e.g. cp311-manylinux_2_28_x86_64."""
    major, minor = python_version.split(".")[:2]
    return f"cp{major}{minor}-{platform}"


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
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.stderr.write(f"{' '.join(cmd)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}\n")
        sys.exit(result.returncode)


def fetch_for(wheel_dir: Path, python_version: str, platform: str, names: list[str]) -> None:
    """Download the binary wheels `names` need for one target Python into wheel_dir, then what
    markers of that exact Python version add (see target_only_requirements)."""
    tag = "".join(python_version.split(".")[:2])
    download = [
        "download", "--dest", str(wheel_dir), "--find-links", str(wheel_dir), "--only-binary=:all:",
        "--python-version", python_version, "--implementation", "cp", "--abi", f"cp{tag}",
        "--abi", "abi3", "--abi", "none", "--platform", platform, "--platform", "any",
    ]
    if names:
        pip(*download, *names)
    fetched: set[str] = set()
    for dummy in range(3):
        extra = target_only_requirements(wheel_dir, python_version) - fetched
        if not extra:
            break
        fetched |= extra
        pip(*download, *sorted(extra))


def local_requirements(wheel_dir: Path, extras: dict[str, list[str]]) -> list[str]:
    """Each local package built into `wheel_dir`, pinned to its built version and with its extras:
    what pulls its dependencies (and its extras' ones) into the wheelhouse. An extra of a package
    that is not built here is an error: the release could not install it."""
    built = {canonical(w.name.split("-")[0]): w.name.split("-")[1] for w in wheel_dir.glob("*.whl")}
    unknown = sorted(set(extras) - set(built))
    if unknown:
        sys.exit(f"--extras names {', '.join(unknown)}, which no --source builds (built: {', '.join(sorted(built)) or 'none'})")
    return [f"{name}[{','.join(extras[name])}]=={version}" if name in extras else f"{name}=={version}"
            for name, version in sorted(built.items())]


def build_wheelhouse(out: Path, sources: list[Path], requirements: list[str], python_version: str, platform: str,
                     extras: dict[str, list[str]] | None = None) -> None:
    """A complete wheelhouse for one target at `out`, built in a temporary directory and renamed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        if sources:
            pip("wheel", "--no-deps", "--wheel-dir", str(tmp), *map(str, sources))
        fetch_for(tmp, python_version, platform, local_requirements(tmp, extras or {}) + requirements)
        seal(tmp, [python_version])
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def top_up(out: Path, python_version: str, platform: str) -> bool:
    """Add what a Python micro version not seen yet needs to an existing wheelhouse. True if it
    had to (the archive is then rewritten)."""
    pythons = covered_pythons(out)
    if python_version in pythons:
        return False
    before = set(read_wheels(out))
    fetch_for(out, python_version, platform, [])
    seal(out, pythons + [python_version])
    if set(read_wheels(out)) != before:
        out.with_name(out.name + ".tar").unlink(missing_ok=True)
    return True


def seal(wheel_dir: Path, pythons: list[str]) -> None:
    (wheel_dir / ".pythons").write_text("\n".join(sorted(set(pythons))) + "\n")
    wheels = sorted(w.name for w in wheel_dir.glob("*.whl"))
    (wheel_dir / ".complete").write_text("\n".join(wheels) + "\n")


def read_wheels(wheel_dir: Path) -> list[str]:
    return (wheel_dir / ".complete").read_text().split()


def covered_pythons(wheel_dir: Path) -> list[str]:
    marker = wheel_dir / ".pythons"
    return marker.read_text().split() if marker.is_file() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, type=Path, help="Controller directory holding the wheelhouses of each release")
    parser.add_argument(
        "--source", action="append", default=[], type=Path,
        help="Local package: a source tree, a wheel or an sdist (repeat)",
    )
    parser.add_argument("--requirement", action="append", default=[], help="Extra requirement spec from the index (repeat)")
    parser.add_argument(
        "--extras", action="append", default=[], type=parse_extras, metavar="NAME[EXTRA,...]",
        help="Extras a local package is installed with, e.g. queuefleet[worker,mysql] (repeat per package)",
    )
    parser.add_argument(
        "--target", action="append", default=[], type=parse_target, required=True,
        help="Target interpreter PYTHON_VERSION:PLATFORM, e.g. 3.11.2:manylinux_2_28_x86_64 (repeat; the micro version matters for markers)",
    )
    args = parser.parse_args()

    sources = [s.resolve() for s in args.source]
    problems = [problem for problem in map(source_problem, sources) if problem]
    if problems:
        sys.exit("; ".join(problems))
    extras: dict[str, list[str]] = {}
    for name, wanted in args.extras:
        extras[name] = sorted(set(extras.get(name, [])) | set(wanted))
    release = release_key(sources, args.requirement, extras)
    changed = False
    houses: dict[str, dict] = {}
    targets: dict[str, str] = {}  # each --target as given -> the wheelhouse it installs from
    for python_version, platform in sorted(set(args.target)):
        tag = wheelhouse_tag(python_version, platform)
        targets[f"{python_version}:{platform}"] = tag
        out = args.cache / release / tag
        if not (out / ".complete").is_file():
            build_wheelhouse(out, sources, args.requirement, python_version, platform, extras)
            changed = True
        elif top_up(out, python_version, platform):
            changed = True
        wheels = read_wheels(out)
        houses[tag] = {"path": str(out), "archive": str(write_archive(out, wheels)), "wheels": wheels,
                       "pythons": covered_pythons(out)}
    print(json.dumps({"release": release, "changed": changed, "wheelhouses": houses, "targets": targets, "extras": extras}))


def write_archive(wheelhouse: Path, wheels: list[str]) -> Path:
    """<tag>.tar beside the wheelhouse: one file to ship instead of one per wheel.

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
