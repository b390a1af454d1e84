"""celery tasks on the Redis broker, no result backend (run by
``celery -A celery_jobs worker -P solo``)."""

import os

from celery import Celery

from _common import count, latency

app = Celery("celery_jobs", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0"))
app.conf.task_default_queue = "bench"
app.conf.task_ignore_result = True
app.conf.broker_connection_retry_on_startup = True


@app.task
def incr(key):
    count(key)


@app.task
def lat(pushed_at):
    latency(pushed_at)
