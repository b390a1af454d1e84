"""queuefleet handlers: a plain function taking the job's data dict."""

from _common import count, latency


def incr(data):
    count(data["key"])


def lat(data):
    # first statement: measure before anything else runs
    latency(data["t"])
