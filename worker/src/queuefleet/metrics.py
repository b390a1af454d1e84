"""`queue exporter`: the fleet's numbers in the Prometheus exposition format.

One exporter runs on each worker host. Queue sizes, ages, job counters and the
duration histogram are fleet-wide (every exporter reports the same values: alert
rules take `max by (queue)`); workers, pools and releases are the exporter's own
host's, so a host whose exporter is down is visible as such. Thresholds from the
inventory are exported as metrics too, so the alert rules are one static file.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import redis
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .autoscale_metrics import autoscale_metrics
from .autoscale_state import read_host_scale
from .replication import Replication, SentinelView, read_replication, read_sentinels
from .serving import Network, allowed, http_server, shown_url
from .stats import FleetStats, read_stats

WORKER_STATES = ("idle", "busy", "paused")


@dataclass
class ExporterSettings:
    prefix: str
    host: str = field(default_factory=socket.gethostname)
    pools: dict[str, int] = field(default_factory=dict)  # pool -> processes expected on this host
    backlog: dict[str, int] = field(default_factory=dict)  # queue -> most ready jobs allowed
    max_age: dict[str, float] = field(default_factory=dict)  # queue -> longest wait allowed (seconds)
    release_file: Path | None = None  # read at each scrape: the release `current` points at


class FleetCollector(Collector):
    """Reads Redis (one script call, one pipeline for the autoscaled pools) and the failed-jobs table at each scrape."""

    def __init__(self, client: redis.Redis, settings: ExporterSettings, failed_count: Callable[[], int] | None) -> None:
        self.client = client
        self.settings = settings
        self.failed_count = failed_count

    def collect(self) -> Iterator[Metric]:
        s = self.settings
        try:
            stats: FleetStats | None = read_stats(self.client, s.prefix, queues=[*s.backlog, *s.max_age])
        except (redis.RedisError, OSError):
            stats = None
        yield _gauge("queuefleet_redis_up", "1 when this exporter could read Redis at this scrape.", value=float(stats is not None))
        yield from self._thresholds()
        yield from self._release()
        if stats is not None:
            yield from queue_metrics(stats)
            yield from worker_metrics(stats, s.host, s.pools)
            yield from self._autoscale(stats)
            try:
                yield from replication_metrics(read_replication(self.client))
            except (redis.RedisError, OSError):
                pass
        yield from sentinel_metrics(read_sentinels(self.client))
        yield from self._failed()

    def _thresholds(self) -> Iterator[Metric]:
        s = self.settings
        backlog = GaugeMetricFamily("queuefleet_backlog_threshold", "Most ready jobs a queue may hold (inventory).",
                                    labels=["queue"])
        for queue, limit in sorted(s.backlog.items()):
            backlog.add_metric([queue], limit)
        yield backlog
        age = GaugeMetricFamily("queuefleet_oldest_job_age_threshold_seconds",
                                "Longest a ready job may wait in a queue (inventory).", labels=["queue"])
        for queue, seconds in sorted(s.max_age.items()):
            age.add_metric([queue], seconds)
        yield age
        expected = GaugeMetricFamily("queuefleet_pool_expected_workers", "Worker processes a pool runs on this host (numprocs).",
                                     labels=["host", "pool"])
        for pool, count in sorted(s.pools.items()):
            expected.add_metric([s.host, pool], count)
        yield expected

    def _autoscale(self, stats: FleetStats) -> Iterator[Metric]:
        """The autoscaled pools among those of --pool and of this host's live workers."""
        s = self.settings
        pools = {*s.pools, *(w.get("pool", "") for w in stats.workers if w.get("host") == s.host)} - {""}
        try:
            scale = read_host_scale(self.client, s.prefix, s.host, pools, stats.now)
        except (redis.RedisError, OSError):
            return
        yield from autoscale_metrics(scale, s.host)

    def _release(self) -> Iterator[Metric]:
        path = self.settings.release_file
        if path is None:
            return
        try:
            release = path.read_text().strip()
        except OSError:
            return
        yield _gauge("queuefleet_release_info", "The release this host's `current` points at.", labels=["host", "release"],
                     samples=[([self.settings.host, release], 1)])

    def _failed(self) -> Iterator[Metric]:
        if self.failed_count is None:
            return
        try:
            rows = self.failed_count()
        except Exception:  # noqa: BLE001 - any database error means the same to a scrape: unreachable
            yield _gauge("queuefleet_database_up", "1 when this exporter could count failed jobs at this scrape.", value=0)
            return
        yield _gauge("queuefleet_database_up", "1 when this exporter could count failed jobs at this scrape.", value=1)
        yield _gauge("queuefleet_failed_jobs", "Rows in the failed-jobs table.", value=rows)


def queue_metrics(stats: FleetStats) -> Iterator[Metric]:
    jobs = GaugeMetricFamily("queuefleet_jobs", "Jobs in a queue by state.", labels=["queue", "state"])
    age = GaugeMetricFamily("queuefleet_oldest_job_age_seconds",
                            "How long the job that runs next has been ready to run, on the Redis clock (0: none ready).",
                            labels=["queue"])
    for queue, size in stats.sizes.items():
        for state in ("ready", "delayed", "reserved"):
            jobs.add_metric([queue, state], size[state])
        age.add_metric([queue], round(stats.oldest_age.get(queue, 0.0), 3))
    yield jobs
    yield age
    total = CounterMetricFamily("queuefleet_jobs", "Settled attempts by outcome (done, failed, retried, released, lost).",
                                labels=["queue", "job", "outcome"])
    for (queue, job, outcome), n in sorted(stats.jobs.items()):
        total.add_metric([queue, job, outcome], n)
    yield total
    duration = HistogramMetricFamily("queuefleet_job_duration_seconds", "Run time of attempts that ran to an outcome.",
                                     labels=["queue", "job"])
    for (queue, job), d in sorted(stats.durations.items()):
        duration.add_metric([queue, job], d.cumulative(), d.sum_seconds)
    yield duration


def worker_metrics(stats: FleetStats, host: str, pools: dict[str, int]) -> Iterator[Metric]:
    """This host's live workers: by pool and state (0 for every state of an expected pool), by release,
    and the queues each pool reads."""
    by_state: dict[tuple[str, str], int] = {(pool, state): 0 for pool in pools for state in WORKER_STATES}
    by_release: dict[tuple[str, str], int] = {}
    reads: set[tuple[str, str]] = set()
    for beat in stats.workers:
        if beat.get("host") != host:
            continue
        pool = beat.get("pool", "")
        by_state[(pool, beat.get("state", ""))] = by_state.get((pool, beat.get("state", "")), 0) + 1
        by_release[(pool, beat.get("release", ""))] = by_release.get((pool, beat.get("release", "")), 0) + 1
        reads.update((pool, queue) for queue in beat.get("queues", "").split(",") if queue)
    workers = GaugeMetricFamily("queuefleet_workers", "Live worker processes on this host by pool and state.",
                                labels=["host", "pool", "state"])
    for (pool, state), n in sorted(by_state.items()):
        workers.add_metric([host, pool, state], n)
    yield workers
    info = GaugeMetricFamily("queuefleet_worker_info", "Live worker processes on this host by pool and the release they run.",
                             labels=["host", "pool", "release"])
    for (pool, release), n in sorted(by_release.items()):
        info.add_metric([host, pool, release], n)
    yield info
    yield _gauge("queuefleet_pool_queue_info", "1 for each queue a pool's live workers on this host take jobs from.",
                 labels=["host", "pool", "queue"], samples=[([host, pool, queue], 1) for pool, queue in sorted(reads)])


def replication_metrics(rep: Replication) -> Iterator[Metric]:
    """The master's replication, as INFO replication of the Redis this exporter reaches reports it."""
    yield _gauge("queuefleet_redis_replication_role", "1 for the role of the Redis this exporter reaches (master, replica).",
                 labels=["role"], samples=[([role], float(rep.role == role)) for role in ("master", "replica")])
    yield _gauge("queuefleet_redis_connected_replicas", "Replicas online (synced and streaming) of the Redis master.",
                 value=rep.connected)
    yield _gauge("queuefleet_redis_replica_lag_seconds", "Seconds since each replica last acknowledged the replication stream.",
                 labels=["replica"], samples=[([r.address], r.lag_seconds) for r in rep.replicas])
    yield _gauge("queuefleet_redis_replica_lag_bytes", "Bytes of the replication stream each replica has not acknowledged yet.",
                 labels=["replica"], samples=[([r.address], r.lag_bytes) for r in rep.replicas])


def sentinel_metrics(view: SentinelView | None) -> Iterator[Metric]:
    """The Sentinels of a redis+sentinel:// URL; nothing for a plain redis:// URL."""
    if view is None:
        return
    yield _gauge("queuefleet_sentinels", "Sentinels in the Redis URL.", value=view.configured)
    yield _gauge("queuefleet_sentinels_up", "Sentinels of the Redis URL that answered at this scrape.", value=view.answering)
    yield _gauge("queuefleet_sentinel_quorum_ok", "1 when a Sentinel says quorum and failover authorization can be reached "
                 "(SENTINEL CKQUORUM).", value=float(view.quorum_ok))
    yield _gauge("queuefleet_sentinel_master_known", "1 when the Sentinels that answered name a master.",
                 value=float(bool(view.master)))
    yield _gauge("queuefleet_sentinel_master_info", "The master most answering Sentinels name (host:port).",
                 labels=["master"], samples=[([view.master], 1)] if view.master else [])


def _gauge(name: str, doc: str, *, value: float | None = None, labels: list[str] | None = None,
           samples: Iterable[tuple[list[str], float]] = ()) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, value=value, labels=labels)
    for label_values, v in samples:
        family.add_metric(label_values, v)
    return family


# -- serving --------------------------------------------------------------------------


def metrics_app(registry: CollectorRegistry, allow: Sequence[Network] = ()) -> Callable[..., Iterable[bytes]]:
    """A WSGI app: /metrics is prometheus-client's own app, always in the text format 0.0.4 (never
    OpenMetrics: `queuefleet_jobs` is both a gauge and, with `_total`, a counter, which only the
    classic format allows), / a pointer to it. Clients outside loopback and `allow` get 403."""
    prometheus = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if not allowed(environ.get("REMOTE_ADDR", ""), allow):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"forbidden: this address is not in the exporter's --allow list\n"]
        if path == "/metrics":
            return prometheus({**environ, "HTTP_ACCEPT": ""}, start_response)
        if path == "/":
            body = b'queuefleet exporter: <a href="/metrics">/metrics</a>\n'
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return app


def serve(collector: FleetCollector, address: str, port: int, ready: Callable[[str], None] | None = None,
          stop: threading.Event | None = None, allow: Sequence[Network] = ()) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    with http_server(address, port, metrics_app(registry, allow), quiet=True) as server:
        if ready is not None:
            ready(shown_url(address, server.server_port, "/metrics"))
        if stop is None:
            server.serve_forever()
        else:
            server.timeout = 0.2
            while not stop.is_set():
                server.handle_request()
