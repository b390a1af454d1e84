"""Shared by every system's handler module: one Redis client per process and
the two things a benchmark job does.

* ``count(key)``: INCR the counter. The INCR reply is free (same round trip),
  so the job that makes the counter 1 stamps ``<key>:t_first`` and the job that
  makes it ``BENCH_N`` stamps ``<key>:t_last``. Two extra round trips per run,
  none per job, and the consume rate is exact without a tight polling loop.
* ``latency(pushed_at)``: RPUSH ``time.time() - pushed_at`` onto ``bench:lat``
  as the very first thing the handler does.
"""

import os
import time

import redis

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0")
N = int(os.environ.get("BENCH_N", "0"))
LAT_KEY = "bench:lat"

r = redis.Redis.from_url(URL)


def count(key):
    n = r.incr(key)
    if n == 1:
        r.set(key + ":t_first", repr(time.time()))
    if n == N:
        r.set(key + ":t_last", repr(time.time()))
    return n


def latency(pushed_at):
    r.rpush(LAT_KEY, repr(time.time() - pushed_at))
