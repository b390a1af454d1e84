"""Handlers that record when their module is imported: the --init hook must run before."""

import os

from qf_testjobs import client

client().rpush("executed", "import")


def record(data):
    client().rpush("executed", f"{data['tag']}:{os.getpid()}")


def hook(failure):
    """An --on-failure hook in this module: importing it is importing app code too."""
