"""A built-in no-op job for health checks: `queuefleet.canary:ping`.

Always allowed, whatever --jobs says: it runs no code of the app and takes no
input, so allowing it gives a Redis writer nothing. The post-deploy checks push
one per pool and watch it disappear from the queue.
"""

from __future__ import annotations

from typing import Any


def ping(data: Any = None) -> None:
    """Do nothing: being run is the whole point."""
    return None
