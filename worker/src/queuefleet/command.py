"""The `queue` console script's entry point: the command line needs the `worker` extra.

`pip install queuefleet` alone is the producer (redis-py and hiredis): the `queue` command is
installed with it, but its commands need SQLAlchemy, click, rich, cronsim and
prometheus-client. Without them it says which extra to install instead of an ImportError.
"""

from __future__ import annotations

import importlib.util
import sys

# The import name of each distribution of the `worker` extra, by distribution name.
WORKER_MODULES = {"SQLAlchemy": "sqlalchemy", "click": "click", "rich": "rich", "cronsim": "cronsim",
                  "prometheus-client": "prometheus_client"}


def missing_worker_dependencies() -> list[str]:
    """The distributions of the `worker` extra that cannot be imported here."""
    return [dist for dist, module in WORKER_MODULES.items() if importlib.util.find_spec(module) is None]


def main() -> None:
    missing = missing_worker_dependencies()
    if missing:
        sys.stderr.write(f"queue: the queue command needs the worker's dependencies, and {', '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not installed: pip install 'queuefleet[worker]' "
                         "(plain `pip install queuefleet` installs only what pushing jobs needs)\n")
        sys.exit(1)
    from .cli import main as cli_main

    cli_main()
