"""Handlers for bench/autoscale. Each run appends one line at its start and one at its end to
the file named by AUTOSCALE_EXEC_LOG (one O_APPEND write each: whole lines from every process):

    start <id> <pid> <start unix time> <wait = start - the job's pushed_at>
    end <id> <pid> <end unix time>

The producer runs on the same machine, so pushed_at (its time.time() at the push) and the
worker's clock are the same clock."""

import os
import time

_fd = None


def _line(text: str) -> None:
    global _fd
    if _fd is None:
        _fd = os.open(os.environ["AUTOSCALE_EXEC_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, (text + "\n").encode())


def work(data, job):
    """Note the start and the wait since the push, sleep data['seconds'], note the end."""
    start = time.time()
    _line(f"start {job.id} {os.getpid()} {start:.4f} {start - job.pushed_at:.4f}")
    time.sleep(data["seconds"])
    _line(f"end {job.id} {os.getpid()} {time.time():.4f}")
