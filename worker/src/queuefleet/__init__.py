"""queuefleet: a Redis job queue and worker with leases, graceful restarts and failed jobs in SQL.

`import queuefleet` and `from queuefleet import Queue` need only the core install (redis-py):
the failed-jobs store, which needs SQLAlchemy (the `worker` extra), is imported on first use.
"""

from typing import TYPE_CHECKING, Any

from .connection import client_from_url
from .context import FailJob, JobContext, JobFailure, ReleaseJob, on_failure
from .payload import Job
from .queue import Queue

if TYPE_CHECKING:
    from .failed import FailedJobStore

__all__ = ["Queue", "Job", "FailedJobStore", "JobContext", "JobFailure", "on_failure", "ReleaseJob", "FailJob",
           "client_from_url"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "FailedJobStore":
        try:
            from .failed import FailedJobStore
        except ImportError as exc:
            raise ImportError(f"queuefleet.FailedJobStore needs the worker's dependencies ({exc}): "
                              "pip install 'queuefleet[worker]'") from exc
        return FailedJobStore
    raise AttributeError(f"module 'queuefleet' has no attribute {name!r}")
