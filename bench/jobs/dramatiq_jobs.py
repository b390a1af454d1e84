"""dramatiq actors on a RedisBroker (run by ``dramatiq --processes 1 dramatiq_jobs``,
default threads)."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from _common import count, latency

broker = RedisBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0"))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench")
def incr(key):
    count(key)


@dramatiq.actor(queue_name="bench")
def lat(pushed_at):
    latency(pushed_at)
