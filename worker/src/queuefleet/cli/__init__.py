"""The `queue` command line: the group and what its commands share (app.py), and one module
per family of commands, each adding its commands to the group as it is imported."""

from . import failed_jobs, push, servers, status, work  # noqa: F401 - each adds its commands to main
from .app import main

__all__ = ["main"]
