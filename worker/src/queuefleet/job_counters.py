"""What a settled job adds to the fleet's counters (kept in Redis, see lua/common.lua).

A worker decides how each attempt ended; the counters are bumped by the same Lua
call that acks or releases the job, so they are exact (a job counted is a job
settled, once) and survive worker restarts. `queue exporter` serves them to
Prometheus (metrics.py).
"""

from __future__ import annotations

from bisect import bisect_left

# Upper bounds (seconds) of the job duration histogram: Prometheus' defaults, then
# the minutes that queue jobs run for. The last bucket (+Inf) is index len(BUCKETS).
DURATION_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                                       300.0, 600.0, 1800.0, 3600.0)

# How an attempt ended, as counted in queuefleet_jobs_total{outcome}.
DONE, FAILED, RETRIED, RELEASED, LOST = "done", "failed", "retried", "released", "lost"
OUTCOMES = (DONE, FAILED, RETRIED, RELEASED, LOST)
UNKNOWN_JOB = "-"  # a payload that is not a job has no job name


def tally(job: str, outcome: str, runtime: float | None) -> str:
    """The wire form the ack and release scripts read: 'job outcome bucket microseconds'
    (bucket and microseconds empty when the job did not run, e.g. a failure stored later)."""
    if runtime is None or runtime <= 0:
        return f"{job} {outcome}  "
    return f"{job} {outcome} {bisect_left(DURATION_BUCKETS, runtime)} {int(runtime * 1_000_000)}"
