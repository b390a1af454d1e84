"""queuefleet: a Redis job queue and worker with leases, graceful restarts and failed jobs in SQL."""

from .context import FailJob, JobContext, JobFailure, ReleaseJob, on_failure
from .failed import FailedJobStore
from .payload import Job
from .queue import Queue

__all__ = ["Queue", "Job", "FailedJobStore", "JobContext", "JobFailure", "on_failure", "ReleaseJob", "FailJob"]
__version__ = "0.1.0"
