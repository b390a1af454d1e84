"""The real autoscaler (queuefleet.autoscaler.Autoscaler) over a supervisord kept in memory, for the
tests of what reads its state (the exporter, the dashboard): its ticks write the announcements,
events and counters into the test's Redis exactly as on a host. test_autoscale.py runs it under a
real supervisord."""

from __future__ import annotations

import io
from typing import Sequence

import redis

from queuefleet.autoscale_policy import ScaleRule
from queuefleet.autoscaler import Autoscaler, AutoscaleSettings, ScaledPool
from queuefleet.logs import JobLog
from queuefleet.supervisor_rpc import ProcessInfo


class MemorySupervisor:
    """Programs and their states; start and stop take effect at once."""

    def __init__(self, programs: Sequence[str]) -> None:
        self.states = {name: "STOPPED" for name in programs}

    def processes(self) -> list[ProcessInfo]:
        return [ProcessInfo(name, name, state, 1000 + i if state == "RUNNING" else 0)
                for i, (name, state) in enumerate(sorted(self.states.items()))]

    def start(self, process: ProcessInfo) -> None:
        self.states[process.group] = "RUNNING"

    def stop(self, process: ProcessInfo) -> None:
        self.states[process.group] = "STOPPED"

    def running(self) -> int:
        return sum(state == "RUNNING" for state in self.states.values())


def autoscaler(client: redis.Redis, host: str, pool: str, queues: Sequence[str], rule: ScaleRule,
               prefix: str = "queuefleet") -> tuple[Autoscaler, MemorySupervisor]:
    programs = tuple(f"{pool}_{slot:02d}" for slot in range(rule.max))
    supervisor = MemorySupervisor(programs)
    settings = AutoscaleSettings((ScaledPool(pool, tuple(queues), programs, rule),), "unix:///nowhere", 1.0, host)
    return Autoscaler(client, settings, prefix=prefix, log=JobLog(io.StringIO()), supervisor=supervisor), supervisor  # type: ignore[arg-type]
