#!/usr/bin/env bash
# `ansible-test sanity` on the collection as users get it: `ansible-galaxy collection build` of the
# work tree (galaxy.yml's build_ignore leaves out the worker package, molecule, bench, tests and the
# rest of the development material), unpacked at a path ending in ansible_collections/queuefleet/fleet,
# with tests/sanity/ignore-*.txt beside it. Every sanity test that runs offline, on the controller's
# Python (--local), without containers; each test's requirements come from the package index into
# ansible-test's own cached virtual environments (~/.ansible/test/venv), so only the first run pays.
#
#   bash tests/sanity.sh                       # every test
#   bash tests/sanity.sh --test validate-modules
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH" ANSIBLE_CONFIG="$ROOT/ansible.cfg" ANSIBLE_FORCE_COLOR=0 NO_COLOR=1

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ansible-galaxy collection build --output-path "$work/build" . >/dev/null
dest="$work/ansible_collections/queuefleet/fleet"
mkdir -p "$dest/tests/sanity"
tar -xzf "$work"/build/queuefleet-fleet-*.tar.gz -C "$dest"
cp tests/sanity/ignore-*.txt "$dest/tests/sanity/"

# ansible-test bootstraps pip into each new virtual environment with a get-pip script it downloads
# from a host outside the package index, which this machine cannot reach. The stand-in takes pip
# from Python's own ensurepip, then the version ansible-test asks for from the index.
pip_version="$(python - <<'PY'
import importlib.util, pathlib, re
source = pathlib.Path(importlib.util.find_spec("ansible_test").origin).parent / "_internal" / "python_requirements.py"
print(re.search(r"pip='([0-9.]+)'", source.read_text()).group(1))
PY
)"
get_pip="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
if [ ! -f "$get_pip" ] || grep -q 'queuefleet stand-in' "$get_pip"; then
  install -D -m 0644 scripts/ansible-test-get-pip.py "$get_pip"
fi

python_version="$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
cd "$dest"
ansible-test sanity --local --python "$python_version" --color no "$@"
