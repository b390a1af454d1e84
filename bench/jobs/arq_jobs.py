"""arq handlers: async, using the worker's own ArqRedis connection (``ctx['redis']``)
as an arq user would. ``WorkerSettings`` keeps arq's defaults (poll_delay 0.5 s,
max_jobs 10); ``WorkerSettingsFast`` only sets ``poll_delay = 0.01``."""

import os
import time

from arq.connections import RedisSettings

N = int(os.environ.get("BENCH_N", "0"))
LAT_KEY = "bench:lat"
REDIS = RedisSettings.from_dsn(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0"))


async def incr(ctx, key):
    redis = ctx["redis"]
    n = await redis.incr(key)
    if n == 1:
        await redis.set(key + ":t_first", repr(time.time()))
    if n == N:
        await redis.set(key + ":t_last", repr(time.time()))


async def lat(ctx, pushed_at):
    now = time.time()
    await ctx["redis"].rpush(LAT_KEY, repr(now - pushed_at))


class WorkerSettings:
    functions = [incr, lat]
    redis_settings = REDIS


class WorkerSettingsFast:
    # arq reads only the class's own __dict__, so no inheritance here
    functions = [incr, lat]
    redis_settings = REDIS
    poll_delay = 0.01
