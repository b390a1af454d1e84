"""The job payload: what a producer writes to Redis and a worker reads back.

Payloads are JSON (never pickle): anyone who can write to Redis can write a
payload, so decoding one must never run code.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

JOB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


class PayloadError(ValueError):
    """A payload that cannot be decoded into a job."""


_valid_jobs: set[str] = set()
_valid_queues: set[str] = set()


def check_job_name(job: str) -> str:
    if isinstance(job, str) and job in _valid_jobs:
        return job
    if not isinstance(job, str) or not JOB_NAME.match(job):
        raise ValueError(f"job must look like 'package.module:function', got {job!r}")
    if len(_valid_jobs) < 10_000:
        _valid_jobs.add(job)
    return job


def check_queue_name(queue: str) -> str:
    if isinstance(queue, str) and queue in _valid_queues:
        return queue
    if not isinstance(queue, str) or not QUEUE_NAME.match(queue):
        raise ValueError(f"queue name must match {QUEUE_NAME.pattern}, got {queue!r}")
    if len(_valid_queues) < 10_000:
        _valid_queues.add(queue)
    return queue


def parse_backoff(value: str | int | float | list[int | float] | tuple[int | float, ...] | None) -> list[float]:
    """Turn '10,60,300', 10 or [10, 60] into a list of non-negative seconds."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        parts: list[Any] = [p.strip() for p in value.split(",")]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        parts = [value]
    else:
        parts = list(value)
    seconds = []
    for part in parts:
        try:
            number = float(part)
        except (TypeError, ValueError):
            raise ValueError(f"backoff must be seconds like '10' or '10,60,300', got {value!r}") from None
        if number < 0 or not math.isfinite(number):
            raise ValueError(f"backoff seconds must be a finite number >= 0, got {part!r}")
        seconds.append(number)
    return seconds


def new_id() -> str:
    """A random (version 4) UUID string, cheaper than str(uuid.uuid4())."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def encode_data(data: Any) -> str:
    try:
        return _encoder.encode(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"job data must be JSON-serialisable: {exc}") from None


@dataclass
class Job:
    """One unit of work. `attempts` and `lost` are kept by Redis, not in the JSON."""

    id: str
    job: str
    data: Any
    queue: str
    max_tries: int | None = None
    timeout: float | None = None
    backoff: list[float] = field(default_factory=list)
    pushed_at: float = 0.0
    errors: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    # Set while the job waits in Redis because storing its final failure failed (database
    # outage): the worker then stores this error instead of running the job again.
    failure: str | None = None
    lost: int = 0

    @classmethod
    def new(
        cls,
        job: str,
        data: Any,
        queue: str,
        *,
        tries: int | None = None,
        timeout: float | None = None,
        backoff: Any = None,
    ) -> "Job":
        check_job_name(job)
        check_queue_name(queue)
        if tries is not None and (not isinstance(tries, int) or isinstance(tries, bool) or tries < 0):
            raise ValueError(f"tries must be an integer >= 0 (0 = unlimited), got {tries!r}")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0
        ):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        return cls(
            id=new_id(),
            job=job,
            data=data,
            queue=queue,
            max_tries=tries,
            timeout=timeout,
            backoff=parse_backoff(backoff),
            pushed_at=time.time(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job": self.job,
            "data": self.data,
            "queue": self.queue,
            "max_tries": self.max_tries,
            "timeout": self.timeout,
            "backoff": self.backoff,
            "pushed_at": self.pushed_at,
            "errors": self.errors,
            "attempts": self.attempts,
            **({"failure": self.failure} if self.failure is not None else {}),
        }

    def encode(self) -> str:
        try:
            return _encoder.encode(self.to_dict())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"job data must be JSON-serialisable: {exc}") from None

    @classmethod
    def decode(cls, raw: bytes | str, *, attempts: int = 0, lost: int = 0) -> "Job":
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PayloadError(f"payload is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise PayloadError("payload is not a JSON object")
        missing = [k for k in ("id", "job", "queue") if k not in doc]
        if missing:
            raise PayloadError(f"payload lacks {', '.join(missing)}")
        try:
            check_job_name(doc["job"])
            check_queue_name(doc["queue"])
            max_tries = doc.get("max_tries")
            if max_tries is not None and (not isinstance(max_tries, int) or isinstance(max_tries, bool)):
                raise ValueError(f"max_tries must be an integer, got {max_tries!r}")
            timeout = doc.get("timeout")
            if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
                raise ValueError(f"timeout must be a positive number, got {timeout!r}")
            errors = doc.get("errors") or []
            if not isinstance(errors, list):
                raise ValueError("errors must be a list")
            failure = doc.get("failure")
            if failure is not None and not isinstance(failure, str):
                raise ValueError("failure must be a string")
            return cls(
                id=str(doc["id"]),
                job=doc["job"],
                data=doc.get("data"),
                queue=doc["queue"],
                max_tries=max_tries,
                timeout=timeout,
                backoff=parse_backoff(doc.get("backoff")),
                pushed_at=float(doc.get("pushed_at") or 0.0),
                errors=errors,
                attempts=attempts,
                lost=lost,
                failure=failure,
            )
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"payload is malformed: {exc}") from None
