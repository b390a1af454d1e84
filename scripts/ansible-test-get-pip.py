"""queuefleet stand-in for pypa's get-pip.py (tests/sanity.sh), which ansible-test downloads from a host this machine cannot reach.

ansible-test runs it inside each sanity test's new, empty virtual environment with pip's install
arguments (pip==<version> ... --no-setuptools --no-wheel): pip comes from the interpreter's own
ensurepip bundle, then pip installs the requested versions from the package index.
"""
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", "--upgrade", *args])
