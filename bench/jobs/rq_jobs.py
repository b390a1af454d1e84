"""rq handlers (run by ``rq worker -w rq.worker.SimpleWorker``)."""

from _common import count, latency


def incr(key):
    count(key)


def lat(pushed_at):
    latency(pushed_at)
