"""The `queue` command line as installed, except that its Redis URL check is the package's
own (queuefleet.connection.check_url, which knows redis+sentinel://). cli.py's check still
hands the URL to redis-py's parser, which refuses that scheme; until cli.py calls check_url
itself, the Sentinel tests and bench/faults start `queue work`, `schedule` and `exporter`
through this file (`python qf_cli.py work ...`). Nothing else differs from `queue`."""

from __future__ import annotations

import sys

from queuefleet import cli
from queuefleet.connection import check_url


def _check_redis_url(url: str) -> None:
    try:
        check_url(url)
    except (ValueError, TypeError) as exc:
        cli._die(f"bad Redis URL {cli.redacted_url(url)}: {exc}")


if __name__ == "__main__":
    cli._check_redis_url = _check_redis_url
    sys.exit(cli.main())
