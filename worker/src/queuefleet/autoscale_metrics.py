"""The exporter's metrics of autoscaled pools (`queue autoscale`, issue 26).

Per host, like the other pool metrics: each exporter reports its own host's announcements (the
hash field its autoscaler writes) for the pools it knows (--pool, and those of its live
workers), so each series comes from one instance and `sum by (pool)` adds the hosts up. An
announcement older than STALE_SECONDS (Redis clock) is reported by its age only.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .autoscale_state import DIRECTIONS, STALE_SECONDS, HostScale

GAUGES = (
    ("min", "queuefleet_autoscale_min_processes", "The autoscale min of a pool on this host (its floor)."),
    ("max", "queuefleet_autoscale_max_processes", "The autoscale max of a pool on this host."),
    ("desired", "queuefleet_autoscale_desired_processes", "The size this host's autoscaler last decided on for a pool."),
    ("running", "queuefleet_autoscale_running_processes",
     "A pool's processes running (or starting) on this host, as its autoscaler last counted them."),
)


def autoscale_metrics(scale: HostScale, host: str) -> Iterator[Metric]:
    live = [s for s in scale.slots if s.live]
    for attr, name, doc in GAUGES:
        family = GaugeMetricFamily(name, f"{doc} Left out when the autoscaler's announcement is stale.",
                                   labels=["host", "pool"])
        for slot in live:
            value = getattr(slot, attr)
            if value is not None:
                family.add_metric([host, slot.pool], value)
        yield family
    age = GaugeMetricFamily("queuefleet_autoscale_announcement_age_seconds",
                            "Seconds since this host's autoscaler last announced a pool, on the Redis clock "
                            f"(over {STALE_SECONDS:g}: stale, the other autoscale gauges are left out).",
                            labels=["host", "pool"])
    for slot in scale.slots:
        age.add_metric([host, slot.pool], round(slot.age, 3))
    yield age
    counts = {(slot.pool, d): 0 for slot in live for d in DIRECTIONS}  # 0 before a pool's first event
    counts.update({(pool, d): n for (pool, _host, d), n in scale.counts.items()})
    events = CounterMetricFamily("queuefleet_autoscale_events", "Changes of size this host's autoscaler made, by direction.",
                                 labels=["host", "pool", "direction"])
    for (pool, direction), n in sorted(counts.items()):
        events.add_metric([host, pool, direction], n)
    yield events
